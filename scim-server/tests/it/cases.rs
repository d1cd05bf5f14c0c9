//! Every shipped conformance case, against a fresh hub.

use std::collections::HashMap;

use conformance::{Target, load_cases, run_case};
use serde_json::json;

use super::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_conformance_cases_pass() {
    let hub = Hub::start().await;
    let readonly = hub.token("readonly", &["users:read"], None).await;
    let groups = hub
        .token("groups", &["groups:read", "groups:write"], None)
        .await;
    let client = hub.client();
    let me = client
        .post(hub.url("/Users"))
        .bearer_auth(&hub.token)
        .json(&json!({"userName": "me-user"}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let me_id = me["id"].as_str().unwrap().to_string();
    let me_token = hub.token("me", &["users:read"], Some(&me_id)).await;
    let vars = HashMap::from([
        ("token".to_string(), hub.token.clone()),
        ("readonly_token".to_string(), readonly),
        ("groups_token".to_string(), groups),
        ("me_token".to_string(), me_token),
        ("me_user_id".to_string(), me_id),
    ]);
    let target = Target {
        base_url: hub.base_url.clone(),
        vars,
    };
    let cases = load_cases(&conformance::default_cases_dir()).unwrap();
    let mut report = Vec::new();
    let mut ran = 0;
    for (file, case) in &cases {
        let o = run_case(&client, &target, file, case).await;
        ran += 1;
        if let Some(why) = o.skipped {
            report.push(format!("SKIPPED {file}: {} ({why})", o.name));
        } else if !o.failures.is_empty() {
            report.push(format!(
                "FAILED {file}: {}\n    {}",
                o.name,
                o.failures.join("\n    ")
            ));
        }
    }
    assert!(ran > 30, "only {ran} cases ran");
    assert!(
        report.is_empty(),
        "{} of {ran} cases did not pass:\n{}",
        report.len(),
        report.join("\n")
    );
    hub.stop().await;
}
