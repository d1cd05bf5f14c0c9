//! Authentication (bearer tokens made by `scimhub token create`, or JWTs signed by a
//! configured key) and scope checks. Every failure is audited.

use std::collections::HashMap;

use actix_web::HttpRequest;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use store::{AuditEntry, ResourceKind, Store};

use crate::config::JwtConfig;
use crate::error::ServerError;

pub const SCOPES: &[&str] = &[
    "users:read",
    "users:write",
    "groups:read",
    "groups:write",
    "admin",
    // Reads the token's own User at GET /Me; implied for every token bound to a User.
    "self",
];

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// "token:NAME" or "jwt:SUBJECT".
    pub name: String,
    pub scopes: Vec<String>,
    /// The User this principal is, for `/Me`.
    pub user_id: Option<String>,
}

impl Principal {
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }

    pub fn can_read(&self, kind: ResourceKind) -> bool {
        self.has(match kind {
            ResourceKind::User => "users:read",
            ResourceKind::Group => "groups:read",
        }) || self.can_write(kind)
    }

    /// GET /Me: a principal bound to a User reads that User (the implied `self` scope),
    /// whatever its other scopes; nothing else follows from it (not `/Users/{its id}`,
    /// not a list, not a write).
    pub fn can_read_self(&self) -> bool {
        self.user_id.is_some()
    }

    pub fn can_write(&self, kind: ResourceKind) -> bool {
        self.has(match kind {
            ResourceKind::User => "users:write",
            ResourceKind::Group => "groups:write",
        })
    }
}

