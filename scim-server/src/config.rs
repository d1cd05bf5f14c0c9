//! Layered configuration: built-in defaults (`config.default.toml`, shipped and documented),
//! then a TOML file, then `SCIMHUB_*` environment variables, then command-line flags;
//! validated once at start-up.

use std::path::Path;

use serde::Deserialize;

use crate::error::ServerError;

pub const DEFAULT_CONFIG: &str = include_str!("../config.default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub scim: ScimConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub outbound: OutboundConfig,
    /// The LDAP directory (`[ldap]`, defined by the ldap-frontend crate).
    pub ldap: ldap_frontend::LdapConfig,
    pub ops: OpsConfig,
    pub audit: AuditConfig,
    pub admin: AdminConfig,
}

/// `[admin]`: the admin web UI.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// How long a login lasts.
    pub session_minutes: u64,
}

/// `[ops]`: health, readiness and metrics endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    pub metrics_requires_auth: bool,
}

/// `[audit]`: retention of the audit trail, the key of its hash chain, and how often the
/// chain's head is logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// 0 keeps every row.
    pub retention_days: u64,
    pub prune_interval_seconds: u64,
    /// A file of 32 to 4096 secret bytes keying every new row's hash (HMAC-SHA256); empty:
    /// unkeyed SHA-256.
    pub chain_key_file: String,
    /// Former keys, to verify the rows hashed with them before `scimhub audit rekey`.
    pub retired_chain_key_files: Vec<String>,
    /// How often the hub logs the chain's head (`SEQ:HASH`) when it changed; 0: never.
    pub head_log_interval_seconds: u64,
}

