//! Store integration tests on a real database: SQLite by default, PostgreSQL with
//! `SCIMHUB_TEST_DB=postgres`.

mod agreement;
mod audit_chain;
mod filters;
mod large_filters;
mod retention;
mod writes;

use serde_json::{Value, json};
use store::model::normalize_resource;
use store::{Actor, Load, Paging, Query, ResourceKind, SchemaRegistry, Store, StoreOptions};

pub async fn store() -> Store {
    let url = store::test_db::fresh_database_url()
        .await
        .expect("test database");
    Store::connect(&url, SchemaRegistry::builtin(), StoreOptions::default())
        .await
        .expect("connect")
}

pub fn actor() -> Actor {
    Actor::new("token:test", Some("127.0.0.1".into()), "scim")
}

pub async fn create(s: &Store, kind: ResourceKind, v: Value) -> store::model::StoredResource {
    let n = normalize_resource(s.registry(), kind, &v).expect("valid input");
    s.create(kind, n, &actor()).await.expect("create")
}

pub async fn user(s: &Store, name: &str) -> store::model::StoredResource {
    create(s, ResourceKind::User, json!({"userName": name})).await
}

pub async fn group(s: &Store, name: &str, members: &[&str]) -> store::model::StoredResource {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    create(
        s,
        ResourceKind::Group,
        json!({"displayName": name, "members": members}),
    )
    .await
}

/// userNames matching a SCIM filter, in creation order.
pub async fn names(s: &Store, kind: ResourceKind, filter: &str) -> Result<Vec<String>, String> {
    let f = store::filter::Filter::parse(filter)?;
    let rf = store::filter::resolve(s.registry(), kind, &f)?;
    let page = s
        .query(
            kind,
            &Query {
                filter: Some(rf),
                sort: None,
                paging: Paging::Index {
                    start: 1,
                    count: 1000,
                },
                load: Load::NONE,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let attr = if kind == ResourceKind::User {
        "userName"
    } else {
        "displayName"
    };
    Ok(page
        .resources
        .iter()
        .map(|r| r.doc[attr].as_str().unwrap().to_string())
        .collect())
}
