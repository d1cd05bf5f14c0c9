//! Secrets: passwords and LDAP service-account secrets are stored as argon2id hashes; API
//! bearer tokens (256 random bits) as SHA-256 digests, which is enough for secrets that
//! cannot be guessed and lets a token be found by its digest.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// argon2id with the crate's defaults (19 MiB, 2 passes), the OWASP baseline.
pub fn hash_secret(secret: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Corrupt(format!("password hashing failed: {e}")))
}

pub fn verify_secret(secret: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash made like every stored hash (argon2id, the crate's default parameters) of a
/// random secret nobody kept, to verify against when there is no account or no password:
/// a bind then costs the same argon2 work whether the account exists or not, so its timing
/// does not tell which accounts exist. A unit test keeps its parameters equal to those of
/// new hashes.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$E6y+eGc2I9ywwzMS0PFeRQ$D1C8XfN5mmgfKM0ECShH36Sx73gDQmRuaql1gLK5E7o";

pub fn dummy_hash() -> &'static str {
    DUMMY_HASH
}

/// The hash a password check runs against: the stored one when there is a usable one,
/// otherwise [`dummy_hash`]; `true` with it when it is the account's own.
pub fn hash_to_verify(stored: Option<&str>) -> (&str, bool) {
    match stored {
        Some(h) if PasswordHash::new(h).is_ok() => (h, true),
        _ => (dummy_hash(), false),
    }
}

/// Verifies `secret` against the account's stored hash, or against the dummy hash when
/// there is none: the same work either way; only a stored hash can succeed.
pub fn verify_secret_or_dummy(secret: &str, stored: Option<&str>) -> bool {
    let (hash, real) = hash_to_verify(stored);
    verify_secret(secret, hash) && real
}

/// A new random secret with a recognisable prefix (so that leaked tokens can be found by
/// secret scanners).
pub fn new_token_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn token_digest(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash_secret("correct horse").unwrap();
        let b = hash_secret("correct horse").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_secret("correct horse", &a));
        assert!(!verify_secret("wrong", &a));
        assert!(!verify_secret("x", "not a hash"));
    }

    #[test]
    fn missing_accounts_verify_against_a_dummy_of_the_same_cost() {
        let real = hash_secret("pw").unwrap();
        assert_eq!(hash_to_verify(Some(&real)), (real.as_str(), true));
        for stored in [None, Some("not a hash")] {
            let (h, own) = hash_to_verify(stored);
            assert!(!own);
            assert_eq!(h, dummy_hash());
            // Same algorithm and parameters as a stored hash: only the salt and digest differ.
            let params = |h: &str| h.rsplitn(3, '$').nth(2).map(str::to_string);
            assert_eq!(params(h), params(&real), "{h} vs {real}");
        }
        assert!(verify_secret_or_dummy("pw", Some(&real)));
        assert!(!verify_secret_or_dummy("pw", None));
        assert!(!verify_secret_or_dummy("", None));
    }

    #[test]
    fn token_secrets_are_random_and_digestible() {
        let s = new_token_secret("scimhub");
        assert!(s.starts_with("scimhub_") && s.len() > 40);
        assert_ne!(s, new_token_secret("scimhub"));
        assert_eq!(token_digest("abc").len(), 64);
    }
}
