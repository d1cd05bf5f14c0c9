//! Batch import and export: a 100k-row CSV with bad rows in it (reported by line, the good
//! ones imported, nothing half-written), updates and dry runs, LDIF and JSON Lines, the
//! `scimhub import` / `scimhub export` commands.

use std::collections::BTreeMap;
use std::io::Cursor;

use scim_server::batch::{
    self, ImportOptions, InputFormat, MappingFile, Progress, Report,
    export::{ExportOptions, Format, Kinds},
};
use serde_json::{Value, json};
use store::model::{ENTERPRISE_USER_SCHEMA, PACS_CARDHOLDER_SCHEMA, StoredResource};
use store::{AuditFilter, Load, ResourceKind, Store};

use super::Hub;

const PACS: &str = PACS_CARDHOLDER_SCHEMA;

fn mapping_json() -> String {
    json!({
        "columns": {
            "employee_id": "externalId",
            "login": "userName",
            "first": "name.givenName",
            "last": "name.familyName",
            "mail": "emails[type eq \"work\"].value",
            "badge": format!("{PACS}:cardNumber"),
            "level": format!("{PACS}:issueLevel"),
            "status": format!("{PACS}:pivStatus"),
            "sites": format!("{PACS}:facilities"),
            "expires": format!("{PACS}:cardExpiry"),
            "active": "active",
            "dept": format!("{ENTERPRISE_USER_SCHEMA}:department"),
        },
        "multi_value_separator": ";"
    })
    .to_string()
}

const HEADER: &str =
    "employee_id,login,first,last,mail,badge,level,status,sites,expires,active,dept";

fn good_row(i: usize) -> String {
    format!(
        "E{i},user{i},First{i},\"Last, {i}\",user{i}@example.com,B{i},{},active,HQ;Annex,2030-01-31T00:00:00Z,true,Dept{}",
        i % 5,
        i % 10
    )
}

/// A bad row of kind `k` at index `i`, and a word its reason must contain.
fn bad_row(i: usize, k: usize) -> (String, &'static str) {
    let g = good_row(i);
    match k {
        0 => (
            g.replacen(&format!("B{i},{}", i % 5), &format!("B{i},high"), 1),
            "integer",
        ),
        1 => (g.replacen(",active,", ",bogus,", 1), "canonical"),
        2 => (
            g.replacen("2030-01-31T00:00:00Z", "next year", 1),
            "dateTime",
        ),
        3 => (
            g.replacen(&format!(",user{i},"), ",,", 1),
            "userName is empty",
        ),
        4 => (format!("E{i},user{i},First{i}"), "3 fields"),
        5 => (g.replacen(",true,", ",maybe,", 1), "true or false"),
        // A badge number an earlier row holds: refused by the unique index, after the
        // resource row was inserted in the same transaction.
        6 => (
            g.replacen(&format!(",B{i},"), &format!(",B{},", i - 5000), 1),
            "already",
        ),
        // A login an earlier row (another employee) holds.
        _ => (
            g.replacen(&format!(",user{i},"), &format!(",user{},", i - 5000), 1),
            "already taken",
        ),
    }
}

async fn users_with_external_id(store: &Store, x: &str) -> Vec<StoredResource> {
    store
        .find_by_external_id(ResourceKind::User, x, 10)
        .await
        .unwrap()
}

async fn import_text(
    store: &Store,
    text: &str,
    format: InputFormat,
    mapping: Option<&MappingFile>,
    dry_run: bool,
    jobs: usize,
) -> Report {
    let src = batch::source(
        Cursor::new(text.as_bytes().to_vec()),
        format,
        store.registry(),
        mapping,
        &ldap_frontend::LdapConfig::default(),
    )
    .unwrap();
    let opts = ImportOptions {
        dry_run,
        jobs,
        ..Default::default()
    };
    batch::import(store, src, opts, &mut Progress::quiet()).await
}

