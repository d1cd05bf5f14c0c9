//! OpenLDAP's command-line clients against the directory.

use serde_json::json;
use store::patch::PatchOperation;
use store::{Actor, AuditFilter, ResourceKind};

use crate::{BASE, Hub, run, self_signed, test_config};

fn people() -> String {
    format!("ou=people,{BASE}")
}

fn udn(name: &str) -> String {
    format!("uid={name},ou=people,{BASE}")
}

fn gdn(name: &str) -> String {
    format!("cn={name},ou=groups,{BASE}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_dse_subschema_and_anonymous_limits() {
    let hub = Hub::start().await;
    let anon = |args: &[&str]| {
        let mut a: Vec<String> = ["-x", "-LLL", "-o", "ldif-wrap=no", "-H"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(hub.url());
        a.extend(args.iter().map(|s| s.to_string()));
        run("ldapsearch", a, &[])
    };
    let root = anon(&["-b", "", "-s", "base", "+"]).await;
    assert_eq!(root.code, 0, "{root:?}");
    assert_eq!(root.values("namingContexts"), vec![BASE.to_string()]);
    assert_eq!(root.values("supportedLDAPVersion"), vec!["3"]);
    assert!(
        root.values("supportedControl")
            .contains(&"1.2.840.113556.1.4.319".to_string())
    );
    assert!(
        root.values("supportedExtension")
            .contains(&"1.3.6.1.4.1.4203.1.11.3".to_string())
    );
    assert_eq!(root.values("subschemaSubentry"), vec!["cn=subschema"]);
    assert_eq!(root.values("vendorName"), vec!["scimhub"]);
    assert_eq!(root.values("vendorVersion").len(), 1);

    // Anonymous: the root DSE only.
    let denied = anon(&["-b", BASE, "(objectClass=*)"]).await;
    assert_eq!(denied.code, 50, "{denied:?}");
    assert!(denied.stderr.contains("bind first"), "{denied:?}");

    // The subschema entry lists what is served.
    let schema = hub
        .search(&[
            "-b",
            "cn=subschema",
            "-s",
            "base",
            "(objectClass=subschema)",
            "attributeTypes",
            "objectClasses",
        ])
        .await;
    assert_eq!(schema.code, 0, "{schema:?}");
    let types = schema.values("attributeTypes").join("\n");
    for name in [
        "'uid'",
        "'mail'",
        "'memberOf'",
        "'entryUUID'",
        "'pacsCardNumber'",
        "'member'",
    ] {
        assert!(types.contains(name), "{name} missing from\n{types}");
    }
    assert!(types.contains("( 0.9.2342.19200300.100.1.3 NAME 'mail' EQUALITY caseIgnoreIA5Match"));
    let classes = schema.values("objectClasses").join("\n");
    assert!(
        classes.contains("'inetOrgPerson'")
            && classes.contains("'groupOfNames'")
            && classes.contains("'scimhubPerson'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes() {
    let hub = Hub::start().await;
    hub.user("alice", json!({})).await;
    hub.user("bob", json!({})).await;
    hub.group("staff", &[]).await;

    let base = hub
        .search(&["-b", BASE, "-s", "base", "(objectClass=*)"])
        .await;
    assert_eq!(base.dns(), vec![BASE.to_string()]);
    assert_eq!(base.values("dc"), vec!["example"]);

    let one = hub
        .search(&["-b", BASE, "-s", "one", "(objectClass=*)"])
        .await;
    assert_eq!(
        one.dns(),
        vec![
            people(),
            format!("ou=groups,{BASE}"),
            format!("ou=services,{BASE}")
        ]
    );

    let sub = hub
        .search(&["-b", BASE, "-s", "sub", "(objectClass=*)", "1.1"])
        .await;
    let dns = sub.dns();
    assert_eq!(dns.len(), 1 + 3 + 2 + 1 + 1, "{dns:?}");
    for want in [
        udn("alice"),
        udn("bob"),
        gdn("staff"),
        format!("cn=reader,ou=services,{BASE}"),
    ] {
        assert!(dns.contains(&want), "{want} not in {dns:?}");
    }

    let users = hub
        .search(&["-b", &people(), "-s", "one", "(objectClass=*)", "1.1"])
        .await;
    assert_eq!(users.dns(), vec![udn("alice"), udn("bob")]);

    let leaf = hub
        .search(&["-b", &udn("ALICE"), "-s", "base", "(objectClass=*)", "uid"])
        .await;
    assert_eq!(leaf.dns(), vec![udn("alice")]);
    assert_eq!(leaf.values("uid"), vec!["alice"]);
    let leaf_one = hub
        .search(&["-b", &udn("alice"), "-s", "one", "(objectClass=*)"])
        .await;
    assert_eq!((leaf_one.code, leaf_one.dns().len()), (0, 0));

    let missing = hub
        .search(&["-b", &udn("nobody"), "-s", "base", "(objectClass=*)"])
        .await;
    assert_eq!(missing.code, 32, "{missing:?}");
    assert!(
        missing
            .stdout
            .contains(&format!("Matched DN: {}", people()))
            || missing.stderr.contains("Matched DN"),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_and_every_filter_type() {
    let hub = Hub::start().await;
    let boss = hub
        .user("boss", json!({"name": {"givenName": "Barbara", "familyName": "Oss"}, "displayName": "Barbara Oss"}))
        .await;
    hub.user(
        "jsmith",
        json!({
            "name": {"givenName": "John", "familyName": "Smith"},
            "displayName": "John Smith",
            "title": "Engineer",
            "userType": "Employee",
            "preferredLanguage": "en-GB",
            "emails": [{"value": "john.other@example.net", "type": "home"}, {"value": "John.Smith@Example.org", "type": "work", "primary": true}],
            "phoneNumbers": [{"value": "+44 20 7946 0000", "type": "work"}, {"value": "+44 7700 900000", "type": "mobile"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "1042", "department": "R&D", "organization": "Example Ltd", "costCenter": "CC-7",
                "manager": {"value": boss.id}
            },
            "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder": {
                "cardNumber": "C-0001", "pivStatus": "active", "facilities": ["HQ", "Lab"], "cardExpiry": "2030-01-31T00:00:00Z"
            }
        }),
    )
    .await;
    hub.user("zoe", json!({"displayName": "Zoe Zed", "emails": [{"value": "zoe@example.org"}], "title": "Manager"}))
        .await;

    let e = hub
        .search(&["-b", &people(), "(uid=JSMITH)", "*", "+"])
        .await;
    assert_eq!(e.dns(), vec![udn("jsmith")]);
    let one = |a: &str| e.values(a);
    assert_eq!(one("cn"), vec!["John Smith", "jsmith"]);
    assert_eq!(one("sn"), vec!["Smith"]);
    assert_eq!(one("givenName"), vec!["John"]);
    assert_eq!(
        one("mail"),
        vec!["John.Smith@Example.org", "john.other@example.net"],
        "primary first"
    );
    assert_eq!(one("telephoneNumber"), vec!["+44 20 7946 0000"]);
    assert_eq!(one("mobile"), vec!["+44 7700 900000"]);
    assert_eq!(one("title"), vec!["Engineer"]);
    assert_eq!(one("employeeType"), vec!["Employee"]);
    assert_eq!(one("o"), vec!["Example Ltd"]);
    assert_eq!(one("ou"), vec!["R&D"]);
    assert_eq!(one("departmentNumber"), vec!["CC-7"]);
    assert_eq!(one("employeeNumber"), vec!["1042"]);
    assert_eq!(one("manager"), vec![udn("boss")]);
    assert_eq!(one("preferredLanguage"), vec!["en-GB"]);
    assert_eq!(one("pacsCardNumber"), vec!["C-0001"]);
    assert_eq!(one("pacsFacility"), vec!["HQ", "Lab"]);
    assert_eq!(one("pacsCardExpiry"), vec!["20300131000000Z"]);
    assert_eq!(
        one("objectClass"),
        vec![
            "top",
            "person",
            "organizationalPerson",
            "inetOrgPerson",
            "scimhubPerson"
        ]
    );
    assert_eq!(one("entryUUID").len(), 1);
    assert!(one("createTimestamp")[0].ends_with('Z'));

    // Operational attributes only on request; "1.1" means none; typesOnly.
    let plain = hub.search(&["-b", &people(), "(uid=jsmith)"]).await;
    assert!(plain.values("entryUUID").is_empty() && !plain.values("mail").is_empty());
    let none = hub.search(&["-b", &people(), "(uid=jsmith)", "1.1"]).await;
    assert_eq!(none.stdout.trim(), format!("dn: {}", udn("jsmith")));
    let types = hub
        .search(&["-A", "-b", &people(), "(uid=jsmith)", "mail"])
        .await;
    assert!(
        types.stdout.lines().any(|l| l.trim() == "mail:"),
        "{types:?}"
    );

    let hub = &hub;
    let uids = |f: &'static str| async move {
        let o = hub.search(&["-b", BASE, f, "uid"]).await;
        assert_eq!(o.code, 0, "{f}: {o:?}");
        let mut v = o.values("uid");
        v.sort();
        v
    };
    // equality (case-insensitive), present, substrings, >=, <=, approx, and/or/not, extensible
    assert_eq!(uids("(mail=JOHN.SMITH@example.ORG)").await, vec!["jsmith"]);
    assert_eq!(
        uids("(&(objectClass=inetOrgPerson)(mail=*))").await,
        vec!["jsmith", "zoe"]
    );
    assert_eq!(uids("(cn=*smi*)").await, vec!["jsmith"]);
    assert_eq!(uids("(cn=John*)").await, vec!["jsmith"]);
    assert_eq!(uids("(mail=*@example.org)").await, vec!["jsmith", "zoe"]);
    assert_eq!(uids("(sn=S*t*h)").await, vec!["jsmith"]);
    assert_eq!(uids("(employeeNumber>=1000)").await, vec!["jsmith"]);
    assert_eq!(uids("(uid<=c)").await, vec!["boss"]);
    assert_eq!(uids("(title~=engineer)").await, vec!["jsmith"]);
    assert_eq!(
        uids("(|(title=Manager)(sn=Oss))").await,
        vec!["boss", "zoe"]
    );
    assert_eq!(
        uids("(&(objectClass=person)(!(title=Engineer)))").await,
        vec!["boss", "zoe"]
    );
    assert_eq!(uids("(uid:caseIgnoreMatch:=ZOE)").await, vec!["zoe"]);
    assert_eq!(
        uids("(manager=uid=BOSS,ou=People,dc=example,dc=org)").await,
        vec!["jsmith"]
    );
    assert_eq!(uids("(mobile=*7700*)").await, vec!["jsmith"]);
    assert_eq!(uids("(pacsFacility=lab)").await, vec!["jsmith"]);
    assert_eq!(
        uids("(pacsCardExpiry>=20291231000000Z)").await,
        vec!["jsmith"]
    );
    assert_eq!(
        uids("(createTimestamp>=20000101000000Z)").await,
        vec!["boss", "jsmith", "zoe"]
    );
    assert_eq!(uids("(nosuchattribute=x)").await, Vec::<String>::new());
    assert_eq!(uids("(!(nosuchattribute=x))").await, Vec::<String>::new());

    // ldapcompare: compareTrue is exit 6, compareFalse 5.
    let cmp = |attr_val: &'static str| {
        run(
            "ldapcompare",
            vec![
                "-x".into(),
                "-H".into(),
                hub.url(),
                "-D".into(),
                hub.reader_dn.clone(),
                "-w".into(),
                hub.reader_pw.clone(),
                udn("jsmith"),
                attr_val.into(),
            ],
            &[],
        )
    };
    assert_eq!(cmp("mail:JOHN.smith@example.org").await.code, 6);
    assert_eq!(cmp("title:Manager").await.code, 5);
    assert_eq!(
        cmp("manager:uid=boss,ou=people,dc=example,dc=org")
            .await
            .code,
        6
    );
    assert_eq!(cmp("carLicense:x").await.code, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_through_a_thousand_entries() {
    let mut cfg = test_config();
    cfg.max_size_limit = 500;
    let hub = Hub::with_config(cfg).await;
    for i in 0..1000 {
        hub.user(
            &format!("user{i:04}"),
            json!({"emails": [{"value": format!("user{i:04}@example.org")}]}),
        )
        .await;
    }
    let paged = hub
        .search(&[
            "-E",
            "pr=100/noprompt",
            "-b",
            &people(),
            "-s",
            "one",
            "(mail=*@example.org)",
            "uid",
        ])
        .await;
    assert_eq!(paged.code, 0, "{}", paged.stderr);
    let mut uids = paged.values("uid");
    assert_eq!(uids.len(), 1000);
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 1000, "every entry exactly once");
    assert_eq!(paged.stdout.matches("# pagedresults: cookie=").count(), 10);

    // Without paging, the server's size limit applies.
    let unpaged = hub
        .search(&["-b", &people(), "-s", "one", "(uid=user*)", "1.1"])
        .await;
    assert_eq!(unpaged.code, 4, "{}", unpaged.stderr);
    assert_eq!(unpaged.dns().len(), 500);
    assert!(unpaged.stderr.contains("Size limit exceeded"));
    // A client size limit below the server's.
    let small = hub
        .search(&["-z", "7", "-b", &people(), "(uid=user*)", "1.1"])
        .await;
    assert_eq!((small.code, small.dns().len()), (4, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_of_and_nested_groups() {
    let hub = Hub::start().await;
    let ann = hub.user("ann", json!({})).await;
    let ben = hub.user("ben", json!({})).await;
    hub.user("cy", json!({})).await;
    let devs = hub.group("devs", &[&ann.id]).await;
    let eng = hub.group("eng", &[&devs.id, &ben.id]).await;
    hub.group("all", &[&eng.id]).await;

    let hub = &hub;
    let uids = |f: String| async move {
        let o = hub.search(&["-b", BASE, &f, "uid"]).await;
        assert_eq!(o.code, 0, "{f}: {o:?}");
        let mut v = o.values("uid");
        v.sort();
        v
    };
    let cns = |f: String| async move {
        let o = hub
            .search(&["-b", &format!("ou=groups,{BASE}"), &f, "cn"])
            .await;
        assert_eq!(o.code, 0, "{f}: {o:?}");
        let mut v = o.values("cn");
        v.sort();
        v
    };
    // Direct membership.
    assert_eq!(
        uids(format!("(memberOf={})", gdn("devs"))).await,
        vec!["ann"]
    );
    assert_eq!(
        uids(format!("(memberOf={})", gdn("eng"))).await,
        vec!["ben"]
    );
    assert_eq!(
        uids(format!("(memberOf={})", gdn("all"))).await,
        Vec::<String>::new()
    );
    // In-chain: through nesting.
    assert_eq!(
        uids(format!(
            "(memberOf:1.2.840.113556.1.4.1941:={})",
            gdn("eng")
        ))
        .await,
        vec!["ann", "ben"]
    );
    assert_eq!(
        uids(format!(
            "(memberOf:1.2.840.113556.1.4.1941:={})",
            gdn("ALL")
        ))
        .await,
        vec!["ann", "ben"]
    );
    assert_eq!(
        uids("(&(objectClass=person)(!(memberOf=*)))".into()).await,
        vec!["cy"]
    );
    assert_eq!(cns(format!("(member={})", udn("ann"))).await, vec!["devs"]);
    assert_eq!(
        cns(format!("(member:1.2.840.113556.1.4.1941:={})", udn("ann"))).await,
        vec!["all", "devs", "eng"]
    );
    assert_eq!(
        cns(format!("(member:1.2.840.113556.1.4.1941:={})", gdn("devs"))).await,
        vec!["all", "eng"]
    );

    let ann_entry = hub
        .search(&[
            "-b",
            &udn("ann"),
            "-s",
            "base",
            "(objectClass=*)",
            "memberOf",
        ])
        .await;
    assert_eq!(ann_entry.values("memberOf"), vec![gdn("devs")]);
    let eng_entry = hub
        .search(&["-b", &gdn("eng"), "-s", "base", "(objectClass=*)"])
        .await;
    let mut members = eng_entry.values("member");
    members.sort();
    assert_eq!(members, vec![gdn("devs"), udn("ben")]);
    assert_eq!(eng_entry.values("objectClass"), vec!["top", "groupOfNames"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_whoami_throttling_and_audit() {
    let hub = Hub::start().await;
    hub.user("carol", json!({"password": "correct horse battery"}))
        .await;
    hub.user(
        "gone",
        json!({"password": "pw-of-a-leaver", "active": false}),
    )
    .await;
    let whoami = |dn: String, pw: &'static str| {
        run(
            "ldapwhoami",
            vec![
                "-x".into(),
                "-H".into(),
                hub.url(),
                "-D".into(),
                dn,
                "-w".into(),
                pw.into(),
            ],
            &[],
        )
    };
    let ok = whoami(udn("Carol"), "correct horse battery").await;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(ok.stdout.trim(), format!("dn:{}", udn("carol")));
    let svc = run(
        "ldapwhoami",
        vec![
            "-x".into(),
            "-H".into(),
            hub.url(),
            "-D".into(),
            hub.reader_dn.clone(),
            "-w".into(),
            hub.reader_pw.clone(),
        ],
        &[],
    )
    .await;
    assert_eq!(svc.stdout.trim(), format!("dn:{}", hub.reader_dn));
    let anon = run("ldapwhoami", vec!["-x".into(), "-H".into(), hub.url()], &[]).await;
    assert_eq!((anon.code, anon.stdout.trim()), (0, "anonymous"));

    let bad = whoami(udn("carol"), "wrong").await;
    assert_eq!(bad.code, 49, "{bad:?}");
    assert!(bad.stderr.contains("Invalid credentials"));
    assert_eq!(whoami(udn("nobody"), "x").await.code, 49);
    assert_eq!(
        whoami(udn("gone"), "pw-of-a-leaver").await.code,
        49,
        "inactive users cannot bind"
    );
    assert_eq!(
        whoami(format!("cn=reader,ou=services,{BASE}"), "nope")
            .await
            .code,
        49
    );

    // Five failures lock the DN: even the right password is refused for a while.
    for _ in 0..4 {
        assert_eq!(whoami(udn("carol"), "wrong").await.code, 49);
    }
    let locked = whoami(udn("carol"), "correct horse battery").await;
    assert_eq!(locked.code, 49);
    assert!(
        locked.stderr.contains("too many failed binds"),
        "{locked:?}"
    );

    // Revoked service accounts cannot bind.
    assert!(
        hub.store
            .revoke_ldap_account("reader", &Actor::cli())
            .await
            .unwrap()
    );
    let revoked = run(
        "ldapwhoami",
        vec![
            "-x".into(),
            "-H".into(),
            hub.url(),
            "-D".into(),
            hub.reader_dn.clone(),
            "-w".into(),
            hub.reader_pw.clone(),
        ],
        &[],
    )
    .await;
    assert_eq!(revoked.code, 49);

    let audit = hub
        .store
        .audit_query(
            &AuditFilter {
                action: Some("ldap.bind".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    let outcomes: Vec<&str> = audit.iter().map(|r| r.entry.outcome.as_str()).collect();
    assert!(
        outcomes.contains(&"success")
            && outcomes.contains(&"failure")
            && outcomes.contains(&"throttled"),
        "{outcomes:?}"
    );
    assert!(
        audit
            .iter()
            .all(|r| r.entry.layer == "ldap" && r.entry.source.as_deref() == Some("127.0.0.1"))
    );
    assert!(
        hub.store
            .verify_audit_chain()
            .await
            .unwrap()
            .first_broken
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused() {
    let hub = Hub::start().await;
    hub.user("dave", json!({})).await;
    let modify = |ldif: String, extra: &'static [&'static str]| {
        let dir = std::env::temp_dir().join(format!("scimhub-ldif-{}.ldif", uuid::Uuid::new_v4()));
        std::fs::write(&dir, ldif).unwrap();
        let mut args = vec![
            "-x".into(),
            "-H".into(),
            hub.url(),
            "-D".into(),
            hub.reader_dn.clone(),
            "-w".into(),
            hub.reader_pw.clone(),
            "-f".into(),
            dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run("ldapmodify", args, &[])
    };
    let cases = [
        format!(
            "dn: {}\nchangetype: modify\nreplace: title\ntitle: Boss\n",
            udn("dave")
        ),
        format!(
            "dn: {}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: new\ncn: n\nsn: n\n",
            udn("new")
        ),
        format!("dn: {}\nchangetype: delete\n", udn("dave")),
        format!(
            "dn: {}\nchangetype: modrdn\nnewrdn: uid=davey\ndeleteoldrdn: 1\n",
            udn("dave")
        ),
    ];
    for ldif in cases {
        let out = modify(ldif.clone(), &[]).await;
        assert_eq!(out.code, 53, "{ldif}: {out:?}");
        assert!(out.stderr.contains("read-only"), "{out:?}");
    }
    // Still there, unchanged.
    let e = hub
        .search(&["-b", &udn("dave"), "-s", "base", "(objectClass=*)", "title"])
        .await;
    assert_eq!((e.dns().len(), e.values("title").len()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_tls_and_ldaps() {
    let (dir, cert, key) = self_signed();
    let mut cfg = test_config();
    cfg.tls_cert_file = cert.display().to_string();
    cfg.tls_key_file = key.display().to_string();
    cfg.ldaps_addr = "127.0.0.1:0".into();
    let hub = Hub::with_config(cfg).await;
    hub.user("erin", json!({"password": "tls-secret-1"})).await;
    let env = [
        ("LDAPTLS_CACERT", cert.display().to_string()),
        ("LDAPTLS_REQCERT", "demand".to_string()),
    ];
    let starttls = run(
        "ldapwhoami",
        vec![
            "-x".into(),
            "-ZZ".into(),
            "-H".into(),
            hub.url(),
            "-D".into(),
            udn("erin"),
            "-w".into(),
            "tls-secret-1".into(),
        ],
        &env,
    )
    .await;
    assert_eq!(starttls.code, 0, "{starttls:?}");
    assert_eq!(starttls.stdout.trim(), format!("dn:{}", udn("erin")));
    let ldaps_url = format!("ldaps://{}", hub.server.ldaps_addr.expect("ldaps listener"));
    let ldaps = run(
        "ldapsearch",
        vec![
            "-x".into(),
            "-LLL".into(),
            "-H".into(),
            ldaps_url,
            "-D".into(),
            hub.reader_dn.clone(),
            "-w".into(),
            hub.reader_pw.clone(),
            "-b".into(),
            BASE.into(),
            "(uid=erin)".into(),
            "uid".into(),
        ],
        &env,
    )
    .await;
    assert_eq!(ldaps.code, 0, "{ldaps:?}");
    assert_eq!(ldaps.values("uid"), vec!["erin"]);
    let root = hub
        .search(&["-b", "", "-s", "base", "supportedExtension"])
        .await;
    assert!(
        root.values("supportedExtension")
            .contains(&"1.3.6.1.4.1.1466.20037".to_string())
    );
    // Without a certificate, StartTLS is refused (and not advertised).
    let plain = Hub::start().await;
    let refused = run(
        "ldapwhoami",
        vec!["-x".into(), "-ZZ".into(), "-H".into(), plain.url()],
        &env,
    )
    .await;
    assert_ne!(refused.code, 0);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scim_write_is_visible_to_the_next_search() {
    let hub = Hub::start().await;
    let u = hub.user("frank", json!({"title": "Intern"})).await;
    let f = hub.search(&["-b", BASE, "(uid=frank)", "title"]).await;
    assert_eq!(f.values("title"), vec!["Intern"]);
    let ops = vec![
        PatchOperation::from_json(&json!({"op": "replace", "path": "title", "value": "Engineer"}))
            .unwrap(),
    ];
    hub.store
        .patch(
            ResourceKind::User,
            &u.id,
            &ops,
            None,
            &Actor::new("token:test", None, "scim"),
        )
        .await
        .unwrap();
    let f = hub.search(&["-b", BASE, "(uid=frank)", "title"]).await;
    assert_eq!(f.values("title"), vec!["Engineer"]);
    // Deactivation hides the user at once (default: hidden).
    let ops = vec![
        PatchOperation::from_json(&json!({"op": "replace", "path": "active", "value": false}))
            .unwrap(),
    ];
    hub.store
        .patch(
            ResourceKind::User,
            &u.id,
            &ops,
            None,
            &Actor::new("token:test", None, "scim"),
        )
        .await
        .unwrap();
    assert!(
        hub.search(&["-b", BASE, "(uid=frank)"])
            .await
            .dns()
            .is_empty()
    );
    assert_eq!(
        hub.search(&["-b", &udn("frank"), "-s", "base", "(objectClass=*)"])
            .await
            .code,
        32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_users_can_be_flagged_instead() {
    let mut cfg = test_config();
    cfg.inactive_users = ldap_frontend::InactiveUsers::Flagged;
    let hub = Hub::with_config(cfg).await;
    hub.user("gina", json!({"active": false})).await;
    hub.user("hal", json!({})).await;
    let o = hub
        .search(&["-b", BASE, "(nsAccountLock=TRUE)", "uid", "nsAccountLock"])
        .await;
    assert_eq!(o.values("uid"), vec!["gina"]);
    assert_eq!(o.values("nsAccountLock"), vec!["TRUE"]);
    let all = hub
        .search(&["-b", &people(), "-s", "one", "(objectClass=person)", "uid"])
        .await;
    assert_eq!(all.values("uid").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cn_holds_display_formatted_and_user_name() {
    let hub = Hub::start().await;
    hub.user(
        "d1",
        json!({"displayName": "Shown Name", "name": {"formatted": "Formal Name"}}),
    )
    .await;
    hub.user(
        "f1",
        json!({"name": {"formatted": "Other Formal", "givenName": "G"}}),
    )
    .await;
    hub.user(
        "u1",
        json!({"name": {"givenName": "Only", "familyName": "Parts"}}),
    )
    .await;
    hub.user("Same", json!({"displayName": "same"})).await;
    let cn_of = |f: &'static str| {
        let hub = &hub;
        async move {
            let o = hub.search(&["-b", &people(), "-s", "one", f, "cn"]).await;
            assert_eq!(o.code, 0, "{f}: {o:?}");
            o.values("cn")
        }
    };
    assert_eq!(
        cn_of("(uid=d1)").await,
        vec!["Shown Name", "Formal Name", "d1"]
    );
    assert_eq!(cn_of("(uid=f1)").await, vec!["Other Formal", "f1"]);
    assert_eq!(cn_of("(uid=u1)").await, vec!["u1"]);
    assert_eq!(cn_of("(uid=same)").await, vec!["same"], "no repeats");
    let uids = |f: &'static str| {
        let hub = &hub;
        async move {
            let o = hub.search(&["-b", &people(), "-s", "one", f, "uid"]).await;
            assert_eq!(o.code, 0, "{f}: {o:?}");
            let mut v = o.values("uid");
            v.sort();
            v
        }
    };
    assert_eq!(uids("(cn=formal name)").await, vec!["d1"]);
    assert_eq!(uids("(cn=U1)").await, vec!["u1"]);
    assert_eq!(uids("(cn=*formal*)").await, vec!["d1", "f1"]);
    assert_eq!(uids("(|(cn=shown*)(cn=*1))").await, vec!["d1", "f1", "u1"]);
    assert_eq!(uids("(!(cn=*name*))").await, vec!["Same", "f1", "u1"]);
}
