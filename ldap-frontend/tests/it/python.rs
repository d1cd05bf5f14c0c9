//! Python ldap3 (2.9.1) as a client: bind, search, paged search, compare, Who am I.

use serde_json::json;

use crate::{BASE, Hub, run};

/// A Python with ldap3 2.9.1: `SCIMHUB_TEST_PYTHON` (set by scripts/test.sh), /opt/scimtools, or
/// a venv made here.
fn python() -> String {
    let ok = |py: &str| {
        std::process::Command::new(py)
            .args([
                "-c",
                "import ldap3,sys; sys.exit(0 if ldap3.__version__ == '2.9.1' else 1)",
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    for py in [
        "/opt/scimtools/bin/python",
        "/tmp/scimhub-ldap-venv/bin/python",
    ] {
        if ok(py) {
            return py.to_string();
        }
    }
    let venv = "/tmp/scimhub-ldap-venv";
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", venv])
        .status();
    assert!(made.is_ok_and(|s| s.success()), "python3 -m venv failed");
    let pip = std::process::Command::new(format!("{venv}/bin/pip"))
        .args(["install", "-q", "ldap3==2.9.1"])
        .status();
    assert!(
        pip.is_ok_and(|s| s.success()),
        "pip install ldap3==2.9.1 failed"
    );
    format!("{venv}/bin/python")
}

const SCRIPT: &str = r#"
import json, sys
from ldap3 import Server, Connection, SUBTREE, ALL_ATTRIBUTES
host, port, dn, pw, base = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
out = {}
s = Server(host, port=port, get_info='ALL')
c = Connection(s, user=dn, password=pw, auto_bind=True, raise_exceptions=False)
out["naming"] = [str(x) for x in s.info.naming_contexts]
out["whoami"] = c.extend.standard.who_am_i()
c.search(base, "(&(objectClass=inetOrgPerson)(mail=*@example.org))", SUBTREE, attributes=["uid", "mail", "cn"])
out["found"] = sorted(str(e.uid) for e in c.entries)
entries = c.extend.standard.paged_search(base, "(objectClass=inetOrgPerson)", SUBTREE, attributes=["uid"], paged_size=3, generator=False)
uid = lambda v: v if isinstance(v, str) else v[0]
out["paged"] = sorted(uid(e["attributes"]["uid"]) for e in entries if e.get("type") == "searchResEntry")
out["compare_true"] = c.compare("uid=py1,ou=people," + base, "cn", "Py One")
out["compare_false"] = c.compare("uid=py1,ou=people," + base, "cn", "Someone Else")
c.modify("uid=py1,ou=people," + base, {"title": [("MODIFY_REPLACE", ["x"])]})
out["modify"] = c.result["result"]
bad = Connection(s, user=dn, password="wrong", raise_exceptions=False)
out["bad_bind"] = bad.bind()
out["bad_result"] = bad.result["result"]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ldap3_client() {
    let hub = Hub::start().await;
    for i in 1..=7 {
        hub.user(
            &format!("py{i}"),
            json!({"displayName": if i == 1 { "Py One".to_string() } else { format!("Py {i}") }, "emails": [{"value": format!("py{i}@example.org")}]}),
        )
        .await;
    }
    let py = tokio::task::spawn_blocking(python).await.unwrap();
    let out = run(
        &py,
        vec![
            "-c".into(),
            SCRIPT.into(),
            "127.0.0.1".into(),
            hub.server.addr.port().to_string(),
            hub.reader_dn.clone(),
            hub.reader_pw.clone(),
            BASE.into(),
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let names: Vec<String> = (1..=7).map(|i| format!("py{i}")).collect();
    assert_eq!(v["naming"], json!([BASE]));
    assert_eq!(v["whoami"], json!(format!("dn:{}", hub.reader_dn)));
    assert_eq!(v["found"], json!(names));
    assert_eq!(v["paged"], json!(names));
    assert_eq!(v["compare_true"], json!(true));
    assert_eq!(v["compare_false"], json!(false));
    assert_eq!(v["modify"], json!(53));
    assert_eq!(v["bad_bind"], json!(false));
    assert_eq!(v["bad_result"], json!(49));
}
