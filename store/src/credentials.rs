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
    fn token_secrets_are_random_and_digestible() {
        let s = new_token_secret("scimhub");
        assert!(s.starts_with("scimhub_") && s.len() > 40);
        assert_ne!(s, new_token_secret("scimhub"));
        assert_eq!(token_digest("abc").len(), 64);
    }
}
