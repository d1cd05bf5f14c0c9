use serde_json::json;
use store::filter::{AttrPath, Filter, resolve, resolve_sort_path};
use store::{Load, Paging, Query, ResourceKind, SortOrder};

use super::*;

async fn people() -> Store {
    let s = store().await;
    for (name, given, family, email, active, emp) in [
        ("alice", "Alice", "Archer", "alice@work.example", true, 10),
        ("bob", "Bob", "Baker", "bob@home.example", true, 20),
        ("Carol", "Carol", "Cooper", "carol@work.example", false, 30),
        ("dave", "Dave", "O'Malley", "dave@other.example", true, 40),
    ] {
        create(
            &s,
            ResourceKind::User,
            json!({
                "userName": name,
                "name": {"givenName": given, "familyName": family},
                "emails": [{"value": email, "type": if email.contains("work") {"work"} else {"home"}}],
                "active": active,
                "title": if active { Some("Engineer") } else { None },
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": emp.to_string(), "department": "R&D"},
                "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder": {"cardExpiry": format!("2027-0{}-01T00:00:00Z", emp / 10), "facilities": ["HQ", format!("B{emp}")]}
            }),
        )
        .await;
    }
    s
}

#[tokio::test]
async fn every_operator_on_strings() {
    let s = people().await;
    let n = |f: &'static str| {
        let s = s.clone();
        async move { names(&s, ResourceKind::User, f).await.unwrap() }
    };
    assert_eq!(
        n(r#"userName eq "ALICE""#).await,
        ["alice"],
        "userName is caseExact=false"
    );
    assert_eq!(n(r#"userName ne "alice""#).await, ["bob", "Carol", "dave"]);
    assert_eq!(n(r#"name.familyName co "mall""#).await, ["dave"]);
    assert_eq!(n(r#"name.familyName sw "b""#).await, ["bob"]);
    assert_eq!(
        n(r#"emails.value ew "@WORK.example""#).await,
        ["alice", "Carol"]
    );
    assert_eq!(n(r#"userName gt "bob""#).await, ["Carol", "dave"]);
    assert_eq!(n(r#"userName ge "bob""#).await, ["bob", "Carol", "dave"]);
    assert_eq!(n(r#"userName lt "bob""#).await, ["alice"]);
    assert_eq!(n(r#"userName le "bob""#).await, ["alice", "bob"]);
    assert_eq!(n(r#"title pr"#).await, ["alice", "bob", "dave"]);
    assert_eq!(n(r#"not (title pr)"#).await, ["Carol"]);
    assert_eq!(n(r#"title eq null"#).await, ["Carol"]);
}

#[tokio::test]
async fn booleans_numbers_datetimes_and_extensions() {
    let s = people().await;
    let n = |f: &'static str| {
        let s = s.clone();
        async move { names(&s, ResourceKind::User, f).await.unwrap() }
    };
    assert_eq!(n("active eq false").await, ["Carol"]);
    assert_eq!(n(r#"active eq "True""#).await, ["alice", "bob", "dave"]);
    assert_eq!(
        n(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "20""#)
            .await,
        ["bob"]
    );
    assert_eq!(n(r#"employeeNumber sw "3""#).await, ["Carol"]);
    assert_eq!(
        n(r#"urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:cardExpiry ge "2027-03-01T00:00:00+00:00""#).await,
        ["Carol", "dave"]
    );
    assert_eq!(n(r#"facilities eq "b20""#).await, ["bob"]);
    assert_eq!(
        n(r#"meta.created gt "2000-01-01T00:00:00Z""#).await.len(),
        4
    );
    assert_eq!(
        n(r#"meta.lastModified lt "2000-01-01T00:00:00Z""#)
            .await
            .len(),
        0
    );
    assert_eq!(
        n(r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#)
            .await
            .len(),
        4
    );
    assert_eq!(n(r#"meta.resourceType eq "User""#).await.len(), 4);
}

#[tokio::test]
async fn logic_grouping_and_value_paths() {
    let s = people().await;
    let n = |f: &'static str| {
        let s = s.clone();
        async move { names(&s, ResourceKind::User, f).await.unwrap() }
    };
    assert_eq!(
        n(r#"active eq true and (userName eq "alice" or userName eq "dave")"#).await,
        ["alice", "dave"]
    );
    assert_eq!(
        n(r#"userName eq "alice" or userName eq "bob" and active eq false"#).await,
        ["alice"]
    );
    assert_eq!(
        n(r#"emails[type eq "work" and value co "alice"]"#).await,
        ["alice"]
    );
    // Both conditions must hold for the same email.
    assert_eq!(
        n(r#"emails[type eq "home" and value co "alice"]"#).await,
        Vec::<String>::new()
    );
    assert_eq!(n(r#"emails[not (type eq "work")]"#).await, ["bob", "dave"]);
    assert_eq!(
        n(r#"emails co "other""#).await,
        ["dave"],
        "a complex attribute compares its value"
    );
}

#[tokio::test]
async fn unknown_attributes_and_type_errors_are_rejected() {
    let s = people().await;
    for f in [
        r#"nosuch eq "x""#,
        r#"name.nosuch eq "x""#,
        r#"active gt true"#,
        r#"employeeNumber gt 5 and foo pr"#,
    ] {
        assert!(names(&s, ResourceKind::User, f).await.is_err(), "{f}");
    }
}

#[tokio::test]
async fn sorting_is_stable_with_missing_values_last() {
    let s = people().await;
    let sorted = |path: &str, order: SortOrder| {
        let s = s.clone();
        let path = path.to_string();
        async move {
            let target = resolve_sort_path(
                s.registry(),
                ResourceKind::User,
                &AttrPath::parse(&path).unwrap(),
            )
            .unwrap()
            .target;
            let page = s
                .query(
                    ResourceKind::User,
                    &Query {
                        filter: None,
                        sort: Some((target, order)),
                        paging: Paging::Index {
                            start: 1,
                            count: 10,
                        },
                        load: Load::NONE,
                    },
                )
                .await
                .unwrap();
            page.resources
                .iter()
                .map(|r| r.doc["userName"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        sorted("name.familyName", SortOrder::Descending).await,
        ["dave", "Carol", "bob", "alice"]
    );
    assert_eq!(
        sorted("userName", SortOrder::Ascending).await,
        ["alice", "bob", "Carol", "dave"]
    );
    assert_eq!(
        sorted("title", SortOrder::Ascending).await,
        ["alice", "bob", "dave", "Carol"]
    );
    assert_eq!(
        sorted("title", SortOrder::Descending).await,
        ["Carol", "dave", "bob", "alice"]
    );
}

#[tokio::test]
async fn cursor_pages_walk_forward_and_back() {
    let s = store().await;
    for i in 0..23 {
        user(&s, &format!("u{i:02}")).await;
    }
    let page = |cursor: Option<String>| {
        let s = s.clone();
        async move {
            s.query(
                ResourceKind::User,
                &Query {
                    filter: None,
                    sort: None,
                    paging: Paging::Cursor { cursor, count: 10 },
                    load: Load::NONE,
                },
            )
            .await
            .unwrap()
        }
    };
    let first = page(None).await;
    assert_eq!(first.total, 23);
    assert_eq!(first.resources.len(), 10);
    assert!(first.previous_cursor.is_none());
    let second = page(first.next_cursor.clone()).await;
    assert_eq!(second.resources[0].doc["userName"], "u10");
    // A resource created meanwhile does not shift pages.
    user(&s, "late").await;
    let third = page(second.next_cursor.clone()).await;
    assert_eq!(third.resources.len(), 4);
    assert_eq!(third.resources[0].doc["userName"], "u20");
    assert!(third.next_cursor.is_none());
    let back = page(third.previous_cursor.clone()).await;
    assert_eq!(back.resources[0].doc["userName"], "u10");
    assert_eq!(back.resources.len(), 10);
    let back2 = page(back.previous_cursor.clone()).await;
    assert_eq!(back2.resources[0].doc["userName"], "u00");
    assert!(back2.previous_cursor.is_none());

    // A cursor of another query is refused.
    let f = resolve(
        s.registry(),
        ResourceKind::User,
        &Filter::parse("userName pr").unwrap(),
    )
    .unwrap();
    let err = s
        .query(
            ResourceKind::User,
            &Query {
                filter: Some(f),
                sort: None,
                paging: Paging::Cursor {
                    cursor: first.next_cursor,
                    count: 10,
                },
                load: Load::NONE,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, store::StoreError::InvalidCursor(_)));
}

#[tokio::test]
async fn cursor_pages_with_descending_sort_and_nulls() {
    let s = store().await;
    for i in 0..7 {
        let title = if i % 2 == 0 {
            json!(format!("t{}", i % 3))
        } else {
            json!(null)
        };
        create(
            &s,
            ResourceKind::User,
            json!({"userName": format!("u{i}"), "title": title}),
        )
        .await;
    }
    let target = resolve_sort_path(s.registry(), ResourceKind::User, &AttrPath::simple("title"))
        .unwrap()
        .target;
    let all = s
        .query(
            ResourceKind::User,
            &Query {
                filter: None,
                sort: Some((target.clone(), SortOrder::Descending)),
                paging: Paging::Index {
                    start: 1,
                    count: 100,
                },
                load: Load::NONE,
            },
        )
        .await
        .unwrap();
    let expected: Vec<String> = all.resources.iter().map(|r| r.id.clone()).collect();
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let p = s
            .query(
                ResourceKind::User,
                &Query {
                    filter: None,
                    sort: Some((target.clone(), SortOrder::Descending)),
                    paging: Paging::Cursor { cursor, count: 2 },
                    load: Load::NONE,
                },
            )
            .await
            .unwrap();
        walked.extend(p.resources.iter().map(|r| r.id.clone()));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(walked, expected);
}

#[tokio::test]
async fn membership_filters_follow_nesting() {
    let s = store().await;
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let physicians = group(&s, "Physicians", &[&a.id]).await;
    let hospital = group(&s, "Hospital A", &[&physicians.id, &b.id]).await;
    let u = |f: String| {
        let s = s.clone();
        async move { names(&s, ResourceKind::User, &f).await.unwrap() }
    };
    assert_eq!(
        u(format!(r#"groups.value eq "{}""#, hospital.id)).await,
        ["a", "b"]
    );
    assert_eq!(
        u(format!(
            r#"groups[value eq "{}" and type eq "direct"]"#,
            hospital.id
        ))
        .await,
        ["b"]
    );
    assert_eq!(
        u(format!(
            r#"groups[value eq "{}" and type eq "indirect"]"#,
            hospital.id
        ))
        .await,
        ["a"]
    );
    assert_eq!(
        u(r#"groups.display eq "hospital a""#.into()).await,
        ["a", "b"]
    );
    let g = names(
        &s,
        ResourceKind::Group,
        &format!(r#"members.value eq "{}""#, a.id),
    )
    .await
    .unwrap();
    assert_eq!(g, ["Physicians"]);
    let g = names(&s, ResourceKind::Group, r#"members[type eq "group"]"#)
        .await
        .unwrap();
    assert_eq!(g, ["Hospital A"]);
}
