//! Filters and PATCH paths of hostile size: a PATCH whose path was
//! `emails[value eq "0" or … 30,000 terms]` used to overflow a worker's stack and abort the
//! process (directly, through /Bulk, on `members[…]`). Now every filter and path filter is
//! held to scim.max_filter_length / _depth / _terms, refused with 400 invalidFilter naming
//! the limit, and the hub keeps serving.

use serde_json::{Value, json};

use crate::Hub;

fn chain(n: usize, term: impl Fn(usize) -> String) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(" or ")
}

fn patch(path: &str, op: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": op, "path": path, "value": "x@example.org"}]
    })
}

async fn send(hub: &Hub, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = hub
        .client()
        .request(method.parse().unwrap(), hub.url(path))
        .bearer_auth(&hub.token)
        .header("Content-Type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn assert_limit(status: u16, body: &Value, key: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["scimType"], "invalidFilter", "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(key), "{detail}");
    assert!(detail.len() < 400, "the error does not echo the path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_paths_past_the_limits_are_refused_and_the_hub_keeps_serving() {
    let hub = Hub::start().await;
    let (_, u) = send(
        &hub,
        "POST",
        "/Users",
        &json!({"userName": "target", "emails": [{"value": "t@example.org", "type": "work"}]}),
    )
    .await;
    let uid = u["id"].as_str().unwrap().to_string();
    let version = u["meta"]["version"].clone();
    let (_, m1) = send(&hub, "POST", "/Users", &json!({"userName": "m1"})).await;
    let (_, m2) = send(&hub, "POST", "/Users", &json!({"userName": "m2"})).await;
    let (m1, m2) = (m1["id"].as_str().unwrap(), m2["id"].as_str().unwrap());
    let (_, g) = send(
        &hub,
        "POST",
        "/Groups",
        &json!({"displayName": "staff", "members": [{"value": m1}, {"value": m2}]}),
    )
    .await;
    let gid = g["id"].as_str().unwrap().to_string();

    // The repro: 30,000 terms, over 500 KB, under the body limit.
    let terms = chain(30_000, |i| format!("value eq \"{i}\""));
    assert!(terms.len() > 500_000 && terms.len() < 1_000_000);
    for (path, op) in [
        (format!("emails[{terms}]"), "replace"),
        (format!("emails[{terms}].value"), "replace"),
        (format!("emails[{terms}]"), "remove"),
    ] {
        let (status, body) = send(&hub, "PATCH", &format!("/Users/{uid}"), &patch(&path, op)).await;
        assert_limit(status, &body, "scim.max_filter_length");
    }
    let (status, body) = send(
        &hub,
        "PATCH",
        &format!("/Groups/{gid}"),
        &patch(&format!("members[{terms}]"), "remove"),
    )
    .await;
    assert_limit(status, &body, "scim.max_filter_length");
    // Through /Bulk, for both resources.
    let bulk = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "PATCH", "path": format!("/Users/{uid}"), "data": patch(&format!("emails[{terms}]"), "replace")},
        ]
    });
    let (status, body) = send(&hub, "POST", "/Bulk", &bulk).await;
    assert_eq!(status, 200, "{body}");
    let op = &body["Operations"][0];
    assert_eq!(op["status"], "400", "{op}");
    assert_eq!(op["response"]["scimType"], "invalidFilter", "{op}");
    let bulk = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "PATCH", "path": format!("/Groups/{gid}"), "data": patch(&format!("members[{}]", chain(1001, |i| format!("value eq \"{i}\""))), "remove")},
        ]
    });
    let (_, body) = send(&hub, "POST", "/Bulk", &bulk).await;
    let op = &body["Operations"][0];
    assert_eq!(op["status"], "400", "{op}");
    assert!(
        op["response"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1000 terms") && d.contains("scim.max_filter_terms")),
        "{op}"
    );
    // Within the length limit, past the term and the depth limits.
    let (status, body) = send(
        &hub,
        "PATCH",
        &format!("/Users/{uid}"),
        &patch(
            &format!("emails[{}]", chain(1001, |i| format!("value eq \"{i}\""))),
            "remove",
        ),
    )
    .await;
    assert_limit(status, &body, "scim.max_filter_terms");
    let deep = format!("emails[{}value pr{}]", "(".repeat(40), ")".repeat(40));
    let (status, body) = send(
        &hub,
        "PATCH",
        &format!("/Users/{uid}"),
        &patch(&deep, "remove"),
    )
    .await;
    assert_limit(status, &body, "scim.max_filter_depth");

    // Nothing was written, and the hub still serves.
    let (status, u) = send(&hub, "GET", &format!("/Users/{uid}"), &Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(u["emails"][0]["value"], "t@example.org");
    assert_eq!(u["meta"]["version"], version);
    let (status, g) = send(&hub, "GET", &format!("/Groups/{gid}"), &Value::Null).await;
    assert_eq!(
        (status, g["members"].as_array().map(Vec::len)),
        (200, Some(2))
    );

    // A membership removal naming hundreds of ids (an id equality of the length real
    // clients send) works: 999 unknown ids and one member.
    let ids = format!(
        "{} or value eq \"{m1}\"",
        chain(999, |i| format!(
            "value eq \"00000000-0000-4000-8000-{i:012}\""
        ))
    );
    let (status, body) = send(
        &hub,
        "PATCH",
        &format!("/Groups/{gid}"),
        &patch(&format!("members[{ids}]"), "remove"),
    )
    .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let (_, g) = send(&hub, "GET", &format!("/Groups/{gid}"), &Value::Null).await;
    let left: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert_eq!(left, [m2]);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_filters_past_the_limits_are_refused() {
    let hub = Hub::start().await;
    for name in ["alice", "bob", "carol"] {
        send(&hub, "POST", "/Users", &json!({"userName": name})).await;
    }
    let c = hub.client();
    let get = |filter: String| {
        let c = c.clone();
        let url = hub.url("/Users");
        let token = hub.token.clone();
        async move {
            let r = c
                .get(url)
                .query(&[("filter", filter)])
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let names = |body: &Value| -> Vec<String> {
        body["Resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["userName"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, body) = get(chain(1001, |i| format!("userName eq \"u{i}\""))).await;
    assert_limit(status, &body, "scim.max_filter_terms");
    let (status, body) = get(format!("{}userName pr{}", "(".repeat(33), ")".repeat(33))).await;
    assert_limit(status, &body, "scim.max_filter_depth");
    let huge = chain(30_000, |i| format!("userName eq \"u{i}\""));
    for path in ["/Users/.search", "/.search"] {
        let (status, body) = send(
            &hub,
            "POST",
            path,
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": huge}),
        )
        .await;
        assert_limit(status, &body, "scim.max_filter_length");
    }
    // 1,000 equalities: one IN list, answered.
    let ok = format!(
        "{} or userName eq \"BOB\"",
        chain(999, |i| format!("userName eq \"u{i}\""))
    );
    let (status, body) = send(
        &hub,
        "POST",
        "/Users/.search",
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": ok}),
    )
    .await;
    assert_eq!(
        (status, names(&body)),
        (200, vec!["bob".to_string()]),
        "{body}"
    );
    let (status, body) = get("userName eq \"alice\"".into()).await;
    assert_eq!((status, names(&body)), (200, vec!["alice".to_string()]));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_configurable() {
    let hub = Hub::start_with(|c| {
        c.scim.max_filter_terms = 2;
        c.scim.max_filter_depth = 1;
    })
    .await;
    let c = hub.client();
    let status = |filter: &'static str| {
        let c = c.clone();
        let url = hub.url("/Users");
        let token = hub.token.clone();
        async move {
            c.get(url)
                .query(&[("filter", filter)])
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("userName pr or title pr").await, 200);
    assert_eq!(status("userName pr or title pr or nickName pr").await, 400);
    assert_eq!(status("(userName pr)").await, 200);
    assert_eq!(status("((userName pr))").await, 400);
    hub.stop().await;
    let mut cfg = scim_server::config::Config::defaults();
    cfg.scim.max_filter_terms = 2001;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("scim.max_filter_terms") && e.contains("2000"),
        "{e}"
    );
    cfg.scim.max_filter_terms = 1000;
    cfg.ldap.max_filter_terms = 0;
    assert!(cfg.validate().is_err());
}
