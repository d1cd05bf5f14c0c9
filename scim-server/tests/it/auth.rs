//! JWT bearer tokens (HS256, RS256, ES256, JWKS), scopes from a claim, and audited failures.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use store::AuditFilter;

use super::Hub;

fn fixture(name: &str) -> String {
    format!("{}/tests/it/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

async fn status(hub: &Hub, token: &str, method: &str, path: &str) -> u16 {
    let c = hub.client();
    let req = match method {
        "POST" => c
            .post(hub.url(path))
            .json(&json!({"userName": format!("jwt-{}", uuid::Uuid::new_v4())})),
        _ => c.get(hub.url(path)),
    };
    req.bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_with_issuer_audience_expiry_and_scopes() {
    let hub = Hub::start_with(|c| {
        c.auth.jwt.hs256_secret = "test-secret-of-sufficient-length-0123456789".into();
        c.auth.jwt.issuer = "https://idp.example".into();
        c.auth.jwt.audience = "scimhub".into();
    })
    .await;
    let key = EncodingKey::from_secret(b"test-secret-of-sufficient-length-0123456789");
    let good = json!({"sub": "hr-connector", "iss": "https://idp.example", "aud": "scimhub", "exp": now() + 300, "scope": "users:read users:write"});
    let t = sign(Algorithm::HS256, &key, None, good.clone());
    assert_eq!(status(&hub, &t, "GET", "/Users").await, 200);
    assert_eq!(status(&hub, &t, "POST", "/Users").await, 201);
    assert_eq!(
        status(&hub, &t, "GET", "/Groups").await,
        403,
        "no groups scope"
    );

    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("other");
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::HS256, &key, None, wrong_aud),
            "GET",
            "/Users"
        )
        .await,
        401
    );
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::HS256, &key, None, wrong_iss),
            "GET",
            "/Users"
        )
        .await,
        401
    );
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::HS256, &key, None, expired),
            "GET",
            "/Users"
        )
        .await,
        401
    );
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-entirely-0123456789abcdef"),
        None,
        good.clone(),
    );
    assert_eq!(status(&hub, &forged, "GET", "/Users").await, 401);
    let mut array_scopes = good.clone();
    array_scopes["scope"] = json!(["groups:read"]);
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::HS256, &key, None, array_scopes),
            "GET",
            "/Groups"
        )
        .await,
        200
    );

    // The successful write names the JWT subject; failures are audited.
    let audit = hub
        .store
        .audit_query(
            &AuditFilter {
                actor: Some("jwt:hr-connector".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert!(audit.iter().any(|r| r.entry.action == "user.create"));
    let denied = hub
        .store
        .audit_query(
            &AuditFilter {
                outcome: Some("denied".into()),
                ..Default::default()
            },
            None,
            50,
        )
        .await
        .unwrap();
    assert!(denied.iter().any(|r| r.entry.action == "auth.failure" && r.entry.detail.to_string().contains("JWT")));
    assert!(denied.iter().any(|r| r.entry.action == "auth.forbidden"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_es256_and_jwks_keys() {
    let rsa_priv = std::fs::read(fixture("rsa-private.pem")).unwrap();
    let ec_priv = std::fs::read(fixture("ec-private.pem")).unwrap();
    let rsa_key = EncodingKey::from_rsa_pem(&rsa_priv).unwrap();
    let ec_key = EncodingKey::from_ec_pem(&ec_priv).unwrap();
    let claims = json!({"sub": "okta", "exp": now() + 300, "scope": "admin"});

    let hub = Hub::start_with(|c| {
        c.auth.jwt.rs256_public_key_file = fixture("rsa-public.pem");
        c.auth.jwt.es256_public_key_file = fixture("ec-public.pem");
    })
    .await;
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::RS256, &rsa_key, None, claims.clone()),
            "GET",
            "/Users"
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::ES256, &ec_key, None, claims.clone()),
            "GET",
            "/Users"
        )
        .await,
        200
    );
    hub.stop().await;

    // A JWKS file with key ids.
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let dir = std::env::temp_dir().join(format!("scimhub-jwks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&json!({"keys": [jwk]})).unwrap(),
    )
    .unwrap();
    let hub = Hub::start_with(|c| c.auth.jwt.jwks_file = jwks.display().to_string()).await;
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::RS256, &rsa_key, Some("k1"), claims.clone()),
            "GET",
            "/Users"
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &hub,
            &sign(Algorithm::ES256, &ec_key, Some("k1"), claims.clone()),
            "GET",
            "/Users"
        )
        .await,
        401
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_can_be_opened_and_revoked_tokens_fail() {
    let hub = Hub::start_with(|c| c.auth.discovery_requires_auth = false).await;
    let c = hub.client();
    assert_eq!(
        c.get(hub.url("/ServiceProviderConfig"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(hub.url("/Users")).send().await.unwrap().status(),
        401,
        "only discovery opens"
    );
    let t = hub.token("temp", &["users:read"], None).await;
    assert_eq!(status(&hub, &t, "GET", "/Users").await, 200);
    hub.store
        .revoke_token("temp", &store::Actor::cli())
        .await
        .unwrap();
    assert_eq!(status(&hub, &t, "GET", "/Users").await, 401);
    hub.stop().await;
}

/// A 401's detail and its challenge.
async fn refusal(hub: &Hub, token: &str) -> (u16, String, String) {
    let r = hub
        .client()
        .get(hub.url("/Users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["detail"].as_str().unwrap_or_default().to_string(),
        challenge,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_issuer_audience_and_expiry_are_required_claims() {
    const SECRET: &str = "test-secret-of-sufficient-length-0123456789";
    let hub = Hub::start_with(|c| {
        c.auth.jwt.hs256_secret = SECRET.into();
        c.auth.jwt.issuer = "https://idp.example".into();
        c.auth.jwt.audience = "scimhub".into();
    })
    .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let good = json!({"sub": "hr", "iss": "https://idp.example", "aud": "scimhub", "exp": now() + 300, "scope": "users:read"});
    assert_eq!(
        refusal(&hub, &sign(Algorithm::HS256, &key, None, good.clone()))
            .await
            .0,
        200
    );
    let without = |claim: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(claim);
        sign(Algorithm::HS256, &key, None, c)
    };
    let with = |claim: &str, v: Value| {
        let mut c = good.clone();
        c[claim] = v;
        sign(Algorithm::HS256, &key, None, c)
    };
    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["urn:example:must-understand".into()]);
    let crit = jsonwebtoken::encode(&crit, &good, &key).unwrap();
    let cases = [
        (without("iss"), "no issuer (iss)"),
        (without("aud"), "no audience (aud)"),
        (without("exp"), "no expiry (exp)"),
        (with("exp", json!(now() - 3600)), "expired"),
        (with("nbf", json!(now() + 3600)), "not valid yet"),
        (
            with("aud", json!(["other", "another"])),
            "audience (aud) does not include",
        ),
        (
            with("iss", json!("https://evil.example")),
            "issuer (iss) is not",
        ),
        (
            with("exp", json!("tomorrow")),
            "exp claim has the wrong type",
        ),
        (crit, "critical (crit)"),
        (
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-entirely-0123456789abcdef"),
                None,
                good.clone(),
            ),
            "signature does not verify",
        ),
        ("eyJ.not.a-jwt".to_string(), "not a well-formed JWT"),
    ];
    for (token, want) in &cases {
        let (status, detail, challenge) = refusal(&hub, token).await;
        assert_eq!(status, 401, "{want}: {detail}");
        assert!(detail.contains(want), "{want}: {detail}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        // The library's own wording stays inside.
        for internal in [
            "ExpiredSignature",
            "InvalidAudience",
            "MissingRequiredClaim",
            "Error(",
            "JSON error",
        ] {
            assert!(!detail.contains(internal), "{detail}");
        }
    }
    // An audience list that names this server is fine.
    assert_eq!(
        refusal(&hub, &with("aud", json!(["other", "scimhub"])))
            .await
            .0,
        200
    );
    hub.stop().await;

    // Without issuer/audience configured they are not required; exp still is, unless
    // switched off.
    let hub = Hub::start_with(|c| c.auth.jwt.hs256_secret = SECRET.into()).await;
    let bare = json!({"sub": "svc", "scope": "users:read"});
    let (status, detail, _) =
        refusal(&hub, &sign(Algorithm::HS256, &key, None, bare.clone())).await;
    assert_eq!(
        (status, detail.contains("no expiry (exp)")),
        (401, true),
        "{detail}"
    );
    let mut dated = bare.clone();
    dated["exp"] = json!(now() + 300);
    assert_eq!(
        refusal(&hub, &sign(Algorithm::HS256, &key, None, dated))
            .await
            .0,
        200
    );
    hub.stop().await;
    let hub = Hub::start_with(|c| {
        c.auth.jwt.hs256_secret = SECRET.into();
        c.auth.jwt.allow_missing_exp = true;
    })
    .await;
    assert_eq!(
        refusal(&hub, &sign(Algorithm::HS256, &key, None, bare))
            .await
            .0,
        200
    );
    hub.stop().await;
}
