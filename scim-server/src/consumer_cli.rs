//! Outbound provisioning in the `scimhub` binary: the delivery worker started by `serve`,
//! and `scimhub consumer …` to manage consumers from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use scim_server::config::Config;
use scim_server::outbound::admin::test_connection;
use scim_server::outbound::client::{ClientAuthMethod, ConsumerAuth, ConsumerEndpoint, Secret};
use scim_server::outbound::reconcile::reconcile;
use scim_server::outbound::worker::Worker;
use store::engine::ConsumerSpec;
use store::{Actor, ConsumerState, ResourceKind, Store};

#[derive(Subcommand)]
pub enum ConsumerCommand {
    /// Add a consumer (a SCIM service provider to provision).
    Add {
        #[arg(long)]
        name: String,
        /// Its SCIM base URL, e.g. https://pacs.example.org/scim/v2.
        #[arg(long)]
        url: String,
        /// A static bearer token for it.
        #[arg(long, env = "SCIMHUB_CONSUMER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// OAuth2 client-credentials token endpoint (with --client-id and --client-secret).
        #[arg(long)]
        oauth_token_url: Option<String>,
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long, env = "SCIMHUB_CONSUMER_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<String>,
        #[arg(long)]
        oauth_scope: Option<String>,
        /// Extra CA certificate(s) to trust, PEM.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Request timeout, e.g. 30s.
        #[arg(long, default_value = "30s")]
        timeout: String,
        /// Policy file (JSON or TOML): scope, attributes, deprovision, update_style,
        /// match_attribute, retry, concurrency, rate_limit_per_second, schedules.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// List consumers with their backlog and failures.
    List,
    /// Show one consumer (secrets redacted).
    Show { name: String },
    /// Replace a consumer's policy from a file.
    SetSpec { name: String, spec: PathBuf },
    /// Stop delivering to a consumer (changes keep queueing).
    Pause { name: String },
    /// Resume delivering to a consumer.
    Resume { name: String },
    /// Remove a consumer (its accounts on the consumer are left alone).
    Remove { name: String },
    /// Call the consumer's /ServiceProviderConfig.
    Test { name: String },
    /// Push resources to the consumer now.
    Push {
        name: String,
        #[arg(long = "user")]
        users: Vec<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Queue everything the consumer subscribes to.
    Resync { name: String },
    /// Put dead-lettered deliveries back in the queue.
    Replay {
        name: String,
        #[arg(long)]
        resource: Option<String>,
    },
    /// Compare the consumer's accounts with the hub's; report drift and orphans.
    Reconcile {
        name: String,
        /// Re-send drifted and missing accounts.
        #[arg(long)]
        fix: bool,
        /// Delete accounts on the consumer that no hub identity accounts for.
        #[arg(long)]
        delete_orphans: bool,
    },
}

fn read_spec(path: &PathBuf) -> anyhow::Result<ConsumerSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: ConsumerSpec = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).with_context(|| format!("{}", path.display()))?
    } else {
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?
    };
    Ok(spec)
}

