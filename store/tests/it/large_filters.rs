//! Filters at the largest size any configuration accepts run on the real database: no
//! "Expression tree is too large", no "too many SQL variables", on SQLite and PostgreSQL.

use serde_json::json;
use store::filter::{
    AttrTarget, CompareOp, Filter, FilterLimits, ResolvedFilter, ResolvedValue, resolve,
};
use store::{Load, Paging, Query, ResourceKind};

use super::*;

async fn run(s: &Store, kind: ResourceKind, rf: ResolvedFilter) -> Vec<String> {
    let attr = if kind == ResourceKind::User {
        "userName"
    } else {
        "displayName"
    };
    let page = s
        .query(
            kind,
            &Query {
                filter: Some(rf.clone()),
                sort: None,
                paging: Paging::Index {
                    start: 1,
                    count: 1000,
                },
                load: Load::NONE,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let scanned = s
        .scan(kind, Some(&rf), None, 1000, Load::NONE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scanned.len(), page.resources.len(), "scan and query agree");
    page.resources
        .iter()
        .map(|r| r.doc[attr].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn scim(s: &Store, kind: ResourceKind, text: &str) -> Vec<String> {
    let f = Filter::parse_limited(text, &FilterLimits::CEILING)
        .unwrap_or_else(|e| panic!("{}: {e}", &text[..60.min(text.len())]));
    let rf = resolve(s.registry(), kind, &f).unwrap_or_else(|e| panic!("{e}"));
    run(s, kind, rf).await
}

fn chain(n: usize, joiner: &str, term: impl Fn(usize) -> String) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(joiner)
}

#[tokio::test]
async fn filters_at_the_term_ceiling_run_on_the_database() {
    let s = store().await;
    let mut ids = Vec::new();
    for (name, family, email) in [
        ("alice", "Archer", "alice@work.example"),
        ("bob", "Baker", "bob@home.example"),
        ("carol", "Cooper", "carol@work.example"),
    ] {
        let u = create(
            &s,
            ResourceKind::User,
            json!({"userName": name, "name": {"familyName": family}, "emails": [{"value": email, "type": "work"}]}),
        )
        .await;
        ids.push(u.id);
    }
    let g = group(&s, "staff", &[&ids[0], &ids[2]]).await;
    let max = FilterLimits::CEILING.max_terms;

    // Equalities on one attribute: one IN list.
    let f = chain(max, " or ", |i| format!("userName eq \"u{i}\""));
    assert!(scim(&s, ResourceKind::User, &f).await.is_empty());
    let f = format!(
        "{} or userName eq \"BOB\"",
        chain(max - 1, " or ", |i| format!("userName eq \"u{i}\""))
    );
    assert_eq!(scim(&s, ResourceKind::User, &f).await, ["bob"]);
    // Comparisons that bind the most each, not mergeable: a balanced tree of 2,000.
    let f = format!(
        "{} or name.familyName ew \"ooper\"",
        chain(max - 1, " or ", |i| format!("name.familyName ew \"x{i}\""))
    );
    assert_eq!(scim(&s, ResourceKind::User, &f).await, ["carol"]);
    // A long AND of negated value filters.
    let f = chain(max, " and ", |i| {
        format!("not (emails[value ew \"@x{i}.example\"])")
    });
    assert_eq!(
        scim(&s, ResourceKind::User, &f).await,
        ["alice", "bob", "carol"]
    );
    // Membership: one condition over the group ids.
    let f = format!(
        "{} or groups.value eq \"{}\"",
        chain(max - 1, " or ", |i| format!("groups.value eq \"g{i}\"")),
        g.id
    );
    assert_eq!(scim(&s, ResourceKind::User, &f).await, ["alice", "carol"]);
    let f = format!(
        "{} or members.value eq \"{}\"",
        chain(max - 1, " or ", |i| format!("members.value eq \"u{i}\"")),
        ids[2]
    );
    assert_eq!(scim(&s, ResourceKind::Group, &f).await, ["staff"]);
    // The deepest nesting allowed, alternating AND and OR.
    let depth = FilterLimits::CEILING.max_depth;
    let mut f = "userName eq \"alice\"".to_string();
    for level in 0..depth {
        f = if level % 2 == 0 {
            format!("name.familyName pr and ({f})")
        } else {
            format!("name.familyName eq \"nobody\" or ({f})")
        };
    }
    assert_eq!(scim(&s, ResourceKind::User, &f).await, ["alice"]);
}

#[tokio::test]
async fn long_derived_lists_are_bound_as_json() {
    let s = store().await;
    let a = user(&s, "alice").await;
    let b = user(&s, "bob").await;
    let id_in = |extra: &str, n: usize| {
        let mut v: Vec<ResolvedValue> = (0..n)
            .map(|i| ResolvedValue::Text(format!("00000000-0000-0000-0000-{i:012}")))
            .collect();
        v.push(ResolvedValue::Text(extra.to_string()));
        ResolvedFilter::In(AttrTarget::Id, v)
    };
    // One list longer than the bound-list maximum.
    assert_eq!(
        run(&s, ResourceKind::User, id_in(&a.id, 5000)).await,
        ["alice"]
    );
    // Many lists whose values together exceed SQLite's 32,766 parameters.
    let all = ResolvedFilter::And((0..20).map(|_| id_in(&b.id, 1990)).collect());
    assert_eq!(run(&s, ResourceKind::User, all).await, ["bob"]);
    let none = ResolvedFilter::Not(Box::new(ResolvedFilter::Or(
        (0..20)
            .map(|i| id_in(if i == 7 { &a.id } else { "x" }, 1990))
            .collect(),
    )));
    assert_eq!(run(&s, ResourceKind::User, none).await, ["bob"]);
    // Text equalities merge into one list; numbers keep their own.
    let mixed = ResolvedFilter::any([
        ResolvedFilter::Compare(
            AttrTarget::Name,
            CompareOp::Eq,
            ResolvedValue::Text("bob".into()),
        ),
        ResolvedFilter::Compare(
            AttrTarget::Name,
            CompareOp::Eq,
            ResolvedValue::Text("zed".into()),
        ),
    ]);
    assert!(matches!(&mixed, ResolvedFilter::In(AttrTarget::Name, v) if v.len() == 2));
    assert_eq!(run(&s, ResourceKind::User, mixed).await, ["bob"]);
}

#[tokio::test]
async fn consumer_scope_filters_are_held_to_the_configured_limits() {
    let s = store().await;
    let spec = |scope: String| -> store::engine::ConsumerSpec {
        serde_json::from_value(json!({"scope": scope})).unwrap()
    };
    let endpoint = json!({"url": "http://127.0.0.1:9/scim/v2", "auth": {"type": "none"}});
    let over = chain(1001, " or ", |i| format!("userName eq \"u{i}\""));
    let e = s
        .create_consumer("big", spec(over), endpoint.clone(), &actor())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("scope") && e.contains("1000 terms"), "{e}");
    let deep = format!("{}userName pr{}", "(".repeat(33), ")".repeat(33));
    assert!(
        s.create_consumer("deep", spec(deep), endpoint.clone(), &actor())
            .await
            .is_err()
    );
    let ok = chain(1000, " or ", |i| format!("userName eq \"u{i}\""));
    s.create_consumer("ok", spec(ok), endpoint, &actor())
        .await
        .unwrap();
}
