//! The two evaluators of a filter agree: for every generated filter the parser and the
//! resolver accept, the SQL compilation (run on the real database of the suite, SQLite or
//! PostgreSQL) selects exactly the resources that the in-memory evaluation (`engine::eval`,
//! used for consumer scopes and transforms) matches, over a generated data set with strings
//! in several cases, numbers, booleans, dateTimes, multi-valued complex attributes,
//! memberships (direct and nested) and missing attributes.
//!
//! Cases: `PROPTEST_CASES` (default 256) filters per resource type on each of two
//! generated data sets, 1,024 in all (about 1 s on SQLite, 4 s on PostgreSQL here), from a
//! fixed seed so that a run is repeatable; `SCIMHUB_AGREEMENT_SEED` picks another seed.
//! Failures shrink to a minimal filter. The disagreements found are kept as regression
//! cases at the end of this file.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Map, Value, json};
use store::engine::eval::matches;
use store::filter::{AttrPath, CompareOp, Filter, Literal, resolve};
use store::model::render;
use store::{Load, Paging, Query, ResourceKind};

use super::*;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PACS: &str = "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder";

fn runner(salt: u64) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let seed: u64 = std::env::var("SCIMHUB_AGREEMENT_SEED")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(7);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(seed ^ salt).to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Words that collide across resources and attributes, in several cases.
const WORDS: &[&str] = &[
    "Ann", "ann", "ANN", "bob", "Bo", "Émile", "émile", "zoë", "x y", "",
];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_string)
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.6, s)
}

fn timestamp() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "2030-01-31T12:00:00Z",
            "2030-01-31T13:00:00+01:00",
            "2029-12-31T23:59:59.5Z",
            "2030-06-01T00:00:00-05:00",
            "2001-01-01T00:00:00Z",
        ][..],
    )
    .prop_map(str::to_string)
}

fn multi(sub: impl Strategy<Value = Map<String, Value>>) -> impl Strategy<Value = Option<Value>> {
    opt(prop::collection::vec(sub, 0..3)
        .prop_map(|v| Value::Array(v.into_iter().map(Value::Object).collect())))
}

fn element() -> impl Strategy<Value = Map<String, Value>> {
    (
        opt(word().prop_map(|w| format!("{w}@Example.org"))),
        opt(prop::sample::select(&["work", "Work", "home", "other"][..])),
        opt(any::<bool>()),
        opt(word()),
    )
        .prop_map(|(value, kind, primary, display)| {
            let mut m = Map::new();
            if let Some(v) = value {
                m.insert("value".into(), json!(v));
            }
            if let Some(t) = kind {
                m.insert("type".into(), json!(t));
            }
            if let Some(p) = primary {
                m.insert("primary".into(), json!(p));
            }
            if let Some(d) = display {
                m.insert("display".into(), json!(d));
            }
            m
        })
}

/// One generated user (its userName is made unique by the caller).
fn user_doc() -> impl Strategy<Value = Map<String, Value>> {
    (
        (
            opt(word()),
            opt(word()),
            opt(word()),
            opt(word()),
            opt(word()),
        ),
        (
            opt(any::<bool>()),
            multi(element()),
            multi(element()),
            opt(word()),
        ),
        (opt(word()), opt(word()), opt(-2i64..5), opt(timestamp())),
        (opt(prop::collection::vec(word(), 0..3)), any::<bool>()),
    )
        .prop_map(
            |(
                (display, title, nick, given, family),
                (active, emails, phones, external),
                (employee, department, level, expiry),
                (facilities, card),
            )| {
                let mut m = Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                };
                put("displayName", display.map(Value::from));
                put("title", title.map(Value::from));
                put("nickName", nick.map(Value::from));
                if given.is_some() || family.is_some() {
                    let mut n = Map::new();
                    if let Some(g) = given {
                        n.insert("givenName".into(), json!(g));
                    }
                    if let Some(f) = family {
                        n.insert("familyName".into(), json!(f));
                    }
                    put("name", Some(Value::Object(n)));
                }
                put("active", active.map(Value::from));
                put("emails", emails);
                put("phoneNumbers", phones);
                put("externalId", external.map(Value::from));
                let mut ent = Map::new();
                if let Some(e) = employee {
                    ent.insert("employeeNumber".into(), json!(e));
                }
                if let Some(d) = department {
                    ent.insert("department".into(), json!(d));
                }
                if !ent.is_empty() {
                    put(ENTERPRISE, Some(Value::Object(ent)));
                }
                let mut pacs = Map::new();
                if let Some(l) = level {
                    pacs.insert("issueLevel".into(), json!(l));
                }
                if let Some(x) = expiry {
                    pacs.insert("cardExpiry".into(), json!(x));
                }
                if let Some(f) = facilities {
                    pacs.insert("facilities".into(), json!(f));
                }
                if card {
                    pacs.insert("cardNumber".into(), json!("CARD"));
                }
                if !pacs.is_empty() {
                    put(PACS, Some(Value::Object(pacs)));
                }
                m
            },
        )
}

