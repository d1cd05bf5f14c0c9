//! The LDAP directory in the `scimhub` binary: starting it with `serve`, and managing its
//! service accounts with `scimhub ldap-account …`.

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use ldap_frontend::LdapServer;
use ldap_frontend::directory::Observer;
use ldap_frontend::dit::{Container, Dit};
use scim_server::config::Config;
use scim_server::ops::Metrics;
use store::{Actor, Store};

#[derive(Subcommand)]
pub enum LdapAccountCommand {
    /// Create a service account and print its password (shown once) on stdout; it binds as
    /// cn=NAME,ou=services,<base DN>.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List service accounts (never their passwords).
    List {
        /// Include revoked accounts.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a service account by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

pub async fn run(cfg: &Config, store: &Store, cmd: LdapAccountCommand) -> anyhow::Result<()> {
    let dit = Dit::new(&cfg.ldap.base_dn)?;
    match cmd {
        LdapAccountCommand::Create { name, description } => {
            let (account, password) = store
                .create_ldap_account(&name, &description, &Actor::cli())
                .await?;
            eprintln!(
                "bind DN: {}",
                dit.leaf_dn(Container::Services, &account.name)
            );
            println!("{password}");
        }
        LdapAccountCommand::List { all } => {
            for a in store.list_ldap_accounts(all).await? {
                println!(
                    "{}\t{}\t{}\tcreated {}{}",
                    a.name,
                    if a.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    dit.leaf_dn(Container::Services, &a.name),
                    a.created_at,
                    a.revoked_at
                        .map(|r| format!(", revoked {r}"))
                        .unwrap_or_default()
                );
            }
        }
        LdapAccountCommand::Revoke { name } => {
            if !store.revoke_ldap_account(&name, &Actor::cli()).await? {
                bail!("no active LDAP account named {name:?}");
            }
            eprintln!("revoked {name}");
        }
    }
    Ok(())
}

/// Starts the LDAP listeners when `[ldap] enabled`, counting operations in `metrics`.
pub async fn start(
    cfg: &Config,
    store: &Store,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Option<LdapServer>> {
    if !cfg.ldap.enabled {
        return Ok(None);
    }
    let observer: Observer = Arc::new(move |op, code, elapsed| {
        metrics.observe_ldap(op, code, elapsed);
    });
    let server = LdapServer::start_observed(store.clone(), cfg.ldap.clone(), Some(observer))
        .await
        .context("starting the LDAP directory")?;
    tracing::info!("LDAP directory listening on ldap://{}", server.addr);
    if let Some(a) = server.ldaps_addr {
        tracing::info!("LDAPS listening on ldaps://{a}");
    }
    Ok(Some(server))
}
