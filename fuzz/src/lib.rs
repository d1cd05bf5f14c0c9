//! What the fuzz targets share: the schema registry, one SQLite store per process (seeded
//! with a few users and groups so that queries and LDAP searches have rows to look at), the
//! runtime that drives it, and sample documents to patch and project.

use std::sync::OnceLock;

use serde_json::{Value, json};
use store::model::{ResourceKind, normalize_resource};
use store::{Actor, SchemaRegistry, Store, StoreOptions};

/// The built-in schemas (core User and Group, enterprise and PACS extensions).
pub fn registry() -> &'static SchemaRegistry {
    static REG: OnceLock<SchemaRegistry> = OnceLock::new();
    REG.get_or_init(SchemaRegistry::builtin)
}

/// One current-thread runtime per process; the store's pool lives on it.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// The process's store: a SQLite file in the temporary directory, removed and created anew
/// when the process starts, holding [`sample_user`]-like users and two groups (one nested).
pub fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| block_on(open_store()))
}

async fn open_store() -> Store {
    let path = std::env::temp_dir().join(format!("scimhub-fuzz-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let opts = StoreOptions {
        // Nothing here needs durability; fsync on every seed write only slows start-up.
        sqlite_sync_full: false,
        max_connections: 2,
        ..StoreOptions::default()
    };
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = Store::connect(&url, SchemaRegistry::builtin(), opts)
        .await
        .expect("the fuzz store opens");
    let actor = Actor::cli();
    let create = |kind: ResourceKind, v: Value| {
        let store = store.clone();
        let actor = actor.clone();
        async move {
            let n = normalize_resource(store.registry(), kind, &v).expect("seed data is valid");
            store.create(kind, n, &actor).await.expect("seed write")
        }
    };
    let alice = create(ResourceKind::User, sample_user()).await;
    let mut bob = sample_user();
    bob["userName"] = json!("bob");
    bob["externalId"] = json!("E-2");
    bob["active"] = json!(false);
    bob["emails"] = json!([{"value": "bob@example.org", "type": "home"}]);
    bob["name"] = json!({"givenName": "Bob", "familyName": "Brown"});
    let bob = create(ResourceKind::User, bob).await;
    let staff = create(
        ResourceKind::Group,
        json!({
            "schemas": [ResourceKind::Group.core_schema()],
            "displayName": "Staff",
            "members": [{"value": alice.id, "type": "User"}, {"value": bob.id, "type": "User"}]
        }),
    )
    .await;
    create(
        ResourceKind::Group,
        json!({
            "schemas": [ResourceKind::Group.core_schema()],
            "displayName": "Everyone",
            "externalId": "all",
            "members": [{"value": staff.id, "type": "Group"}]
        }),
    )
    .await;
    store
}

/// A User with a value in most kinds of attribute: simple, complex, multi-valued, both
/// extensions, a dateTime, a boolean, a number.
pub fn sample_user() -> Value {
    json!({
        "schemas": [
            ResourceKind::User.core_schema(),
            store::model::ENTERPRISE_USER_SCHEMA,
            store::model::PACS_CARDHOLDER_SCHEMA
        ],
        "userName": "alice",
        "externalId": "E-1",
        "displayName": "Alice Adams",
        "nickName": "Al",
        "title": "Engineer",
        "userType": "Employee",
        "preferredLanguage": "en-GB",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "active": true,
        "name": {"givenName": "Alice", "familyName": "Adams", "formatted": "Alice Adams"},
        "emails": [
            {"value": "alice@example.com", "type": "work", "primary": true},
            {"value": "al@example.org", "type": "home"}
        ],
        "phoneNumbers": [{"value": "+44 20 7946 0000", "type": "work"}],
        "addresses": [{"streetAddress": "1 Main St", "locality": "London", "type": "work"}],
        "roles": [{"value": "dev"}],
        store::model::ENTERPRISE_USER_SCHEMA: {
            "employeeNumber": "701984",
            "department": "R&D",
            "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}
        }
    })
}

/// The sample user as the store holds it (normalized), for PATCH.
pub fn sample_user_doc() -> &'static serde_json::Map<String, Value> {
    static DOC: OnceLock<serde_json::Map<String, Value>> = OnceLock::new();
    DOC.get_or_init(|| {
        normalize_resource(registry(), ResourceKind::User, &sample_user())
            .expect("the sample user is valid")
            .doc
    })
}

/// A group document (members are rows, not part of the document).
pub fn sample_group_doc() -> &'static serde_json::Map<String, Value> {
    static DOC: OnceLock<serde_json::Map<String, Value>> = OnceLock::new();
    DOC.get_or_init(|| {
        normalize_resource(
            registry(),
            ResourceKind::Group,
            &json!({"schemas": [ResourceKind::Group.core_schema()], "displayName": "Staff"}),
        )
        .expect("the sample group is valid")
        .doc
    })
}

/// The sample resources as a consumer policy or the in-memory evaluator sees them
/// (rendered: id, meta, groups or members).
pub fn rendered(kind: ResourceKind) -> &'static Value {
    static USER: OnceLock<Value> = OnceLock::new();
    static GROUP: OnceLock<Value> = OnceLock::new();
    match kind {
        ResourceKind::User => USER.get_or_init(|| {
            let mut v = sample_user();
            v["id"] = json!("2819c223-7f76-453a-919d-413861904646");
            v["groups"] = json!([{"value": "e9e30dba-f08f-4109-8486-d5c6a331660a", "display": "Staff"}]);
            v["meta"] = json!({"resourceType": "User", "created": "2024-01-01T00:00:00Z", "lastModified": "2024-01-02T00:00:00Z", "version": "W/\"1\""});
            v
        }),
        ResourceKind::Group => GROUP.get_or_init(|| {
            json!({
                "schemas": [ResourceKind::Group.core_schema()],
                "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
                "displayName": "Staff",
                "members": [{"value": "2819c223-7f76-453a-919d-413861904646", "type": "User", "display": "alice"}],
                "meta": {"resourceType": "Group", "created": "2024-01-01T00:00:00Z", "lastModified": "2024-01-02T00:00:00Z", "version": "W/\"1\""}
            })
        }),
    }
}

/// Text of a fuzz input; targets that read text skip what is not UTF-8, since every entry
/// point reads its input as UTF-8 first (actix's JSON reader, the import readers).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Imports every item of an import source as `scimhub import` plans it, without the
/// store: a row of PATCH operations is resolved and applied to a new user and to the
/// sample user, a full representation is normalised. Reads at most `max_items` items.
pub fn plan_import(source: &mut dyn scim_server::batch::source::Source, max_items: usize) {
    use scim_server::batch::rows::{Change, Item, resolve_ops};
    use store::patch::apply_patch;
    let reg = registry();
    let empty = serde_json::Map::new();
    for _ in 0..max_items {
        let Some(item) = source.next_item() else {
            break;
        };
        let Item::Row(row) = item else { continue };
        let _ = row.label();
        match &row.change {
            Change::Full(v) => {
                let _ = normalize_resource(reg, ResourceKind::User, v);
            }
            Change::Ops(ops) => {
                for doc in [&empty, sample_user_doc()] {
                    let _ = apply_patch(reg, ResourceKind::User, doc, None, &resolve_ops(ops, doc));
                }
            }
        }
    }
    let _ = source.position();
    let _ = source.notes();
}

/// The most items one input is read for: every further row only repeats the work.
pub const MAX_IMPORT_ITEMS: usize = 64;
