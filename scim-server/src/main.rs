//! `scimhub`: the identity provisioning hub's command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use scim_server::api::{AppState, auth};
use scim_server::config::Config;
use scim_server::server;
use store::filter::{Filter, resolve};
use store::{Actor, Load, Paging, Query, ResourceKind, Store};

mod consumer_cli;
mod ldap_cli;
mod ops_cli;

#[derive(Parser)]
#[command(
    name = "scimhub",
    version,
    about = "Identity provisioning hub: SCIM 2.0 server, LDAP directory, outbound SCIM"
)]
struct Cli {
    /// TOML configuration file (keys documented in config.default.toml).
    #[arg(long, global = true, env = "SCIMHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Database: sqlite://PATH?mode=rwc or postgres://USER@HOST:PORT/DB.
    #[arg(long, global = true, env = "SCIMHUB_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the SCIM API (and run migrations first).
    Serve(ServeArgs),
    /// Manage API bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage LDAP service accounts (simple bind as cn=NAME,ou=services,<base DN>).
    #[command(subcommand)]
    LdapAccount(ldap_cli::LdapAccountCommand),
    /// Manage outbound provisioning consumers.
    #[command(subcommand)]
    Consumer(consumer_cli::ConsumerCommand),
    /// Import users from CSV (with a column mapping), LDIF or JSON Lines.
    Import(ops_cli::ImportArgs),
    /// Export users (and groups) as CSV, LDIF or JSON Lines.
    Export(ops_cli::ExportArgs),
    /// Print the effective configuration.
    Config,
}

