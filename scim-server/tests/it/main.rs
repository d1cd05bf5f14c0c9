//! scim-server integration tests: the hub runs in-process on 127.0.0.1:0 against a fresh
//! database (SQLite, or PostgreSQL with SCIMHUB_TEST_DB=postgres) and is driven over real HTTP.

mod audit_api;
mod audit_chain;
mod auth;
mod batch;
mod cases;
mod crash;
mod fake_consumer;
mod filter_limits;
mod hardening;
mod ops;
mod outbound;
mod outbound_client;
mod outbound_hardening;
mod robustness;
mod ui;
mod ui_browser;

use std::net::TcpListener;
use std::sync::Arc;

use scim_server::api::AppState;
use scim_server::config::Config;
use scim_server::server;
use store::{Actor, Store};

/// An HTTP client for tests that talk to a hub they did not start in-process (a child
/// process, a reference server): reqwest is built without a default TLS crypto provider.
pub fn http_client() -> reqwest::Client {
    conformance::install_crypto_provider();
    reqwest::Client::new()
}

pub struct Hub {
    pub base_url: String,
    pub token: String,
    pub store: Store,
    handle: actix_web::dev::ServerHandle,
}

impl Hub {
    pub async fn start() -> Hub {
        Hub::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Hub {
        conformance::install_crypto_provider();
        let mut cfg = Config::defaults();
        cfg.database.url = store::test_db::fresh_database_url()
            .await
            .expect("test database");
        tweak(&mut cfg);
        let store = server::open_store(&cfg).await.expect("store");
        let cfg = Arc::new(cfg);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AppState::new(store.clone(), cfg.clone()).expect("state"));
        let srv = server::http_server(state, listener).expect("server");
        let handle = srv.handle();
        tokio::spawn(srv);
        let (_, token) = store
            .create_token("admin", &["admin".into()], None, &Actor::cli())
            .await
            .unwrap();
        Hub {
            base_url: format!("http://{addr}{}", cfg.server.base_path),
            token,
            store,
            handle,
        }
    }

    pub async fn token(&self, name: &str, scopes: &[&str], user: Option<&str>) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.store
            .create_token(name, &scopes, user, &Actor::cli())
            .await
            .unwrap()
            .1
    }

    pub fn client(&self) -> reqwest::Client {
        http_client()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// A command of the Python test tools' venv (`SCIMHUB_TEST_PYTHON` names its python), or of
/// the repository's `.venv`.
pub fn python_tool(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(py) = std::env::var("SCIMHUB_TEST_PYTHON")
        && let Some(d) = std::path::Path::new(&py).parent()
    {
        dirs.push(d.to_path_buf());
    }
    dirs.push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin"));
    dirs.push("/opt/scimtools/bin".into());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.exists())
}