/// The generated directory: users, groups (one nested in another), rendered as the
/// engine sees them.
struct Data {
    users: Vec<(String, Value)>,
    groups: Vec<(String, Value)>,
    /// Literal values worth comparing with: what the data holds, cut and recased.
    strings: Vec<String>,
}

async fn load(s: &Store, runner: &mut TestRunner) -> Data {
    let docs = prop::collection::vec(user_doc(), 14..18)
        .new_tree(runner)
        .expect("a data set")
        .current();
    let mut users = Vec::new();
    for (i, mut d) in docs.into_iter().enumerate() {
        let name = match i % 3 {
            0 => format!("User{i}"),
            1 => format!("user{i}"),
            _ => format!("ÜSER{i}"),
        };
        d.insert("userName".into(), json!(name));
        // RFC 7643 §2.4: at most one primary value.
        for attr in ["emails", "phoneNumbers"] {
            if let Some(Value::Array(items)) = d.get_mut(attr) {
                let mut seen = false;
                for e in items.iter_mut() {
                    if e["primary"] == json!(true) {
                        if seen {
                            e["primary"] = json!(false);
                        }
                        seen = true;
                    }
                }
            }
        }
        if let Some(Value::Object(p)) = d.get_mut(PACS)
            && p.contains_key("cardNumber")
        {
            p.insert(
                "cardNumber".into(),
                json!(if i % 2 == 0 {
                    format!("C{i}a")
                } else {
                    format!("c{i}A")
                }),
            );
        }
        let u = create(s, ResourceKind::User, Value::Object(d)).await;
        users.push(u.id);
    }
    let pick = |k: usize| -> Vec<&str> {
        users
            .iter()
            .enumerate()
            .filter(|(i, _)| i % k == 0)
            .map(|(_, id)| id.as_str())
            .collect()
    };
    let inner = group(s, "Staff", &pick(3)).await;
    let mut outer_members = pick(4);
    outer_members.push(&inner.id);
    let outer = group(s, "all STAFF", &outer_members).await;
    let lone = group(s, "émile's", &[]).await;
    let rendered = |kind, ids: Vec<String>| {
        let s = s.clone();
        async move {
            let mut out = Vec::new();
            for id in ids {
                let r = s.get(kind, &id, Load::ALL).await.expect("get");
                out.push((id, render(s.registry(), &r, "")));
            }
            out
        }
    };
    let users = rendered(ResourceKind::User, users).await;
    let groups = rendered(
        ResourceKind::Group,
        vec![inner.id.clone(), outer.id.clone(), lone.id.clone()],
    )
    .await;
    let mut strings: BTreeSet<String> = BTreeSet::new();
    let mut walk = vec![];
    for (_, v) in users.iter().chain(&groups) {
        walk.push(v.clone());
    }
    while let Some(v) = walk.pop() {
        match v {
            Value::String(t) => {
                let chars: Vec<char> = t.chars().collect();
                let n = chars.len();
                for cut in [t.clone(), t.to_uppercase(), t.to_lowercase()] {
                    strings.insert(cut);
                }
                if n > 1 {
                    strings.insert(chars[..n / 2].iter().collect());
                    strings.insert(chars[n / 2..].iter().collect());
                }
            }
            Value::Array(a) => walk.extend(a),
            Value::Object(o) => walk.extend(o.into_values()),
            _ => {}
        }
    }
    strings.insert(String::new());
    strings.insert("nomatch".into());
    Data {
        users,
        groups,
        strings: strings.into_iter().filter(|s| s.len() < 60).collect(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Bool,
    Int,
    Time,
    /// The far end of a membership: strings, no ordering, no null.
    Member,
    /// Complex: presence only.
    Complex,
}

fn path(p: &str) -> AttrPath {
    AttrPath::parse(p).expect("a valid path")
}

fn select_op(ops: &'static [CompareOp]) -> impl Strategy<Value = CompareOp> {
    prop::sample::select(ops)
}

/// An operator and a value that fit an attribute of `kind`.
fn comparison(kind: Kind, strings: &[String]) -> BoxedStrategy<(CompareOp, Literal)> {
    use CompareOp::*;
    let text = prop_oneof![
        8 => prop::sample::select(strings.to_vec()).prop_map(Literal::String),
        1 => prop_oneof![
            (-3i64..6).prop_map(|n| Literal::Number(n.into())),
            any::<bool>().prop_map(Literal::Bool),
        ],
    ];
    match kind {
        Kind::Str => (select_op(&[Eq, Ne, Co, Sw, Ew, Gt, Ge, Lt, Le]), text).boxed(),
        Kind::Member => (select_op(&[Eq, Ne, Co, Sw, Ew]), text).boxed(),
        Kind::Bool => (
            select_op(&[Eq, Ne]),
            prop_oneof![
                any::<bool>().prop_map(Literal::Bool),
                prop::sample::select(&["true", "False"][..])
                    .prop_map(|s| Literal::String(s.into())),
            ],
        )
            .boxed(),
        Kind::Int => (
            select_op(&[Eq, Ne, Gt, Ge, Lt, Le]),
            (-3i64..6).prop_map(|n| Literal::Number(n.into())),
        )
            .boxed(),
        Kind::Time => prop_oneof![
            (
                select_op(&[Eq, Ne, Gt, Ge, Lt, Le]),
                timestamp().prop_map(Literal::String)
            ),
            (
                select_op(&[Co, Sw, Ew]),
                prop::sample::select(&["2030", "2030-01-31T12:00:00Z", ".500000Z", "T23"][..])
                    .prop_map(|s| Literal::String(s.into())),
            ),
        ]
        .boxed(),
        Kind::Complex => Just((Eq, Literal::Null)).boxed(),
    }
}

/// A comparison, presence test or null test on one of `paths`.
fn leaf(paths: Vec<(&'static str, Kind)>, strings: Vec<String>) -> BoxedStrategy<Filter> {
    prop::sample::select(paths)
        .prop_flat_map(move |(p, kind)| {
            let compare = comparison(kind, &strings)
                .prop_map(move |(op, lit)| Filter::Compare(path(p), op, lit));
            let present = Just(Filter::Present(path(p)));
            let null = select_op(&[CompareOp::Eq, CompareOp::Ne])
                .prop_map(move |op| Filter::Compare(path(p), op, Literal::Null));
            match kind {
                Kind::Complex => present.boxed(),
                Kind::Member => prop_oneof![6 => compare, 1 => present].boxed(),
                _ => prop_oneof![6 => compare, 1 => present, 1 => null].boxed(),
            }
        })
        .boxed()
}

fn logic(leaves: BoxedStrategy<Filter>, depth: u32) -> BoxedStrategy<Filter> {
    leaves
        .prop_recursive(depth, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::Or),
                inner.prop_map(Filter::not),
            ]
        })
        .boxed()
}

