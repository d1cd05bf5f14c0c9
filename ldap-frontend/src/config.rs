//! Settings of the LDAP front. The `scimhub` binary embeds this as the `[ldap]` section of
//! its configuration file; the defaults here match `config.default.toml`.

use serde::Deserialize;

use crate::error::LdapError;

/// What a white-pages search shows of users with `active = false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InactiveUsers {
    /// Not in search results, not bindable: a person who has left is not listed.
    #[default]
    Hidden,
    /// Listed with `nsAccountLock: TRUE`; still not bindable.
    Flagged,
}

/// An operator's addition to (or override of) the attribute mapping table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeMappingConfig {
    /// The LDAP attribute name, e.g. "carLicense".
    pub name: String,
    /// "user" or "group".
    pub object: String,
    /// The SCIM attribute path it shows, e.g. "urn:…:Cardholder:cardNumber" or "emails.value".
    pub scim: String,
    /// Numeric OID for the subschema entry; empty: one is derived under scimhub's arc.
    #[serde(default)]
    pub oid: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    pub enabled: bool,
    /// Plain LDAP (with StartTLS when a certificate is configured).
    pub addr: String,
    /// LDAP over TLS; empty: off. Needs tls_cert_file and tls_key_file.
    pub ldaps_addr: String,
    pub base_dn: String,
    /// false: anonymous clients may read the root DSE only.
    pub allow_anonymous: bool,
    pub inactive_users: InactiveUsers,
    /// Largest number of entries one search returns (clients may ask for fewer); 0: no limit.
    pub max_size_limit: u64,
    /// Longest a search may run, in seconds (clients may ask for less); 0: no limit.
    pub max_time_limit_seconds: u64,
    /// Largest page a Simple Paged Results request gets.
    pub max_page_size: u64,
    /// Most assertions in one search filter (a substring assertion counts one per
    /// component); larger filters get adminLimitExceeded.
    pub max_filter_terms: usize,
    /// PEM certificate chain and private key for StartTLS and LDAPS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Failed binds of one DN within `bind_failure_window_seconds` before that DN is locked
    /// for `bind_lockout_seconds` (answers 49 without checking the password).
    pub bind_max_failures: u32,
    pub bind_failure_window_seconds: u64,
    pub bind_lockout_seconds: u64,
    /// Connections idle longer than this are closed (with a notice of disconnection).
    pub idle_timeout_seconds: u64,
    /// Connections open at once, over both listeners; more are answered with a notice of
    /// disconnection (busy) and closed.
    pub max_connections: usize,
    /// Largest LDAP message accepted, in bytes; a message declaring more is refused at its
    /// header and its connection closed.
    pub max_message_bytes: usize,
    /// A request must arrive whole within this many seconds of its first byte, the first
    /// request within this of connecting, a TLS handshake complete within it, and a client
    /// must take each part of a response within it; otherwise the connection is closed.
    pub request_timeout_seconds: u64,
    pub attributes: Vec<AttributeMappingConfig>,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            enabled: true,
            addr: "127.0.0.1:3389".into(),
            ldaps_addr: String::new(),
            base_dn: "dc=example,dc=org".into(),
            allow_anonymous: false,
            inactive_users: InactiveUsers::Hidden,
            max_size_limit: 1000,
            max_time_limit_seconds: 60,
            max_page_size: 1000,
            max_filter_terms: store::filter::MAX_FILTER_TERMS,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            bind_max_failures: 5,
            bind_failure_window_seconds: 300,
            bind_lockout_seconds: 60,
            idle_timeout_seconds: 900,
            max_connections: 1024,
            max_message_bytes: 2 * 1024 * 1024,
            request_timeout_seconds: 30,
            attributes: Vec::new(),
        }
    }
}

impl LdapConfig {
    pub fn tls_configured(&self) -> bool {
        !self.tls_cert_file.is_empty() && !self.tls_key_file.is_empty()
    }

    pub fn validate(&self) -> Result<(), LdapError> {
        let bad = |m: String| Err(LdapError::Config(m));
        if crate::dit::Dn::parse(&self.base_dn).map_or(true, |d| d.is_root()) {
            return bad(format!(
                "ldap.base_dn {:?} is not a distinguished name such as dc=example,dc=org",
                self.base_dn
            ));
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return bad("ldap.tls_cert_file and ldap.tls_key_file go together".into());
        }
        if !self.ldaps_addr.is_empty() && !self.tls_configured() {
            return bad("ldap.ldaps_addr needs ldap.tls_cert_file and ldap.tls_key_file".into());
        }
        if self.max_page_size == 0 {
            return bad("ldap.max_page_size must be at least 1".into());
        }
        let ceiling = store::filter::FilterLimits::CEILING.max_terms;
        if self.max_filter_terms == 0 || self.max_filter_terms > ceiling {
            return bad(format!(
                "ldap.max_filter_terms is {}; it must be between 1 and {ceiling}",
                self.max_filter_terms
            ));
        }
        if self.bind_max_failures == 0 {
            return bad("ldap.bind_max_failures must be at least 1".into());
        }
        if self.max_connections == 0 {
            return bad("ldap.max_connections must be at least 1".into());
        }
        if !(4096..=1 << 30).contains(&self.max_message_bytes) {
            return bad("ldap.max_message_bytes must be from 4096 to 1073741824".into());
        }
        if self.request_timeout_seconds == 0 || self.idle_timeout_seconds == 0 {
            return bad(
                "ldap.request_timeout_seconds and ldap.idle_timeout_seconds must be at least 1"
                    .into(),
            );
        }
        for a in &self.attributes {
            if !matches!(a.object.as_str(), "user" | "group") {
                return bad(format!(
                    "ldap.attributes {:?}: object must be \"user\" or \"group\", not {:?}",
                    a.name, a.object
                ));
            }
            let ok = a
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return bad(format!(
                    "ldap.attributes: {:?} is not an LDAP attribute descriptor (RFC 4512 §1.4)",
                    a.name
                ));
            }
            if !a.oid.is_empty()
                && !a
                    .oid
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                return bad(format!(
                    "ldap.attributes {:?}: oid {:?} is not a numeric OID",
                    a.name, a.oid
                ));
            }
        }
        Ok(())
    }
}
