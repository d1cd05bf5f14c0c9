//! LDAP directory tests with real clients (OpenLDAP's ldapsearch/ldapwhoami/ldapcompare/
//! ldapmodify and Python ldap3) against an in-process listener on 127.0.0.1:0, on a fresh
//! database each: SQLite by default, PostgreSQL with `SCIMHUB_TEST_DB=postgres`.

mod clients;
mod hardening;
mod limits;
mod protocol;
mod python;

use std::path::PathBuf;
use std::process::Command;

use ldap_frontend::{LdapConfig, LdapServer};
use serde_json::{Value, json};
use store::model::{StoredResource, normalize_resource};
use store::{Actor, ResourceKind, SchemaRegistry, Store, StoreOptions};

pub const BASE: &str = "dc=example,dc=org";

pub struct Hub {
    pub store: Store,
    pub server: LdapServer,
    /// A service account that may read the directory.
    pub reader_dn: String,
    pub reader_pw: String,
}

pub async fn store() -> Store {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let url = store::test_db::fresh_database_url()
        .await
        .expect("test database");
    let opts = StoreOptions {
        sqlite_sync_full: false,
        ..StoreOptions::default()
    };
    Store::connect(&url, SchemaRegistry::builtin(), opts)
        .await
        .expect("connect")
}

pub fn test_config() -> LdapConfig {
    LdapConfig {
        addr: "127.0.0.1:0".into(),
        ..LdapConfig::default()
    }
}

impl Hub {
    pub async fn start() -> Hub {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(cfg: LdapConfig) -> Hub {
        let store = store().await;
        let (_, pw) = store
            .create_ldap_account("reader", "white pages", &Actor::cli())
            .await
            .expect("service account");
        let server = LdapServer::start(store.clone(), cfg)
            .await
            .expect("LDAP listener");
        Hub {
            store,
            server,
            reader_dn: format!("cn=reader,ou=services,{BASE}"),
            reader_pw: pw,
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://{}", self.server.addr)
    }

    /// A SCIM-style create: validated as the SCIM API validates, written through the store.
    pub async fn create(&self, kind: ResourceKind, v: Value) -> StoredResource {
        let n = normalize_resource(self.store.registry(), kind, &v).expect("valid input");
        self.store
            .create(kind, n, &Actor::new("token:test", None, "scim"))
            .await
            .expect("create")
    }

    pub async fn user(&self, name: &str, extra: Value) -> StoredResource {
        let mut v = json!({"userName": name});
        if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
            o.extend(e);
        }
        self.create(ResourceKind::User, v).await
    }

    pub async fn group(&self, name: &str, members: &[&str]) -> StoredResource {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        self.create(
            ResourceKind::Group,
            json!({"displayName": name, "members": members}),
        )
        .await
    }

    /// `ldapsearch` as the reader account, with `args` after the connection options.
    pub async fn search(&self, args: &[&str]) -> Output {
        let mut a: Vec<String> = vec![
            "-x".into(),
            "-LLL".into(),
            "-o".into(),
            "ldif-wrap=no".into(),
            "-H".into(),
            self.url(),
            "-D".into(),
            self.reader_dn.clone(),
            "-w".into(),
            self.reader_pw.clone(),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        run("ldapsearch", a, &[]).await
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The DNs of the entries in LDIF output.
    pub fn dns(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("dn: "))
            .map(str::to_string)
            .collect()
    }

    /// Values of `attr` in LDIF output (all entries).
    pub fn values(&self, attr: &str) -> Vec<String> {
        let prefix = format!("{attr}: ");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(str::to_string)
            .collect()
    }
}

/// Runs a client program off the async runtime (the server runs on it).
pub async fn run(program: &str, args: Vec<String>, env: &[(&str, String)]) -> Output {
    let program = program.to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(&program);
        cmd.args(&args);
        if env.is_empty() {
            // No ldap.conf / ldaprc defaults from the machine.
            cmd.env("LDAPNOINIT", "1");
        } else {
            // LDAPNOINIT would also ignore these LDAPTLS_* settings.
            cmd.envs(env).env("LDAPCONF", "/dev/null");
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); install ldap-utils (apt-get install -y ldap-utils)")
        });
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("client task")
}

/// A self-signed certificate for 127.0.0.1 made with the openssl CLI: (dir, cert, key).
pub fn self_signed() -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("scimhub-ldap-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    (dir, cert, key)
}