fn user_filter(data: &Data) -> BoxedStrategy<Filter> {
    use Kind::*;
    let mut strings = data.strings.clone();
    strings.extend(data.groups.iter().map(|(id, _)| id.clone()));
    strings.extend(data.users.iter().take(3).map(|(id, _)| id.clone()));
    let top = vec![
        ("userName", Str),
        ("displayName", Str),
        ("title", Str),
        ("nickName", Str),
        ("externalId", Str),
        ("id", Str),
        ("name.givenName", Str),
        ("name.familyName", Str),
        ("name", Complex),
        ("emails", Str),
        ("emails.value", Str),
        ("emails.type", Str),
        ("emails.display", Str),
        ("emails.primary", Bool),
        ("phoneNumbers.value", Str),
        ("phoneNumbers", Str),
        ("addresses", Complex),
        ("active", Bool),
        ("employeeNumber", Str),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            Str,
        ),
        ("cardNumber", Str),
        ("issueLevel", Int),
        ("cardExpiry", Time),
        ("facilities", Str),
        ("groups", Member),
        ("groups.value", Member),
        ("groups.display", Member),
        ("meta.lastModified", Time),
        ("meta.created", Time),
        ("meta.resourceType", Str),
    ];
    let element_paths = vec![
        ("value", Str),
        ("type", Str),
        ("display", Str),
        ("primary", Bool),
    ];
    let group_paths = vec![("value", Member), ("display", Member)];
    let elements = (
        prop::sample::select(&["emails", "phoneNumbers"][..]),
        logic(leaf(element_paths, strings.clone()), 2),
    )
        .prop_map(|(p, inner)| Filter::ValuePath(path(p), Box::new(inner)));
    let groups = (
        logic(leaf(group_paths, strings.clone()), 1),
        prop::sample::select(&[None, Some("direct"), Some("indirect")][..]),
    )
        .prop_map(|(inner, nesting)| {
            let inner = match nesting {
                Some(n) => Filter::And(vec![inner, Filter::eq(AttrPath::simple("type"), n)]),
                None => inner,
            };
            Filter::ValuePath(path("groups"), Box::new(inner))
        });
    let schemas = prop::sample::select(vec![
        "urn:ietf:params:scim:schemas:core:2.0:User".to_string(),
        ENTERPRISE.to_string(),
        PACS.to_string(),
        "urn:example:nope".to_string(),
    ])
    .prop_map(|s| Filter::Compare(path("schemas"), CompareOp::Eq, Literal::String(s)));
    let leaves = prop_oneof![
        8 => leaf(top, strings),
        2 => elements,
        1 => groups,
        1 => schemas,
    ]
    .boxed();
    logic(leaves, 3)
}