fn jobs() -> usize {
    if store::test_db::backend() == "postgres" {
        4
    } else {
        1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_100k_rows_with_errors() {
    let hub = Hub::start_with(|c| c.database.sqlite_sync_full = false).await;
    let n = 100_000;
    let mut text = String::with_capacity(n * 130);
    text.push_str(HEADER);
    text.push('\n');
    let mut expected: BTreeMap<u64, (String, &str)> = BTreeMap::new();
    for i in 0..n {
        let line = i as u64 + 2;
        if i % 997 == 13 {
            let k = (i / 997) % 8;
            let (row, word) = bad_row(i, k);
            text.push_str(&row);
            expected.insert(line, (format!("E{i}"), word));
        } else {
            text.push_str(&good_row(i));
        }
        text.push('\n');
    }
    let mapping = MappingFile::parse(&mapping_json(), false).unwrap();
    let report = import_text(
        &hub.store,
        &text,
        InputFormat::Csv,
        Some(&mapping),
        false,
        jobs(),
    )
    .await;
    let s = &report.summary;
    let bad = expected.len() as u64;
    eprintln!("100k import: {}", report.summary_line());
    assert_eq!(s.failed, bad, "{}", report.error_lines());
    assert_eq!(s.created, n as u64 - bad);
    assert_eq!((s.updated, s.unchanged, s.skipped), (0, 0, 0));

    // Every bad row is reported, by line, with its reason.
    let got: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(got, expected.keys().copied().collect::<Vec<_>>());
    for e in &report.errors {
        let (_, word) = &expected[&e.line];
        assert!(
            e.reason.contains(word),
            "line {}: {} (want {word})",
            e.line,
            e.reason
        );
    }

    // Good rows are in, with their values; bad rows left nothing behind.
    let count = hub.store.count(ResourceKind::User, None).await.unwrap();
    assert_eq!(count, s.created);
    for (x, _) in expected.values() {
        assert!(
            users_with_external_id(&hub.store, x).await.is_empty(),
            "{x}"
        );
    }
    let u = &users_with_external_id(&hub.store, "E99999").await[0];
    assert_eq!(u.doc["userName"], "user99999");
    assert_eq!(
        u.doc["name"],
        json!({"givenName": "First99999", "familyName": "Last, 99999"})
    );
    assert_eq!(
        u.doc["emails"],
        json!([{"type": "work", "value": "user99999@example.com"}])
    );
    assert_eq!(u.doc[PACS]["facilities"], json!(["HQ", "Annex"]));
    assert_eq!(u.doc[PACS]["issueLevel"], 4);
    assert_eq!(u.doc[PACS]["cardExpiry"], "2030-01-31T00:00:00.000000Z");
    assert_eq!(u.doc[ENTERPRISE_USER_SCHEMA]["department"], "Dept9");

    // One change-feed row and one audit row per created user, none for failed rows; the
    // chain verifies.
    let mut changes = 0;
    let mut after = 0;
    loop {
        let page = hub.store.changes_since(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        changes += page.len() as u64;
    }
    assert_eq!(changes, s.created);
    let mut audited = 0;
    let mut before = None;
    loop {
        let rows = hub
            .store
            .audit_query(
                &AuditFilter {
                    action: Some("user.create".into()),
                    ..Default::default()
                },
                before,
                1000,
            )
            .await
            .unwrap();
        let Some(last) = rows.last() else { break };
        before = Some(last.seq);
        audited += rows.len() as u64;
        assert!(
            rows.iter()
                .all(|r| r.entry.actor == "cli:import" && r.entry.layer == "cli")
        );
    }
    assert_eq!(audited, s.created);
    assert_eq!(
        hub.store.verify_audit_chain().await.unwrap().first_broken,
        None
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_unchanged_rows_and_dry_runs() {
    let hub = Hub::start().await;
    let mapping = MappingFile::parse(&mapping_json(), false).unwrap();
    let rows = |r: &[String]| format!("{HEADER}\n{}\n", r.join("\n"));
    let first: Vec<String> = (0..5).map(good_row).collect();
    let r = import_text(
        &hub.store,
        &rows(&first),
        InputFormat::Csv,
        Some(&mapping),
        false,
        1,
    )
    .await;
    assert_eq!(r.summary.created, 5, "{}", r.error_lines());

    // Row 0 changes department and loses its email; row 1 renames; the rest is the same;
    // a new row arrives.
    let mut second = first.clone();
    second[0] = good_row(0)
        .replace("Dept0", "Security")
        .replace("user0@example.com", "");
    second[1] = good_row(1).replace("First1", "Firstname1");
    second.push(good_row(7));
    let text = rows(&second);
    let audit_before = hub
        .store
        .audit_query(&Default::default(), None, 1000)
        .await
        .unwrap()
        .len();
    let dry = import_text(&hub.store, &text, InputFormat::Csv, Some(&mapping), true, 1).await;
    assert!(dry.dry_run);
    assert_eq!(
        (
            dry.summary.created,
            dry.summary.updated,
            dry.summary.unchanged
        ),
        (1, 2, 3),
        "{}",
        dry.error_lines()
    );
    assert!(dry.summary_line().contains("would be created"));
    assert_eq!(hub.store.count(ResourceKind::User, None).await.unwrap(), 5);
    let audit_after = hub
        .store
        .audit_query(&Default::default(), None, 1000)
        .await
        .unwrap()
        .len();
    assert_eq!(audit_before, audit_after, "a dry run writes nothing");

    let real = import_text(
        &hub.store,
        &text,
        InputFormat::Csv,
        Some(&mapping),
        false,
        1,
    )
    .await;
    assert_eq!(
        (
            real.summary.created,
            real.summary.updated,
            real.summary.unchanged
        ),
        (1, 2, 3)
    );
    let u0 = &users_with_external_id(&hub.store, "E0").await[0];
    assert_eq!(u0.doc[ENTERPRISE_USER_SCHEMA]["department"], "Security");
    assert!(u0.doc.get("emails").is_none(), "an empty cell clears");
    assert_eq!(u0.version, 2);
    // Again: nothing changes, no version moves.
    let again = import_text(
        &hub.store,
        &text,
        InputFormat::Csv,
        Some(&mapping),
        false,
        1,
    )
    .await;
    assert_eq!(again.summary.unchanged, 6);
    assert_eq!(users_with_external_id(&hub.store, "E0").await[0].version, 2);

    // "keep" leaves attributes of empty cells alone.
    let keep: Value = {
        let mut m: Value = serde_json::from_str(&mapping_json()).unwrap();
        m["empty_cells"] = json!("keep");
        m
    };
    let keep = MappingFile::parse(&keep.to_string(), false).unwrap();
    let blank_dept = rows(&[good_row(1)
        .replace("First1", "Firstname1")
        .replace(",Dept1", ",")]);
    let r = import_text(
        &hub.store,
        &blank_dept,
        InputFormat::Csv,
        Some(&keep),
        false,
        1,
    )
    .await;
    assert_eq!(r.summary.unchanged, 1, "{}", r.error_lines());

    // Dry runs catch what the store would refuse: a userName another user holds, and one
    // claimed twice in the file.
    let clash = rows(&[
        good_row(20).replace("user20,", "user3,"),
        good_row(21).replace("user21,", "newname,"),
        good_row(22).replace("user22,", "NewName,"),
    ]);
    let dry = import_text(
        &hub.store,
        &clash,
        InputFormat::Csv,
        Some(&mapping),
        true,
        1,
    )
    .await;
    let lines: Vec<(u64, bool)> = dry
        .errors
        .iter()
        .map(|e| (e.line, e.reason.contains("already taken")))
        .collect();
    assert_eq!(lines, [(2, true), (4, true)], "{}", dry.error_lines());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_import_back_as_the_same_users() {
    let hub = Hub::start().await;
    let mapping = MappingFile::parse(&mapping_json(), false).unwrap();
    let mut text = format!("{HEADER}\n");
    for i in 0..30 {
        text.push_str(&good_row(i));
        text.push('\n');
    }
    let r = import_text(
        &hub.store,
        &text,
        InputFormat::Csv,
        Some(&mapping),
        false,
        jobs(),
    )
    .await;
    assert_eq!(r.summary.created, 30);
    let c = hub.client();
    let g = c
        .post(hub.url("/Groups"))
        .bearer_auth(&hub.token)
        .json(&json!({"displayName": "Badge holders", "members": [
            {"value": users_with_external_id(&hub.store, "E1").await[0].id}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(g.status(), 201);
    // A manager, shown as a DN in LDIF.
    let boss = users_with_external_id(&hub.store, "E0").await[0].id.clone();
    let u2 = users_with_external_id(&hub.store, "E2").await[0].id.clone();
    let r = c
        .patch(hub.url(&format!("/Users/{u2}")))
        .bearer_auth(&hub.token)
        .json(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
            {"op": "add", "path": format!("{ENTERPRISE_USER_SCHEMA}:manager"), "value": {"value": boss}},
            {"op": "add", "path": "phoneNumbers", "value": [{"value": "+1 555 0100", "type": "work"}, {"value": "+1 555 0199", "type": "mobile"}]}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let export = |format: Format, kinds: Kinds, mapping: Option<MappingFile>| {
        let store = hub.store.clone();
        async move {
            let mut out = Vec::new();
            let opts = ExportOptions {
                format,
                kinds,
                mapping,
                base_url: "https://hub.example/scim/v2".into(),
                ldap: ldap_frontend::LdapConfig::default(),
            };
            let n = batch::export::export(&store, &opts, &mut out)
                .await
                .unwrap();
            (n, String::from_utf8(out).unwrap())
        }
    };

    // CSV through the same mapping: the same columns and values back.
    let (n, csv_out) = export(Format::Csv, Kinds::Users, Some(mapping.clone())).await;
    assert_eq!(n, 30);
    // Rows come in store order (file order only with one import job); timestamps in the
    // store's canonical form.
    let exported: Vec<&str> = csv_out.lines().collect();
    assert_eq!(exported[0], HEADER);
    assert_eq!(exported.len(), 31);
    for i in 0..30 {
        let want = good_row(i).replace("T00:00:00Z", "T00:00:00.000000Z");
        assert!(exported.contains(&want.as_str()), "{want}");
    }
    // Default columns.
    let (_, plain) = export(Format::Csv, Kinds::Users, None).await;
    let header = plain.lines().next().unwrap();
    assert!(
        header.starts_with("id,externalId,userName,name.givenName"),
        "{header}"
    );
    assert!(plain.contains("\"HQ;Annex\"") || plain.contains("HQ;Annex"));
    assert!(matches!(
        export_err(&hub.store, Format::Csv, Kinds::Groups).await,
        Some(m) if m.contains("Users")
    ));

    // JSON Lines and LDIF into fresh hubs give the same users.
    let (n, jsonl) = export(Format::Json, Kinds::All, None).await;
    assert_eq!(n, 31);
    let first: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert!(
        first["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with("https://hub.example/scim/v2/Users/")
    );
    let (n, ldif) = export(Format::Ldif, Kinds::All, None).await;
    assert_eq!(n, 31);
    assert!(ldif.contains("dn: uid=user0,ou=people,dc=example,dc=org"));
    assert!(ldif.contains("manager: uid=user0,ou=people,dc=example,dc=org"));
    assert!(ldif.contains("dn: cn=Badge holders,ou=groups,dc=example,dc=org"));
    assert!(ldif.contains("member: uid=user1,ou=people,dc=example,dc=org"));
    assert!(ldif.contains("pacsFacility: Annex"));

    let original = snapshot(&hub.store).await;
    for (format, text) in [(InputFormat::Jsonl, &jsonl), (InputFormat::Ldif, &ldif)] {
        let other = Hub::start().await;
        let r = import_text(&other.store, text, format, None, false, 1).await;
        assert_eq!(
            (r.summary.created, r.summary.failed, r.summary.skipped),
            (30, 0, 1),
            "{format:?}: {}",
            r.error_lines()
        );
        let copy = snapshot(&other.store).await;
        assert_eq!(copy.len(), original.len());
        for (name, doc) in &original {
            let got = &copy[name];
            if format == InputFormat::Jsonl {
                // Everything but the manager reference, an id of the other hub.
                let strip = |d: &serde_json::Map<String, Value>| {
                    let mut d = d.clone();
                    if let Some(e) = d.get_mut(ENTERPRISE_USER_SCHEMA) {
                        e.as_object_mut().unwrap().remove("manager");
                    }
                    d
                };
                assert_eq!(strip(got), strip(doc), "{name}");
                continue;
            }
            // What the directory shows: names, mail, phones, department, the card.
            for key in ["userName", "name", "active"] {
                assert_eq!(got.get(key), doc.get(key), "{name} {key}");
            }
            let values =
                |d: &serde_json::Map<String, Value>, attr: &str| -> Vec<(String, Option<String>)> {
                    d.get(attr)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            (
                                e["value"].as_str().unwrap().to_string(),
                                e.get("type").and_then(Value::as_str).map(str::to_string),
                            )
                        })
                        .collect()
                };
            assert_eq!(values(got, "emails"), values(doc, "emails"), "{name}");
            assert_eq!(
                values(got, "phoneNumbers"),
                values(doc, "phoneNumbers"),
                "{name}"
            );
            assert_eq!(
                got[ENTERPRISE_USER_SCHEMA]["department"],
                doc[ENTERPRISE_USER_SCHEMA]["department"]
            );
            for a in ["cardNumber", "cardExpiry", "pivStatus", "facilities"] {
                assert_eq!(got[PACS][a], doc[PACS][a], "{name} {a}");
            }
        }
        // Importing the same export again changes nothing.
        let r = import_text(&other.store, text, format, None, false, 1).await;
        assert_eq!(r.summary.unchanged, 30, "{format:?}: {}", r.error_lines());
        other.stop().await;
    }
    hub.stop().await;
}

async fn export_err(store: &Store, format: Format, kinds: Kinds) -> Option<String> {
    let opts = ExportOptions {
        format,
        kinds,
        mapping: None,
        base_url: String::new(),
        ldap: ldap_frontend::LdapConfig::default(),
    };
    batch::export::export(store, &opts, &mut Vec::new())
        .await
        .err()
        .map(|e| e.to_string())
}

/// userName → document (with externalId), for comparing stores.
async fn snapshot(store: &Store) -> BTreeMap<String, serde_json::Map<String, Value>> {
    let users = store
        .scan(ResourceKind::User, None, None, 10_000, Load::NONE)
        .await
        .unwrap();
    users
        .into_iter()
        .map(|u| {
            let mut doc = u.doc.clone();
            if let Some(x) = &u.external_id {
                doc.insert("externalId".into(), Value::String(x.clone()));
            }
            (u.doc["userName"].as_str().unwrap().to_string(), doc)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldif_errors_are_reported_by_line() {
    let hub = Hub::start().await;
    let text = "version: 1\n\ndn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\ndn: uid=ok,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: ok\nsn: Ok\ncn: Ok Person\n\ndn: uid=bad,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bad\nsn: Bad\npacsPivStatus: sideways\n\ndn: uid=noname,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nsn: Nobody\n\ndn: uid=x,ou=people,dc=example,dc=org\nchangetype: delete\n";
    let r = import_text(&hub.store, text, InputFormat::Ldif, None, false, 1).await;
    assert_eq!(
        (r.summary.created, r.summary.failed, r.summary.skipped),
        (1, 3, 1),
        "{}",
        r.error_lines()
    );
    let lines: Vec<u64> = r.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [13, 19, 23]);
    assert!(
        r.errors[0].reason.contains("pivStatus"),
        "{}",
        r.error_lines()
    );
    assert!(r.errors[1].reason.contains("uid"));
    assert!(r.errors[2].reason.contains("changetype: delete"));
    let ok = hub
        .store
        .scan(ResourceKind::User, None, None, 10, Load::NONE)
        .await
        .unwrap();
    assert_eq!(ok[0].doc["displayName"], "Ok Person");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_export_commands() {
    let url = store::test_db::fresh_database_url().await.unwrap();
    let dir = std::env::temp_dir().join(format!("scimhub-batch-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv_path = dir.join("people.csv");
    let map_path = dir.join("mapping.toml");
    let mut text = format!("{HEADER}\n");
    for i in 0..50 {
        if i == 10 {
            text.push_str(&bad_row(i, 0).0);
        } else {
            text.push_str(&good_row(i));
        }
        text.push('\n');
    }
    std::fs::write(&csv_path, text).unwrap();
    let m: Value = serde_json::from_str(&mapping_json()).unwrap();
    let mut toml_text = String::from("multi_value_separator = \";\"\n[columns]\n");
    for (k, v) in m["columns"].as_object().unwrap() {
        toml_text.push_str(&format!("{k} = {}\n", v));
    }
    std::fs::write(&map_path, toml_text).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_scimhub"))
            .args(args)
            .env("SCIMHUB_DATABASE_URL", &url)
            .env("SCIMHUB_LOG__LEVEL", "warn")
            .output()
            .unwrap()
    };
    let csv_arg = csv_path.to_str().unwrap();
    let map_arg = map_path.to_str().unwrap();
    let o = run(&["import", csv_arg, "--mapping", map_arg, "--dry-run"]);
    assert!(!o.status.success(), "a failed row fails the command");
    let stdout = String::from_utf8(o.stdout).unwrap();
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert_eq!(
        stdout.trim(),
        "line 12: externalId \"E10\": urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:issueLevel: \"high\" is not an integer"
    );
    assert!(stderr.contains("49 would be created"), "{stderr}");
    assert!(stderr.contains("rows/s"));
    let report = dir.join("report.txt");
    let o = run(&[
        "import",
        csv_arg,
        "--mapping",
        map_arg,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        std::fs::read_to_string(&report)
            .unwrap()
            .starts_with("line 12: ")
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("49 created"));
    let out = dir.join("out.csv");
    let o = run(&[
        "export",
        "--format",
        "csv",
        "--mapping",
        map_arg,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exported = std::fs::read_to_string(&out).unwrap();
    assert_eq!(exported.lines().count(), 50);
    assert_eq!(
        exported.lines().next().unwrap(),
        HEADER,
        "TOML keeps column order"
    );
    let o = run(&["export", "--format", "ldif"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("uid: user49"));
    let o = run(&["import", csv_arg, "--mapping", map_arg, "--quiet"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("49 unchanged"));
    std::fs::remove_dir_all(&dir).ok();
}