#[derive(Args)]
struct ServeArgs {
    /// Address for the SCIM HTTP API.
    #[arg(long, env = "SCIMHUB_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Address for the LDAP directory.
    #[arg(long, env = "SCIMHUB_LDAP_ADDR")]
    ldap_addr: Option<String>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret (shown once) on stdout.
    Create {
        #[arg(long)]
        name: String,
        /// Scopes: users:read users:write groups:read groups:write admin (admin implies
        /// all); self (GET /Me only) is implied by --user and may be the only scope.
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
        /// The User this token acts as for /Me (id or userName).
        #[arg(long)]
        user: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain and its end (every change-feed row has its audit row;
    /// exported heads are still there); exits 1 naming the first fault.
    Verify(ops_cli::AuditVerifyArgs),
    /// Print the newest audit row as SEQ:HASH, to keep outside the database for
    /// `audit verify --head`.
    Head,
    /// Switch the chain to the configured audit.chain_key_file (or to unkeyed hashes when
    /// none is set), after verifying it; run once after changing the key.
    Rekey,
    /// Write audit rows (filtered) as CSV or JSON Lines, oldest first.
    Export(Box<ops_cli::AuditExportArgs>),
    /// Delete audit rows past the retention period, keeping the chain verifiable.
    Prune(ops_cli::AuditPruneArgs),
}

fn load_config(cli: &Cli, http_addr: Option<&str>) -> anyhow::Result<Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut cfg = Config::load(cli.config.as_deref(), &env)?;
    if let Some(url) = &cli.database_url {
        cfg.database.url = url.clone();
    }
    if let Some(addr) = http_addr {
        cfg.server.http_addr = addr.to_string();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = server::open_store(&cfg)
        .await
        .context("opening the database")?;
    tracing::info!(backend = store.backend_name(), "database ready");
    store
        .check_audit_mode()
        .await
        .context("checking the audit chain against audit.chain_key_file")?;
    let cfg = Arc::new(cfg);
    let listener = std::net::TcpListener::bind(&cfg.server.http_addr)
        .with_context(|| format!("binding the SCIM API to {}", cfg.server.http_addr))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState::new(store.clone(), cfg.clone())?);
    let retention =
        scim_server::ops::retention::spawn(store.clone(), &cfg.audit, state.metrics.clone());
    // The head at start-up is logged before the listeners open; later heads by the task.
    let head = scim_server::ops::retention::log_head(&store, None).await;
    let head_log = scim_server::ops::retention::spawn_head_log(store.clone(), &cfg.audit, head);
    let ldap_metrics = state.metrics.clone();
    let http = server::http_server(state, listener)?;
    let handle = http.handle();
    tracing::info!(
        "SCIM API listening on http://{addr}{}",
        cfg.server.base_path
    );
    let http_task = tokio::spawn(http);
    let ldap = ldap_cli::start(&cfg, &store, ldap_metrics).await?;
    let worker = consumer_cli::start_worker(&cfg, &store);
    shutdown_signal().await;
    for task in [retention, head_log].into_iter().flatten() {
        task.abort();
    }
    if let Some((stop, task)) = worker {
        let _ = stop.send(true);
        let _ = task.await;
    }
    if let Some(l) = &ldap {
        l.stop();
    }
    tracing::info!("shutting down: finishing requests in flight");
    handle.stop(true).await;
    let _ = http_task.await;
    store.close().await;
    Ok(())
}

async fn find_user(store: &Store, key: &str) -> anyhow::Result<String> {
    if store.get(ResourceKind::User, key, Load::NONE).await.is_ok() {
        return Ok(key.to_string());
    }
    let f = Filter::eq(store::filter::AttrPath::simple("userName"), key);
    let rf = resolve(store.registry(), ResourceKind::User, &f).map_err(anyhow::Error::msg)?;
    let page = store
        .query(
            ResourceKind::User,
            &Query {
                filter: Some(rf),
                sort: None,
                paging: Paging::Index { start: 1, count: 1 },
                load: Load::NONE,
            },
        )
        .await?;
    match page.resources.first() {
        Some(u) => Ok(u.id.clone()),
        None => bail!("no User with id or userName {key:?}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let http_addr = match &cli.command {
        Command::Serve(a) => a.http_addr.clone(),
        _ => None,
    };
    let mut cfg = load_config(&cli, http_addr.as_deref())?;
    if let Command::Serve(ServeArgs {
        ldap_addr: Some(a), ..
    }) = &cli.command
    {
        cfg.ldap.addr = a.clone();
    }
    init_logging(&cfg);
    match cli.command {
        Command::Serve(_) => serve(cfg).await,
        Command::Config => {
            println!("{cfg:#?}");
            Ok(())
        }
        Command::Token(cmd) => {
            let store = server::open_store(&cfg)
                .await
                .context("opening the database")?;
            match cmd {
                TokenCommand::Create { name, scopes, user } => {
                    let scopes: Vec<String> = scopes
                        .iter()
                        .flat_map(|s| s.split([',', ' ']))
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    auth::validate_scopes(&scopes).map_err(anyhow::Error::msg)?;
                    if user.is_none() && scopes.iter().any(|s| s == "self") {
                        anyhow::bail!(
                            "the self scope reads the token's own User at /Me: give it --user"
                        );
                    }
                    let user_id = match &user {
                        Some(u) => Some(find_user(&store, u).await?),
                        None => None,
                    };
                    let (_, secret) = store
                        .create_token(&name, &scopes, user_id.as_deref(), &Actor::cli())
                        .await?;
                    println!("{secret}");
                }
                TokenCommand::List => {
                    for t in store.list_tokens().await? {
                        let state = if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        println!(
                            "{}\t{}\t{}\t{}\tcreated {}{}",
                            t.name,
                            state,
                            t.scopes.join(","),
                            t.user_id.as_deref().unwrap_or("-"),
                            t.created_at,
                            t.revoked_at
                                .map(|r| format!(", revoked {r}"))
                                .unwrap_or_default()
                        );
                    }
                }
                TokenCommand::Revoke { name } => {
                    if !store.revoke_token(&name, &Actor::cli()).await? {
                        bail!("no active token named {name:?}");
                    }
                    eprintln!("revoked {name}");
                }
            }
            store.close().await;
            Ok(())
        }
        Command::Consumer(cmd) => {
            let store = server::open_store(&cfg)
                .await
                .context("opening the database")?;
            let r = consumer_cli::run(&store, cmd).await;
            store.close().await;
            r
        }
        Command::LdapAccount(cmd) => {
            let store = server::open_store(&cfg)
                .await
                .context("opening the database")?;
            let r = ldap_cli::run(&cfg, &store, cmd).await;
            store.close().await;
            r
        }
        Command::Import(a) => ops_cli::import(&cfg, a).await,
        Command::Export(a) => ops_cli::export(&cfg, a).await,
        Command::Audit(AuditCommand::Export(a)) => ops_cli::audit_export(&cfg, *a).await,
        Command::Audit(AuditCommand::Prune(a)) => ops_cli::audit_prune(&cfg, a).await,
        Command::Audit(AuditCommand::Verify(a)) => ops_cli::audit_verify(&cfg, a).await,
        Command::Audit(AuditCommand::Head) => ops_cli::audit_head(&cfg).await,
        Command::Audit(AuditCommand::Rekey) => ops_cli::audit_rekey(&cfg).await,
    }
}