pub async fn run(store: &Store, cmd: ConsumerCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    match cmd {
        ConsumerCommand::Add {
            name,
            url,
            token,
            oauth_token_url,
            client_id,
            client_secret,
            oauth_scope,
            ca_file,
            timeout,
            spec,
        } => {
            let auth = match (token, oauth_token_url) {
                (Some(t), None) => ConsumerAuth::Bearer {
                    token: Secret::new(t),
                },
                (None, Some(token_url)) => ConsumerAuth::OAuth2ClientCredentials {
                    token_url,
                    client_id: client_id.context("--client-id is needed with --oauth-token-url")?,
                    client_secret: Secret::new(
                        client_secret
                            .context("--client-secret is needed with --oauth-token-url")?,
                    ),
                    scope: oauth_scope,
                    audience: None,
                    client_auth: ClientAuthMethod::default(),
                },
                (None, None) => ConsumerAuth::None,
                (Some(_), Some(_)) => bail!("give --token or --oauth-token-url, not both"),
            };
            let mut endpoint = ConsumerEndpoint::new(url, auth);
            endpoint.timeout =
                scim_server::outbound::duration::parse(&timeout).map_err(anyhow::Error::msg)?;
            if let Some(ca) = ca_file {
                endpoint.ca_pem = Some(
                    std::fs::read_to_string(&ca)
                        .with_context(|| format!("reading {}", ca.display()))?,
                );
            }
            endpoint.validate()?;
            let spec = match spec {
                Some(p) => read_spec(&p)?,
                None => ConsumerSpec::default(),
            };
            let c = store
                .create_consumer(&name, spec, serde_json::to_value(&endpoint)?, &actor)
                .await?;
            eprintln!("added consumer {} ({})", c.name, c.id);
        }
        ConsumerCommand::List => {
            for c in store.consumers().await? {
                let s = store.consumer_stats(&c).await?;
                println!(
                    "{}\t{}\tbacklog {}\tin flight {}\tdead {}\tlinked {}\tfailures/h {}/{}\tlast success {}",
                    c.name,
                    c.state.as_str(),
                    s.backlog,
                    s.in_flight,
                    s.dead,
                    s.linked,
                    s.failures_last_hour,
                    s.attempts_last_hour,
                    s.last_success_at.as_deref().unwrap_or("-")
                );
            }
        }
        ConsumerCommand::Show { name } => {
            let c = store.consumer(&name).await?;
            let endpoint: Option<ConsumerEndpoint> =
                serde_json::from_value(c.endpoint.clone()).ok();
            let out = serde_json::json!({
                "id": c.id, "name": c.name, "state": c.state, "pausedReason": c.paused_reason,
                "endpoint": endpoint.map(|e| e.redacted()), "spec": c.spec, "stats": store.consumer_stats(&c).await?,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ConsumerCommand::SetSpec { name, spec } => {
            store
                .update_consumer(&name, Some(read_spec(&spec)?), None, &actor)
                .await?;
            eprintln!("updated {name}; a full resync is queued");
        }
        ConsumerCommand::Pause { name } => {
            store
                .set_consumer_state(
                    &name,
                    ConsumerState::Paused,
                    Some("paused from the command line"),
                    &actor,
                )
                .await?;
        }
        ConsumerCommand::Resume { name } => {
            store
                .set_consumer_state(&name, ConsumerState::Active, None, &actor)
                .await?;
        }
        ConsumerCommand::Remove { name } => store.remove_consumer(&name, &actor).await?,
        ConsumerCommand::Test { name } => {
            let r = test_connection(&store.consumer(&name).await?).await;
            println!("{}", serde_json::to_string_pretty(&r)?);
            if r["ok"] != true {
                bail!("the consumer did not answer as a SCIM service provider");
            }
        }
        ConsumerCommand::Push {
            name,
            users,
            groups,
        } => {
            let list: Vec<(ResourceKind, String)> = users
                .into_iter()
                .map(|u| (ResourceKind::User, u))
                .chain(groups.into_iter().map(|g| (ResourceKind::Group, g)))
                .collect();
            if list.is_empty() {
                bail!("name at least one --user or --group id");
            }
            let n = store.enqueue(&name, Some(&list), "forced", &actor).await?;
            eprintln!("queued {n}; forced: each account is read at the consumer and repaired");
        }
        ConsumerCommand::Resync { name } => {
            let n = store.enqueue(&name, None, "resync", &actor).await?;
            eprintln!("queued {n}; forced: each account is read at the consumer and repaired");
        }
        ConsumerCommand::Replay { name, resource } => {
            let n = store
                .replay_dead(&name, resource.as_deref(), &actor)
                .await?;
            eprintln!("replayed {n}");
        }
        ConsumerCommand::Reconcile {
            name,
            fix,
            delete_orphans,
        } => {
            let c = store.consumer(&name).await?;
            let report = reconcile(store, &c, fix, delete_orphans, &actor).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

/// Starts the delivery worker when configured; returns its stop switch and task.
pub fn start_worker(
    cfg: &Config,
    store: &Store,
) -> Option<(
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
)> {
    if !cfg.outbound.enabled {
        return None;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let worker = Arc::new(Worker::new(store.clone(), cfg.outbound.worker()));
    let task = tokio::spawn(worker.run(rx));
    tracing::info!("outbound delivery worker started");
    Some((tx, task))
}
