//! Distinguished names (RFC 4514): parsing with escapes, a normalised form for comparison
//! (attribute types and values compared case-insensitively, as every naming attribute served
//! here is case-insensitive), and escaping of values when DNs are written.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdn {
    /// Attribute type, lowercased.
    pub attr: String,
    /// The value, unescaped, as written.
    pub value: String,
}

/// A DN as a list of RDNs, leaf first. The empty DN is the root DSE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dn(pub Vec<Rdn>);

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

impl Dn {
    pub fn parse(s: &str) -> Result<Dn, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Dn(Vec::new()));
        }
        let bytes = s.as_bytes();
        let mut rdns = Vec::new();
        let mut i = 0;
        loop {
            // attribute type
            let start = i;
            while i < bytes.len() && bytes[i] != b'=' {
                if matches!(bytes[i], b',' | b'+' | b'\\') {
                    return Err(format!("{s:?}: an RDN lacks '=' (RFC 4514)"));
                }
                i += 1;
            }
            if i >= bytes.len() {
                return Err(format!("{s:?}: an RDN lacks '=' (RFC 4514)"));
            }
            let attr = s[start..i].trim().to_ascii_lowercase();
            let attr_ok = attr
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && attr
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !attr_ok {
                return Err(format!("{s:?}: {attr:?} is not an attribute type"));
            }
            i += 1;
            // value, with escapes; raw bytes so that \XX sequences can form UTF-8
            let mut value: Vec<u8> = Vec::new();
            // Trailing unescaped spaces are not part of the value.
            let mut keep = 0usize;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            while i < bytes.len() && bytes[i] != b',' && bytes[i] != b';' {
                match bytes[i] {
                    b'\\' => {
                        let a = *bytes
                            .get(i + 1)
                            .ok_or_else(|| format!("{s:?}: dangling '\\'"))?;
                        if let (Some(h), Some(l)) = (hex(a), bytes.get(i + 2).and_then(|b| hex(*b)))
                        {
                            value.push(h * 16 + l);
                            i += 3;
                        } else {
                            value.push(a);
                            i += 2;
                        }
                        keep = value.len();
                    }
                    b'+' => {
                        return Err(format!(
                            "{s:?}: multi-valued RDNs do not name any entry here"
                        ));
                    }
                    b'"' => return Err(format!("{s:?}: unescaped '\"' in a value")),
                    c => {
                        value.push(c);
                        i += 1;
                        if c != b' ' {
                            keep = value.len();
                        }
                    }
                }
            }
            value.truncate(keep);
            // No entry is named with NUL (the store never holds it), and as text it cannot
            // reach the database: the DN is malformed for this directory.
            if value.contains(&0) {
                return Err(format!("{s:?}: a value contains a NUL character"));
            }
            let value =
                String::from_utf8(value).map_err(|_| format!("{s:?}: a value is not UTF-8"))?;
            rdns.push(Rdn { attr, value });
            if i >= bytes.len() {
                break;
            }
            i += 1; // ',' or ';'
            if i >= bytes.len() {
                return Err(format!("{s:?}: ends with a separator"));
            }
        }
        Ok(Dn(rdns))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The comparison form: `attr=value` pairs lowercased, joined by ','.
    pub fn norm(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&r.attr);
            out.push('=');
            out.push_str(&escape_value(&r.value.to_lowercase()));
        }
        out
    }

    /// The DN one level up; the root has none.
    pub fn parent(&self) -> Option<Dn> {
        (!self.0.is_empty()).then(|| Dn(self.0[1..].to_vec()))
    }

    /// Whether `self` equals `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &Dn) -> bool {
        let (n, m) = (self.0.len(), ancestor.0.len());
        n >= m && Dn(self.0[n - m..].to_vec()).norm() == ancestor.norm()
    }

    pub fn child(&self, attr: &str, value: &str) -> Dn {
        let mut v = vec![Rdn {
            attr: attr.to_ascii_lowercase(),
            value: value.to_string(),
        }];
        v.extend(self.0.iter().cloned());
        Dn(v)
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", r.attr, escape_value(&r.value))?;
        }
        Ok(())
    }
}

/// Escapes an attribute value for a DN string (RFC 4514 §2.4).
pub fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_normalises() {
        let d = Dn::parse(r"UID=Jo\2C Smith , OU=People,dc=Example,dc=org").unwrap();
        assert_eq!(d.0[0].attr, "uid");
        assert_eq!(d.0[0].value, "Jo, Smith");
        assert_eq!(d.norm(), r"uid=jo\, smith,ou=people,dc=example,dc=org");
        assert_eq!(d.to_string(), r"uid=Jo\, Smith,ou=People,dc=Example,dc=org");
        let base = Dn::parse("dc=example,dc=org").unwrap();
        assert!(d.is_within(&base));
        assert!(!base.is_within(&d));
        assert!(Dn::parse("").unwrap().is_root());
        assert_eq!(Dn::parse(r"cn=caf\C3\A9").unwrap().0[0].value, "café");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "uid",
            "uid=a,",
            "=a",
            "cn=a+sn=b",
            "cn=a\\",
            "u id=x",
            "uid=a\\00b,dc=x",
            "uid=a\0b,dc=x",
            "uid=\0",
        ] {
            assert!(Dn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escaping_round_trips() {
        for v in [" lead", "trail ", "#x", "a,b+c\"d\\e<f>g;h=i", "plain"] {
            let d = Dn::parse("dc=x").unwrap().child("cn", v);
            assert_eq!(Dn::parse(&d.to_string()).unwrap().0[0].value, v);
        }
    }
}