fn group_filter(data: &Data) -> BoxedStrategy<Filter> {
    use Kind::*;
    let mut strings = data.strings.clone();
    strings.extend(data.users.iter().take(6).map(|(id, _)| id.clone()));
    strings.extend(data.groups.iter().map(|(id, _)| id.clone()));
    strings.extend(["User".to_string(), "group".to_string()]);
    let top = vec![
        ("displayName", Str),
        ("members", Member),
        ("members.value", Member),
        ("members.display", Member),
        ("members.type", Member),
        ("id", Str),
    ];
    let members = logic(
        leaf(
            vec![("value", Member), ("display", Member), ("type", Member)],
            strings.clone(),
        ),
        1,
    )
    .prop_map(|inner| Filter::ValuePath(path("members"), Box::new(inner)));
    logic(
        prop_oneof![3 => leaf(top, strings), 1 => members].boxed(),
        3,
    )
}

/// The ids the database selects for `f`, or None when the filter is not accepted.
async fn by_sql(
    s: &Store,
    kind: ResourceKind,
    f: &Filter,
) -> Option<Result<BTreeSet<String>, String>> {
    let text = f.to_string();
    let parsed = Filter::parse(&text).ok()?;
    let rf = resolve(s.registry(), kind, &parsed).ok()?;
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
        .await;
    Some(
        page.map(|p| p.resources.into_iter().map(|r| r.id).collect())
            .map_err(|e| e.to_string()),
    )
}