impl AuditConfig {
    /// Reads the chain keys the configuration names.
    pub fn chain_keys(&self) -> Result<store::AuditKeys, ServerError> {
        let read = |key: &str, path: &str| -> Result<store::ChainKey, ServerError> {
            let bytes = std::fs::read(path).map_err(|e| {
                ServerError::Config(format!("audit.{key}: cannot read {path}: {e}"))
            })?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(path)
                    && m.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        file = path,
                        "the audit chain key file is readable by other users than its owner (chmod 600 it)"
                    );
                }
            }
            store::ChainKey::new(&bytes).map_err(|e| {
                let e = match e {
                    store::StoreError::Config(m) => m,
                    other => other.to_string(),
                };
                ServerError::Config(format!("audit.{key} {path}: {e}"))
            })
        };
        Ok(store::AuditKeys {
            current: (!self.chain_key_file.is_empty())
                .then(|| read("chain_key_file", &self.chain_key_file))
                .transpose()?,
            retired: self
                .retired_chain_key_files
                .iter()
                .map(|p| read("retired_chain_key_files", p))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    pub enabled: bool,
    pub poll_interval_ms: u64,
    pub lease_seconds: u64,
    pub batch: u64,
}

impl OutboundConfig {
    pub fn worker(&self) -> crate::outbound::worker::WorkerConfig {
        crate::outbound::worker::WorkerConfig {
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms.max(10)),
            lease: std::time::Duration::from_secs(self.lease_seconds.max(1)),
            batch: self.batch.max(1),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub http_addr: String,
    pub base_path: String,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub workers: usize,
    /// HTTP connections open at once, split evenly over the workers.
    pub max_connections: usize,
    /// A request's head (request line and headers) must arrive within this, counted from
    /// the connection (or from the previous response on a kept-alive one).
    pub client_request_timeout_seconds: u64,
    /// A request's body must arrive within this of its head.
    pub client_body_timeout_seconds: u64,
    /// An idle kept-alive connection is closed after this.
    pub keep_alive_seconds: u64,
}

impl ServerConfig {
    /// The HTTP worker threads actix runs (`workers`, or one per CPU as actix counts).
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        }
    }

    /// actix limits connections per worker: `max_connections` split evenly, at least one.
    pub fn connections_per_worker(&self) -> usize {
        (self.max_connections / self.effective_workers()).max(1)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub sqlite_sync_full: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimConfig {
    pub default_page_size: u64,
    pub max_page_size: u64,
    pub max_start_index: u64,
    pub max_filter_length: usize,
    pub max_filter_depth: usize,
    pub max_filter_terms: usize,
    pub bulk_max_operations: usize,
    pub bulk_max_payload_bytes: usize,
    pub max_group_depth: usize,
    pub unknown_members: String,
    pub builtin_extensions: Vec<String>,
    pub extension_schemas: Vec<String>,
}

impl ScimConfig {
    /// The limits every SCIM filter and PATCH path filter is held to.
    pub fn filter_limits(&self) -> store::filter::FilterLimits {
        store::filter::FilterLimits {
            max_length: self.max_filter_length,
            max_depth: self.max_filter_depth,
            max_terms: self.max_filter_terms,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub discovery_requires_auth: bool,
    pub jwt: JwtConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub hs256_secret: String,
    pub rs256_public_key_file: String,
    pub es256_public_key_file: String,
    pub jwks_file: String,
    pub scope_claim: String,
    pub subject_claim: String,
    pub user_claim: String,
    pub leeway_seconds: u64,
    /// Accept tokens without an `exp` claim (off: such tokens are refused).
    pub allow_missing_exp: bool,
}

impl JwtConfig {
    pub fn enabled(&self) -> bool {
        !(self.hs256_secret.is_empty()
            && self.rs256_public_key_file.is_empty()
            && self.es256_public_key_file.is_empty()
            && self.jwks_file.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

/// Merges `over` into `base`, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Parses an environment value as the type of the default it replaces.
fn env_value(default: Option<&toml::Value>, raw: &str) -> toml::Value {
    match default {
        Some(toml::Value::Integer(_)) => raw
            .parse()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| raw.into()),
        Some(toml::Value::Boolean(_)) => raw
            .parse()
            .map(toml::Value::Boolean)
            .unwrap_or_else(|_| raw.into()),
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    }
}

impl Config {
    /// Loads the layered configuration. `env` is the process environment (passed in so that
    /// tests can supply their own).
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ServerError> {
        let mut table: toml::Table = DEFAULT_CONFIG.parse().expect("built-in defaults parse");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ServerError::Config(format!("cannot read {}: {e}", path.display())))?;
            let over: toml::Table = text
                .parse()
                .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
            merge(&mut table, over);
        }
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("SCIMHUB_") else {
                continue;
            };
            // Shorthands documented with the flags.
            let path: Vec<String> = match rest {
                "DATABASE_URL" => vec!["database".into(), "url".into()],
                "HTTP_ADDR" => vec!["server".into(), "http_addr".into()],
                "LDAP_ADDR" => vec!["ldap".into(), "addr".into()],
                "CONFIG" | "TEST_DB" | "TEST_PG_URL" => continue,
                _ => rest.split("__").map(|s| s.to_ascii_lowercase()).collect(),
            };
            if path.len() < 2 {
                continue;
            }
            let mut node = &mut table;
            for seg in &path[..path.len() - 1] {
                node = match node
                    .entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                {
                    toml::Value::Table(t) => t,
                    _ => return Err(ServerError::Config(format!("{k}: {seg} is not a section"))),
                };
            }
            let last = path.last().expect("len >= 2");
            let value = env_value(node.get(last), v);
            node.insert(last.clone(), value);
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ServerError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |m: String| Err(ServerError::Config(m));
        if !self.server.base_path.starts_with('/')
            || self.server.base_path.ends_with('/') && self.server.base_path.len() > 1
        {
            return bad(format!(
                "server.base_path {:?} must start with '/' and not end with one",
                self.server.base_path
            ));
        }
        if self.scim.max_page_size == 0
            || self.scim.default_page_size == 0
            || self.scim.default_page_size > self.scim.max_page_size
        {
            return bad("scim.default_page_size must be between 1 and scim.max_page_size".into());
        }
        self.scim
            .filter_limits()
            .check("scim.max_filter")
            .map_err(ServerError::Config)?;
        if self.scim.max_group_depth == 0 {
            return bad("scim.max_group_depth must be at least 1".into());
        }
        if !matches!(self.scim.unknown_members.as_str(), "ignore" | "reject") {
            return bad(format!(
                "scim.unknown_members must be \"ignore\" or \"reject\", not {:?}",
                self.scim.unknown_members
            ));
        }
        for e in &self.scim.builtin_extensions {
            if !matches!(e.as_str(), "enterprise" | "pacs") {
                return bad(format!(
                    "scim.builtin_extensions: unknown extension {e:?}; the built-in ones are \"enterprise\" and \"pacs\""
                ));
            }
        }
        if self.scim.bulk_max_operations == 0 {
            return bad("scim.bulk_max_operations must be at least 1".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad(format!(
                "log.format must be \"text\" or \"json\", not {:?}",
                self.log.format
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes must be at least 1024".into());
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections must be at least 1".into());
        }
        for (key, v) in [
            (
                "client_request_timeout_seconds",
                self.server.client_request_timeout_seconds,
            ),
            (
                "client_body_timeout_seconds",
                self.server.client_body_timeout_seconds,
            ),
            ("keep_alive_seconds", self.server.keep_alive_seconds),
        ] {
            if !(1..=3600).contains(&v) {
                return bad(format!("server.{key} must be from 1 to 3600 seconds"));
            }
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return bad(format!(
                "database.url must start with sqlite:, postgres:// or postgresql://, not {url:?}"
            ));
        }
        if self.audit.prune_interval_seconds == 0 {
            return bad("audit.prune_interval_seconds must be at least 1".into());
        }
        if self.audit.head_log_interval_seconds > 7 * 86_400 {
            return bad(
                "audit.head_log_interval_seconds must be at most 604800 (a week); 0 logs the head at start only".into(),
            );
        }
        if self.audit.retention_days > 100 * 365 {
            return bad("audit.retention_days must be at most 36500 (0 keeps every row)".into());
        }
        if !(1..=7 * 24 * 60).contains(&self.admin.session_minutes) {
            return bad("admin.session_minutes must be from 1 to 10080 (a week)".into());
        }
        self.ldap
            .validate()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        Ok(())
    }

    /// The default configuration (for tests and `scimhub config`).
    pub fn defaults() -> Config {
        Config::load(None, &[]).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("scimhub-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[scim]\nmax_page_size = 50\ndefault_page_size = 10\n[auth.jwt]\nissuer = \"i\"\n",
        )
        .unwrap();
        let env = vec![
            (
                "SCIMHUB_SCIM__DEFAULT_PAGE_SIZE".to_string(),
                "20".to_string(),
            ),
            (
                "SCIMHUB_DATABASE_URL".to_string(),
                "postgres://x@h/db".to_string(),
            ),
            (
                "SCIMHUB_AUTH__DISCOVERY_REQUIRES_AUTH".to_string(),
                "false".to_string(),
            ),
        ];
        let c = Config::load(Some(&file), &env).unwrap();
        assert_eq!(c.scim.max_page_size, 50);
        assert_eq!(c.scim.default_page_size, 20);
        assert_eq!(c.database.url, "postgres://x@h/db");
        assert!(!c.auth.discovery_requires_auth);
        assert_eq!(c.auth.jwt.issuer, "i");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = std::env::temp_dir().join(format!("scimhub-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[scim]\nmax_pagesize = 50\n").unwrap();
        let e = Config::load(Some(&file), &[]).unwrap_err().to_string();
        assert!(e.contains("max_pagesize"), "{e}");
        let e = Config::load(None, &[("SCIMHUB_LOG__FORMAT".into(), "xml".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.format"), "{e}");
        let e = Config::load(
            None,
            &[(
                "SCIMHUB_AUDIT__HEAD_LOG_INTERVAL_SECONDS".into(),
                "99999999999".into(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("audit.head_log_interval_seconds"), "{e}");
    }
}
