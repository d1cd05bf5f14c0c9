//! The LDAP side of the load generator: searches per second with concurrent connections
//! against any LDAP server by URL, for a white-pages lookup `(uid=X)` and an address-book
//! query `(|(cn=*X*)(mail=*X*))`, over the users `conformance load seed` creates; and those
//! users written as inetOrgPerson entries in an LDIF file, so that another directory server
//! can be loaded with the entries scimhub's directory serves for them and measured the same
//! way.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchOptions, dn_escape, ldap_escape};
use serde_json::Value;

use crate::load::{Stats, user_body, user_name};

/// A directory under test and the account the load generator binds as.
#[derive(Clone)]
pub struct Directory {
    pub url: String,
    pub bind_dn: String,
    pub password: String,
    /// The subtree searched.
    pub base_dn: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LdapLoadError {
    #[error("{0}")]
    Ldap(#[from] ldap3::LdapError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Check(String),
}

/// The measured searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Query {
    /// `(uid=X)` for a random seeded user; exactly one entry must come back.
    Uid,
    /// `(|(cn=*X*)(mail=*X*))` for four digits of a random user's number.
    AddressBook,
}

/// The most entries one search asks for: an address book shows a page of matches, and a
/// fragment such as `0000` matches thousands of the seeded users.
const SIZE_LIMIT: i32 = 100;
/// LDAP result code sizeLimitExceeded: the server sent `SIZE_LIMIT` entries and stopped,
/// which answers an address-book query as a client sees it.
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const ATTRIBUTES: [&str; 5] = ["uid", "cn", "sn", "givenName", "mail"];

impl Query {
    pub fn label(self) -> &'static str {
        match self {
            Query::Uid => "(uid=X)",
            Query::AddressBook => "(|(cn=*X*)(mail=*X*))",
        }
    }

    fn filter(self, prefix: &str, i: u64) -> String {
        match self {
            Query::Uid => format!("(uid={})", ldap_escape(user_name(prefix, i))),
            // The last four digits of user i's number: its own cn (the userName) and mail
            // hold them, so at least that entry matches, along with every other user whose
            // number contains them.
            Query::AddressBook => {
                let frag = format!("{:04}", i % 10_000);
                format!("(|(cn=*{frag}*)(mail=*{frag}*))")
            }
        }
    }

    /// Whether a search's outcome is a correct answer; why not otherwise.
    fn check(self, filter: &str, entries: usize, rc: u32) -> Result<(), String> {
        let ok = match self {
            Query::Uid => rc == 0 && entries == 1,
            Query::AddressBook => (rc == 0 && entries >= 1) || rc == SIZE_LIMIT_EXCEEDED,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{filter}: result code {rc}, {entries} entries"))
        }
    }
}

/// Searches per second and latency of one query, with the searches that failed or came back
/// with a wrong answer.
#[derive(Debug, Clone)]
pub struct SearchStats {
    pub stats: Stats,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Opens a connection and binds.
pub async fn connect(dir: &Directory) -> Result<Ldap, LdapLoadError> {
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(10));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &dir.url).await?;
    ldap3::drive!(conn);
    ldap.simple_bind(&dir.bind_dn, &dir.password)
        .await?
        .success()
        .map_err(|e| LdapLoadError::Check(format!("bind as {}: {e}", dir.bind_dn)))?;
    Ok(ldap)
}

/// Fails unless the first and the last of `users` seeded users are in the directory, so that
/// a missing population reads as such rather than as a rate of failed searches.
pub async fn check_population(
    dir: &Directory,
    prefix: &str,
    users: u64,
) -> Result<(), LdapLoadError> {
    if users == 0 {
        return Err(LdapLoadError::Check("--users must be at least 1".into()));
    }
    let mut ldap = connect(dir).await?;
    for i in [0, users - 1] {
        let filter = Query::Uid.filter(prefix, i);
        let (entries, res) = ldap
            .search(&dir.base_dn, Scope::Subtree, &filter, vec!["uid"])
            .await?
            .success()
            .map_err(|e| LdapLoadError::Check(format!("{filter} under {}: {e}", dir.base_dn)))?;
        if entries.len() != 1 {
            return Err(LdapLoadError::Check(format!(
                "{filter} under {} found {} entries (result {}); {} holds fewer than {users} seeded users",
                dir.base_dn,
                entries.len(),
                res.rc,
                dir.url
            )));
        }
    }
    let _ = ldap.unbind().await;
    Ok(())
}

/// Runs `query` on `connections` connections, each searching for random users of the
/// population one search after another: `warmup` unmeasured (caches, first use of each
/// connection), then `measure`.
pub async fn searches(
    dir: &Directory,
    query: Query,
    prefix: &str,
    users: u64,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<SearchStats, LdapLoadError> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(dir).await?);
    }
    let (conns, _) = phase(dir, query, prefix, users, conns, warmup, 1).await?;
    let (conns, stats) = phase(dir, query, prefix, users, conns, measure, 2).await?;
    for mut ldap in conns {
        let _ = ldap.unbind().await;
    }
    Ok(stats)
}