fn in_memory(
    s: &Store,
    kind: ResourceKind,
    items: &[(String, Value)],
    f: &Filter,
) -> Result<BTreeSet<String>, String> {
    let parsed = Filter::parse(&f.to_string())?;
    let mut out = BTreeSet::new();
    for (id, v) in items {
        if matches(s.registry(), kind, v, &parsed)? {
            out.insert(id.clone());
        }
    }
    Ok(out)
}

/// Filters compared, and filters the parser or resolver refused (not compared).
static COMPARED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

fn agree(
    rt: &tokio::runtime::Runtime,
    s: &Store,
    kind: ResourceKind,
    items: &[(String, Value)],
    f: &Filter,
) -> Result<(), TestCaseError> {
    let Some(sql) = rt.block_on(by_sql(s, kind, f)) else {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    COMPARED.fetch_add(1, Ordering::Relaxed);
    let sql = sql.map_err(|e| TestCaseError::fail(format!("SQL failed: {e}")))?;
    let mem = in_memory(s, kind, items, f)
        .map_err(|e| TestCaseError::fail(format!("{f}: in memory: {e}")))?;
    if sql != mem {
        let differ: Vec<String> = items
            .iter()
            .filter(|(id, _)| sql.contains(id) != mem.contains(id))
            .map(|(id, v)| {
                format!(
                    "SQL {} / memory {}: {v}",
                    sql.contains(id),
                    mem.contains(id)
                )
            })
            .collect();
        return Err(TestCaseError::fail(format!("{f}\n{}", differ.join("\n"))));
    }
    Ok(())
}

#[test]
fn sql_and_in_memory_evaluation_agree() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for round in 0..2u64 {
        let mut runner = runner(round);
        let s = rt.block_on(store());
        let data = rt.block_on(load(&s, &mut runner));
        let mut runner = self::runner(round + 100);
        let users = user_filter(&data);
        if let Err(e) = runner.run(&users, |f| {
            agree(&rt, &s, ResourceKind::User, &data.users, &f)
        }) {
            panic!("round {round}, users: {}", failure(e));
        }
        let groups = group_filter(&data);
        let mut runner = self::runner(round + 200);
        if let Err(e) = runner.run(&groups, |f| {
            agree(&rt, &s, ResourceKind::Group, &data.groups, &f)
        }) {
            panic!("round {round}, groups: {}", failure(e));
        }
    }
    let (compared, refused) = (
        COMPARED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
    );
    eprintln!("{compared} filters compared, {refused} refused by the parser or resolver");
    assert!(
        compared > 3 * refused,
        "the generator mostly makes accepted filters"
    );
}

fn failure(e: proptest::test_runner::TestError<Filter>) -> String {
    match e {
        proptest::test_runner::TestError::Fail(why, f) => format!("minimal filter {f}: {why}"),
        other => other.to_string(),
    }
}