/// Checks that every scope named is one this server knows.
pub fn validate_scopes(scopes: &[String]) -> Result<(), String> {
    for s in scopes {
        if !SCOPES.contains(&s.as_str()) {
            return Err(format!(
                "unknown scope {s:?}; scopes are {}",
                SCOPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// A configured JWT verifier.
pub struct JwtVerifier {
    keys: Vec<(Option<String>, DecodingKey, Algorithm)>,
    cfg: JwtConfig,
}

impl JwtVerifier {
    pub fn from_config(cfg: &JwtConfig) -> Result<Option<Self>, ServerError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let read = |path: &str| {
            std::fs::read(path)
                .map_err(|e| ServerError::Config(format!("auth.jwt: cannot read {path}: {e}")))
        };
        let key_err = |what: &str, e: jsonwebtoken::errors::Error| {
            ServerError::Config(format!("auth.jwt: {what}: {e}"))
        };
        let mut keys = Vec::new();
        if !cfg.hs256_secret.is_empty() {
            keys.push((
                None,
                DecodingKey::from_secret(cfg.hs256_secret.as_bytes()),
                Algorithm::HS256,
            ));
        }
        if !cfg.rs256_public_key_file.is_empty() {
            let pem = read(&cfg.rs256_public_key_file)?;
            keys.push((
                None,
                DecodingKey::from_rsa_pem(&pem).map_err(|e| key_err("RS256 public key", e))?,
                Algorithm::RS256,
            ));
        }
        if !cfg.es256_public_key_file.is_empty() {
            let pem = read(&cfg.es256_public_key_file)?;
            keys.push((
                None,
                DecodingKey::from_ec_pem(&pem).map_err(|e| key_err("ES256 public key", e))?,
                Algorithm::ES256,
            ));
        }
        if !cfg.jwks_file.is_empty() {
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&read(&cfg.jwks_file)?)
                .map_err(|e| ServerError::Config(format!("auth.jwt.jwks_file: {e}")))?;
            for jwk in &set.keys {
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => continue,
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| key_err("JWKS key", e))?;
                keys.push((jwk.common.key_id.clone(), key, alg));
            }
        }
        if keys.is_empty() {
            return Err(ServerError::Config("auth.jwt: no usable key".into()));
        }
        Ok(Some(JwtVerifier {
            keys,
            cfg: cfg.clone(),
        }))
    }

    /// Verifies a JWT: signature by a configured key, `crit` (RFC 7515 §4.1.11), then the
    /// claims. `iss` and `aud` are required when configured (RFC 8725 §3.8–3.9), `exp`
    /// unless `allow_missing_exp`; `nbf` is checked when present. The error says what is
    /// wrong in words a client's operator can act on.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the bearer token is not a well-formed JWT".to_string())?;
        if let Some(crit) = &header.crit {
            // No JWS extension is implemented here, so every critical one is unknown.
            return Err(format!(
                "the JWT marks header parameters {crit:?} as critical (crit); this server implements no JWS extension (RFC 7515 §4.1.11)"
            ));
        }
        let candidates: Vec<&(Option<String>, DecodingKey, Algorithm)> = self
            .keys
            .iter()
            .filter(|(kid, _, alg)| {
                *alg == header.alg && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
            })
            .collect();
        if candidates.is_empty() {
            return Err(format!(
                "no configured key verifies a JWT signed with {:?}{}",
                header.alg,
                header
                    .kid
                    .as_deref()
                    .map(|k| format!(" and key id {k:?}"))
                    .unwrap_or_default()
            ));
        }
        let mut required = Vec::new();
        if !self.cfg.allow_missing_exp {
            required.push("exp");
        }
        if !self.cfg.issuer.is_empty() {
            required.push("iss");
        }
        if !self.cfg.audience.is_empty() {
            required.push("aud");
        }
        // A claim error from a key whose signature verified beats "bad signature" from the
        // other candidates: it is the one that names what is wrong.
        let mut worst: Option<jsonwebtoken::errors::ErrorKind> = None;
        for (_, key, alg) in candidates {
            let mut v = Validation::new(*alg);
            v.leeway = self.cfg.leeway_seconds;
            v.validate_nbf = true;
            v.set_required_spec_claims(&required);
            if !self.cfg.issuer.is_empty() {
                v.set_issuer(&[&self.cfg.issuer]);
            }
            if self.cfg.audience.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&[&self.cfg.audience]);
            }
            match jsonwebtoken::decode::<HashMap<String, Value>>(token, key, &v) {
                Ok(data) => return Ok(self.principal(&data.claims)),
                Err(e) => {
                    let signature_failed =
                        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature);
                    if worst.is_none() || !signature_failed {
                        worst = Some(e.into_kind());
                    }
                }
            }
        }
        Err(match worst {
            // Present but not a NumericDate/string: the library reports it as missing.
            Some(jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c))
                if jsonwebtoken::dangerous::insecure_decode_claims::<HashMap<String, Value>>(
                    token,
                )
                .is_ok_and(|claims| claims.contains_key(&c)) =>
            {
                format!("the JWT's {c} claim has the wrong type")
            }
            Some(k) => self.explain(&k),
            None => "the JWT was rejected".to_string(),
        })
    }

    /// What a JWT verification error means, without the library's wording.
    fn explain(&self, kind: &jsonwebtoken::errors::ErrorKind) -> String {
        use jsonwebtoken::errors::ErrorKind as K;
        match kind {
            K::InvalidSignature => "the JWT's signature does not verify with the configured key".into(),
            K::ExpiredSignature => "the JWT has expired (exp)".into(),
            K::ImmatureSignature => "the JWT is not valid yet (nbf)".into(),
            K::InvalidIssuer => format!(
                "the JWT's issuer (iss) is not {:?}",
                self.cfg.issuer
            ),
            K::InvalidAudience => {
                if self.cfg.audience.is_empty() {
                    "the JWT names an audience (aud), and this server has none configured (auth.jwt.audience)".into()
                } else {
                    format!(
                        "the JWT's audience (aud) does not include {:?}",
                        self.cfg.audience
                    )
                }
            }
            K::MissingRequiredClaim(c) => match c.as_str() {
                "exp" => "the JWT has no expiry (exp), which this server requires (auth.jwt.allow_missing_exp)".into(),
                "iss" => format!("the JWT has no issuer (iss); it must be {:?}", self.cfg.issuer),
                "aud" => format!(
                    "the JWT has no audience (aud); it must include {:?}",
                    self.cfg.audience
                ),
                other => format!("the JWT lacks the required claim {other:?}"),
            },
            K::InvalidClaimFormat(c) => format!("the JWT's {c} claim has the wrong type"),
            K::InvalidAlgorithm | K::MissingAlgorithm => {
                "the JWT's algorithm does not match the configured key".into()
            }
            _ => "the bearer token is not a well-formed JWT".into(),
        }
    }

    fn principal(&self, claims: &HashMap<String, Value>) -> Principal {
        let scopes = match claims.get(&self.cfg.scope_claim) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let sub = claims
            .get(&self.cfg.subject_claim)
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let user_id = if self.cfg.user_claim.is_empty() {
            None
        } else {
            claims
                .get(&self.cfg.user_claim)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Principal {
            name: format!("jwt:{sub}"),
            scopes,
            user_id,
        }
    }
}