/// What one connection did in a phase.
struct Worker {
    ldap: Ldap,
    samples: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

async fn phase(
    dir: &Directory,
    query: Query,
    prefix: &str,
    users: u64,
    conns: Vec<Ldap>,
    length: Duration,
    round: u64,
) -> Result<(Vec<Ldap>, SearchStats), LdapLoadError> {
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::with_capacity(conns.len());
    for (c, ldap) in conns.into_iter().enumerate() {
        let base = dir.base_dn.clone();
        let prefix = prefix.to_string();
        // A different sequence per connection and per phase, the same on every run, so that
        // two servers are asked for the same users.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ ((round << 32) | (c as u64 + 1));
        tasks.push(tokio::spawn(async move {
            let mut w = Worker {
                ldap,
                samples: Vec::new(),
                errors: 0,
                first_error: None,
            };
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let filter = query.filter(&prefix, x % users.max(1));
                let t = Instant::now();
                let r = w
                    .ldap
                    .with_search_options(SearchOptions::new().sizelimit(SIZE_LIMIT))
                    .with_timeout(Duration::from_secs(30))
                    .search(&base, Scope::Subtree, &filter, ATTRIBUTES.to_vec())
                    .await
                    // A transport or protocol error leaves the connection unusable.
                    .map_err(|e| format!("{filter}: {e}"))?;
                match query.check(&filter, r.0.len(), r.1.rc) {
                    Ok(()) => w.samples.push(t.elapsed()),
                    Err(why) => {
                        w.errors += 1;
                        w.first_error.get_or_insert(why);
                    }
                }
            }
            Ok::<_, String>(w)
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    let mut samples = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let w = t
            .await
            .map_err(|e| LdapLoadError::Check(format!("search task: {e}")))?
            .map_err(|e| LdapLoadError::Check(format!("connection to {} failed: {e}", dir.url)))?;
        conns.push(w.ldap);
        samples.extend(w.samples);
        errors += w.errors;
        first_error = first_error.or(w.first_error);
    }
    // Until the last connection's search in flight at the deadline is answered: those
    // searches are counted too.
    let stats = Stats::from(samples, started.elapsed());
    Ok((
        conns,
        SearchStats {
            stats,
            errors,
            first_error,
        },
    ))
}

/// Writes the base entry, `ou=people` and users `0..users` (as `conformance load seed`
/// creates them) as an LDIF file for `slapadd` or `ldapadd`.
pub fn write_ldif(
    out: &mut impl Write,
    prefix: &str,
    users: u64,
    base_dn: &str,
) -> Result<(), LdapLoadError> {
    write_entry(out, &base_entry(base_dn)?)?;
    let people = format!("ou=people,{base_dn}");
    write_entry(
        out,
        &[
            ("dn", people.clone()),
            ("objectClass", "top".into()),
            ("objectClass", "organizationalUnit".into()),
            ("ou", "people".into()),
        ],
    )?;
    for i in 0..users {
        if let Some(e) = user_entry(&user_body(prefix, i), &people) {
            write_entry(out, &e)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The entry of the base DN itself, from its first RDN (dc=, o= or ou=).
fn base_entry(base_dn: &str) -> Result<Vec<(&'static str, String)>, LdapLoadError> {
    let first = base_dn.split(',').next().unwrap_or_default();
    let unsupported = || {
        LdapLoadError::Check(format!(
            "base DN {base_dn:?}: the first RDN must be dc=, o= or ou= with a plain value"
        ))
    };
    let (attr, value) = first.split_once('=').ok_or_else(unsupported)?;
    let value = value.trim().to_string();
    if value.is_empty() || value.contains(['\\', '+']) {
        return Err(unsupported());
    }
    let mut e = vec![("dn", base_dn.to_string()), ("objectClass", "top".into())];
    match attr.trim().to_ascii_lowercase().as_str() {
        "dc" => e.extend([
            ("objectClass", "dcObject".into()),
            ("objectClass", "organization".into()),
            ("dc", value.clone()),
            ("o", value),
        ]),
        "o" => e.extend([("objectClass", "organization".into()), ("o", value)]),
        "ou" => e.extend([("objectClass", "organizationalUnit".into()), ("ou", value)]),
        _ => return Err(unsupported()),
    }
    Ok(e)
}

/// A user as the inetOrgPerson entry scimhub's directory serves for it (the mapping table
/// of `ldap-frontend/src/dit/mapping.rs`, for the attributes a seeded user carries); `None`
/// for an inactive user, which that directory hides by default.
fn user_entry(doc: &Value, people: &str) -> Option<Vec<(&'static str, String)>> {
    if doc["active"] == false {
        return None;
    }
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let user_name = text(&doc["userName"])?;
    let mut e = vec![
        (
            "dn",
            format!("uid={},{people}", dn_escape(user_name.as_str())),
        ),
        ("objectClass", "top".into()),
        ("objectClass", "person".into()),
        ("objectClass", "organizationalPerson".into()),
        ("objectClass", "inetOrgPerson".into()),
        ("uid", user_name.clone()),
    ];
    // cn: displayName, name.formatted and userName, each once whatever its case.
    let mut cns: Vec<String> = Vec::new();
    for v in [
        text(&doc["displayName"]),
        text(&doc["name"]["formatted"]),
        Some(user_name.clone()),
    ]
    .into_iter()
    .flatten()
    {
        if !cns.iter().any(|c| c.eq_ignore_ascii_case(&v)) {
            cns.push(v);
        }
    }
    e.extend(cns.into_iter().map(|v| ("cn", v)));
    // person requires sn, which scimhub serves only when familyName is set: a user without
    // one gets its userName here so that the entry loads.
    e.push(("sn", text(&doc["name"]["familyName"]).unwrap_or(user_name)));
    for (attr, v) in [
        ("givenName", &doc["name"]["givenName"]),
        ("displayName", &doc["displayName"]),
        ("title", &doc["title"]),
        ("employeeType", &doc["userType"]),
        ("preferredLanguage", &doc["preferredLanguage"]),
    ] {
        e.extend(text(v).map(|v| (attr, v)));
    }
    // mail: every email address, primary first.
    let emails = doc["emails"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let (primary, other): (Vec<&Value>, Vec<&Value>) =
        emails.iter().partition(|m| m["primary"] == true);
    e.extend(
        primary
            .into_iter()
            .chain(other)
            .filter_map(|m| text(&m["value"]))
            .map(|v| ("mail", v)),
    );
    Some(e)
}

fn write_entry(out: &mut impl Write, entry: &[(&str, String)]) -> std::io::Result<()> {
    for (attr, value) in entry {
        if is_safe_string(value) {
            writeln!(out, "{attr}: {value}")?;
        } else {
            let b64 = base64::engine::general_purpose::STANDARD.encode(value);
            writeln!(out, "{attr}:: {b64}")?;
        }
    }
    writeln!(out)
}

/// RFC 2849 SAFE-STRING (and no trailing space, which readers may strip); anything else is
/// written base64-encoded.
fn is_safe_string(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii() && b != 0 && b != b'\n' && b != b'\r')
        && !s.starts_with([' ', ':', '<'])
        && !s.ends_with(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldif_of_a_seeded_user() {
        let mut out = Vec::new();
        write_ldif(&mut out, "load-", 2, "dc=example,dc=org").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("dn: dc=example,dc=org\nobjectClass: top\nobjectClass: dcObject\n"));
        assert!(text.contains(
            "dn: uid=load-0000001,ou=people,dc=example,dc=org\n\
             objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\n\
             objectClass: inetOrgPerson\nuid: load-0000001\ncn: load-0000001\nsn: Family1\n\
             givenName: Given1\nmail: load-0000001@load.example\n\n"
        ));
    }

    #[test]
    fn cn_and_mail_follow_the_directory_mapping() {
        let doc = serde_json::json!({
            "userName": "bjensen",
            "displayName": "Babs Jensen",
            "name": {"formatted": "babs jensen", "familyName": "Jensen"},
            "emails": [{"value": "b@home.example"}, {"value": "b@work.example", "primary": true}],
        });
        let e = user_entry(&doc, "ou=people,dc=example,dc=org").unwrap();
        let values = |a: &str| -> Vec<&str> {
            e.iter()
                .filter(|(k, _)| *k == a)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(values("cn"), ["Babs Jensen", "bjensen"]);
        assert_eq!(values("mail"), ["b@work.example", "b@home.example"]);
        assert!(user_entry(&serde_json::json!({"userName": "x", "active": false}), "").is_none());
    }

    #[test]
    fn unsafe_values_are_base64() {
        let mut out = Vec::new();
        write_entry(&mut out, &[("cn", "Zoë".into()), ("sn", " x".into())]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "cn:: Wm/Dqw==\nsn:: IHg=\n\n"
        );
    }

    #[test]
    fn address_book_answers() {
        let f = Query::AddressBook.filter("load-", 123_456);
        assert_eq!(f, "(|(cn=*3456*)(mail=*3456*))");
        assert!(Query::AddressBook.check(&f, 0, 0).is_err());
        assert!(
            Query::AddressBook
                .check(&f, 100, SIZE_LIMIT_EXCEEDED)
                .is_ok()
        );
        assert!(Query::Uid.check("(uid=x)", 2, 0).is_err());
    }
}