/// The disagreements the property test found, each with the answer both evaluators now
/// give, over a small data set.
#[test]
fn disagreements_found_stay_fixed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = store().await;
        let a = create(
            &s,
            ResourceKind::User,
            json!({"userName": "Ann", "displayName": "Émile", "nickName": "", "name": {"givenName": ""},
                   "emails": [{"type": "work"}], PACS: {"cardExpiry": "2030-01-31T13:00:00+01:00"}}),
        )
        .await;
        let b = create(
            &s,
            ResourceKind::User,
            json!({"userName": "bob", "displayName": "", "title": "0", "emails": [{"value": "b@x.org"}]}),
        )
        .await;
        let c = user(&s, "carol").await;
        let inner = group(&s, "Staff", &[&a.id]).await;
        let outer = group(&s, "all STAFF", &[&a.id, &inner.id]).await;
        let lone = group(&s, "lone", &[&b.id]).await;
        let name_of = |id: &str| -> String {
            [(&a.id, "Ann"), (&b.id, "bob"), (&c.id, "carol"), (&inner.id, "Staff"), (&outer.id, "all STAFF"), (&lone.id, "lone")]
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, n)| n.to_string())
                .unwrap_or_default()
        };
        let mut users = Vec::new();
        for id in [&a.id, &b.id, &c.id] {
            let r = s.get(ResourceKind::User, id, Load::ALL).await.unwrap();
            users.push((id.clone(), render(s.registry(), &r, "")));
        }
        let mut groups = Vec::new();
        for id in [&inner.id, &outer.id, &lone.id] {
            let r = s.get(ResourceKind::Group, id, Load::ALL).await.unwrap();
            groups.push((id.clone(), render(s.registry(), &r, "")));
        }
        let cases: Vec<(ResourceKind, String, Vec<&str>)> = vec![
            // A missing sub-attribute is not `ne null`; "" is no value.
            (ResourceKind::User, r#"not (emails[(value ne null or value eq "")])"#.into(), vec!["Ann", "carol"]),
            (ResourceKind::User, "name pr or nickName pr".into(), vec![]),
            (ResourceKind::User, "nickName eq null".into(), vec!["Ann", "bob", "carol"]),
            (ResourceKind::User, "emails pr".into(), vec!["Ann", "bob"]),
            // Substrings of a dateTime match its canonical text as written.
            (ResourceKind::User, r#"cardExpiry co "2030-01-31T12:00:00Z""#.into(), vec![]),
            (ResourceKind::User, r#"cardExpiry sw "2030-01-31T12""#.into(), vec!["Ann"]),
            (ResourceKind::User, r#"cardExpiry eq "2030-01-31T12:00:00Z""#.into(), vec!["Ann"]),
            // ne on a membership: no group has that id.
            (ResourceKind::User, r#"not (groups ne "")"#.into(), vec![]),
            (ResourceKind::User, format!(r#"groups.value ne "{}""#, outer.id), vec!["bob", "carol"]),
            // A group a user is directly in is "direct", whatever other paths lead there.
            (ResourceKind::User, format!(r#"groups[value eq "{}" and type eq "indirect"]"#, outer.id), vec![]),
            (ResourceKind::User, format!(r#"groups[value eq "{}" and type eq "direct"]"#, outer.id), vec!["Ann"]),
            // SQLite's substr(x, -0) is the whole string.
            (ResourceKind::User, r#"not (id ew "")"#.into(), vec![]),
            (ResourceKind::User, r#"groups.value ew """#.into(), vec!["Ann", "bob"]),
            // Numbers and booleans compared with strings compare as text, folded.
            (ResourceKind::User, "userName co 0 or title eq 1".into(), vec![]),
            (ResourceKind::User, "title eq 0".into(), vec!["bob"]),
            (ResourceKind::User, "userName lt false".into(), vec!["Ann", "bob", "carol"]),
            (ResourceKind::User, "emails[value gt 0 and value pr]".into(), vec!["bob"]),
            // Member fields are caseExact false, with Unicode folding.
            (ResourceKind::Group, r#"members[type co "us"]"#.into(), vec!["Staff", "all STAFF", "lone"]),
            (ResourceKind::Group, format!(r#"members.value eq "{}""#, a.id.to_uppercase()), vec!["Staff", "all STAFF"]),
            (ResourceKind::Group, r#"members.display co "ém""#.into(), vec!["Staff", "all STAFF"]),
            // A member without a display (bob's is "") has none to compare.
            (ResourceKind::Group, r#"not (members.display eq "")"#.into(), vec!["Staff", "all STAFF", "lone"]),
            (ResourceKind::Group, r#"members[not (display eq "Émile")]"#.into(), vec!["all STAFF", "lone"]),
            (ResourceKind::Group, r#"members.display ne "staff""#.into(), vec!["Staff", "lone"]),
        ];
        for (kind, text, want) in cases {
            let f = Filter::parse(&text).unwrap();
            let items = if kind == ResourceKind::User { &users } else { &groups };
            let sql = by_sql(&s, kind, &f).await.expect("accepted").expect("SQL runs");
            let mem = in_memory(&s, kind, items, &f).expect("evaluates");
            let names = |ids: &BTreeSet<String>| {
                let mut v: Vec<String> = ids.iter().map(|i| name_of(i)).collect();
                v.sort();
                v
            };
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(names(&sql), want, "SQL: {text}");
            assert_eq!(names(&mem), want, "in memory: {text}");
        }
    });
}