/// The client's address, for the audit trail.
pub fn source_of(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_string())
}

pub async fn audit_denied(
    store: &Store,
    req: &HttpRequest,
    actor: &str,
    action: &str,
    reason: &str,
) {
    let entry = AuditEntry {
        actor: actor.to_string(),
        source: source_of(req),
        layer: "auth".into(),
        action: action.into(),
        resource_type: None,
        resource_id: None,
        consumer: None,
        outcome: "denied".into(),
        detail: serde_json::json!({"reason": reason, "method": req.method().as_str(), "path": req.path()}),
    };
    if let Err(e) = store.append_audit(&entry).await {
        tracing::error!(error = %e, "could not audit an authentication failure");
    }
}

/// Authenticates the request's bearer token.
pub async fn authenticate(
    store: &Store,
    jwt: Option<&JwtVerifier>,
    req: &HttpRequest,
) -> Result<Principal, ServerError> {
    let header = req
        .headers()
        .get("Authorization")
        .and_then(|h| h.to_str().ok());
    let Some(header) = header else {
        audit_denied(
            store,
            req,
            "anonymous",
            "auth.failure",
            "no Authorization header",
        )
        .await;
        return Err(ServerError::Unauthorized {
            detail: "authentication required: send 'Authorization: Bearer <token>'".into(),
            invalid_token: false,
        });
    };
    let token = match header.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => {
            audit_denied(
                store,
                req,
                "anonymous",
                "auth.failure",
                "Authorization is not a Bearer token",
            )
            .await;
            return Err(ServerError::Unauthorized {
                detail: "only Bearer tokens are accepted (RFC 6750)".into(),
                invalid_token: false,
            });
        }
    };
    if token.starts_with("scimhub_") {
        if let Some(t) = store.find_token(token).await? {
            return Ok(Principal {
                name: format!("token:{}", t.name),
                scopes: t.scopes,
                user_id: t.user_id,
            });
        }
        audit_denied(
            store,
            req,
            "anonymous",
            "auth.failure",
            "unknown or revoked token",
        )
        .await;
        return Err(ServerError::Unauthorized {
            detail: "the bearer token is unknown or revoked".into(),
            invalid_token: true,
        });
    }
    match jwt {
        Some(v) => match v.verify(token) {
            Ok(p) => Ok(p),
            Err(reason) => {
                audit_denied(store, req, "anonymous", "auth.failure", &reason).await;
                Err(ServerError::Unauthorized {
                    detail: reason,
                    invalid_token: true,
                })
            }
        },
        None => {
            audit_denied(store, req, "anonymous", "auth.failure", "unknown token").await;
            Err(ServerError::Unauthorized {
                detail: "the bearer token is unknown or revoked".into(),
                invalid_token: true,
            })
        }
    }
}
