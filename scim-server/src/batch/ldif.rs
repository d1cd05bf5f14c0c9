//! LDIF content records (RFC 2849): folded lines, `::` base64 values, comments, a leading
//! `version: 1`, attribute options (`cn;lang-en`, dropped). Change records other than
//! `changetype: add` are refused. Entries carry the line they start on.

use std::io::BufRead;

use base64::Engine;

/// One entry: its DN and attribute values in file order (names as written).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub line: u64,
    pub dn: String,
    pub attrs: Vec<(String, String)>,
}

impl Entry {
    /// The values of `name` (case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attrs
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn first<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name).next()
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.values("objectClass")
            .any(|c| c.eq_ignore_ascii_case(class))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntryError {
    pub line: u64,
    pub reason: String,
}

pub struct Reader<R> {
    input: R,
    line: u64,
    bytes: u64,
    /// A line read ahead (the first line of the next entry or a continuation check).
    peeked: Option<(u64, String)>,
    eof: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader {
            input,
            line: 0,
            bytes: 0,
            peeked: None,
            eof: false,
        }
    }

    pub fn position(&self) -> u64 {
        self.bytes
    }

    fn physical(&mut self) -> Result<Option<(u64, String)>, EntryError> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        if self.eof {
            return Ok(None);
        }
        let mut raw = Vec::new();
        let n = self
            .input
            .read_until(b'\n', &mut raw)
            .map_err(|e| EntryError {
                line: self.line + 1,
                reason: format!("read error: {e}"),
            })?;
        if n == 0 {
            self.eof = true;
            return Ok(None);
        }
        self.bytes += n as u64;
        self.line += 1;
        while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            raw.pop();
        }
        let mut text = String::from_utf8(raw).map_err(|_| EntryError {
            line: self.line,
            reason: "the line is not valid UTF-8 (use base64, attr:: …)".into(),
        })?;
        if self.line == 1 && text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        Ok(Some((self.line, text)))
    }

    /// One logical line (continuations joined), or `None` at a blank line / end of input.
    fn logical(&mut self) -> Result<Option<(u64, String)>, EntryError> {
        let Some((line, mut text)) = self.physical()? else {
            return Ok(None);
        };
        if text.is_empty() {
            return Ok(Some((line, text)));
        }
        loop {
            match self.physical()? {
                Some((_, next)) if next.starts_with(' ') => text.push_str(&next[1..]),
                other => {
                    self.peeked = other;
                    return Ok(Some((line, text)));
                }
            }
        }
    }

    /// The next entry; `None` at the end of input. After an error the rest of the entry is
    /// skipped.
    pub fn next_entry(&mut self) -> Option<Result<Entry, EntryError>> {
        let mut entry: Option<Entry> = None;
        let mut error: Option<EntryError> = None;
        loop {
            let next = match self.logical() {
                Ok(n) => n,
                Err(e) => {
                    error.get_or_insert(e);
                    continue;
                }
            };
            let Some((line, text)) = next else {
                // End of input.
                return match (error, entry) {
                    (Some(e), _) => Some(Err(e)),
                    (None, Some(e)) => Some(Ok(e)),
                    (None, None) => None,
                };
            };
            if text.is_empty() {
                match (error.take(), entry.take()) {
                    (Some(e), _) => return Some(Err(e)),
                    (None, Some(e)) => return Some(Ok(e)),
                    (None, None) => continue,
                }
            }
            if text.starts_with('#') || error.is_some() {
                continue;
            }
            let parsed = parse_line(&text).map_err(|reason| EntryError { line, reason });
            let (name, value) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    error = Some(e);
                    continue;
                }
            };
            match &mut entry {
                None if name.eq_ignore_ascii_case("version") => {}
                None if name.eq_ignore_ascii_case("dn") => {
                    entry = Some(Entry {
                        line,
                        dn: value,
                        attrs: Vec::new(),
                    });
                }
                None => {
                    error = Some(EntryError {
                        line,
                        reason: format!("an entry must start with dn:, not {name}:"),
                    });
                }
                Some(e) if name.eq_ignore_ascii_case("changetype") => {
                    if !value.eq_ignore_ascii_case("add") {
                        error = Some(EntryError {
                            line: e.line,
                            reason: format!(
                                "change records (changetype: {value}) are not imported; export the entries as content records"
                            ),
                        });
                    }
                }
                Some(e) => {
                    let base = name.split(';').next().unwrap_or(&name).to_string();
                    e.attrs.push((base, value));
                }
            }
        }
    }
}

fn parse_line(text: &str) -> Result<(String, String), String> {
    let Some(colon) = text.find(':') else {
        return Err(format!("{text:?} is not attribute: value"));
    };
    let name = text[..colon].trim().to_string();
    if name.is_empty() {
        return Err("a line starts with ':'".into());
    }
    let rest = &text[colon + 1..];
    if let Some(b64) = rest.strip_prefix(':') {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| format!("{name}:: is not valid base64"))?;
        let value =
            String::from_utf8(bytes).map_err(|_| format!("{name} holds binary data, not text"))?;
        return Ok((name, value));
    }
    if rest.starts_with('<') {
        return Err(format!(
            "{name}:< (a value read from a URL) is not supported"
        ));
    }
    Ok((name, rest.trim_start_matches(' ').to_string()))
}

/// Whether `v` may be written as `attr: v` (RFC 2849 SAFE-STRING).
fn safe(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii() && b != 0 && b != b'\n' && b != b'\r')
        && !v.starts_with([' ', ':', '<'])
        && !v.ends_with(' ')
}

/// Appends `name: value` (base64 where needed), folded at 76 columns.
pub fn write_attr(out: &mut String, name: &str, value: &str) {
    let line = if safe(value) {
        format!("{name}: {value}")
    } else {
        format!(
            "{name}:: {}",
            base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
        )
    };
    let mut first = true;
    let mut rest = line.as_str();
    while !rest.is_empty() {
        let width = if first { 76 } else { 75 };
        let mut cut = rest.len().min(width);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if !first {
            out.push(' ');
        }
        out.push_str(&rest[..cut]);
        out.push('\n');
        rest = &rest[cut..];
        first = false;
    }
}

/// Escapes an RDN value (RFC 4514).
pub fn escape_rdn(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') || edge {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Vec<Result<Entry, EntryError>> {
        let mut r = Reader::new(text.as_bytes());
        std::iter::from_fn(|| r.next_entry()).collect()
    }

    #[test]
    fn reads_folded_and_base64_values() {
        let text = "version: 1\n\n# a comment\ndn: uid=bj,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\ncn: Barbara\n  Jensen\nsn;lang-en: Jensen\ndescription:: w6lsw6h2ZQ==\n\n\ndn: uid=x,dc=example,dc=org\nchangetype: modify\nreplace: cn\n\ndn: uid=y,dc=example,dc=org\nuid: y\n";
        let entries = read_all(text);
        assert_eq!(entries.len(), 3);
        let e = entries[0].as_ref().unwrap();
        assert_eq!(e.line, 4);
        assert_eq!(e.first("CN"), Some("Barbara Jensen"));
        assert_eq!(e.first("sn"), Some("Jensen"));
        assert_eq!(e.first("description"), Some("élève"));
        assert!(e.has_class("inetorgperson"));
        let err = entries[1].as_ref().unwrap_err();
        assert_eq!(err.line, 12);
        assert!(err.reason.contains("changetype: modify"));
        assert_eq!(entries[2].as_ref().unwrap().first("uid"), Some("y"));
    }

    #[test]
    fn writes_safe_and_folded_values() {
        let mut s = String::new();
        write_attr(&mut s, "cn", "Plain");
        write_attr(&mut s, "sn", " leading space");
        write_attr(&mut s, "description", &"x".repeat(100));
        write_attr(&mut s, "givenName", "Zoë");
        let entries = read_all(&format!("dn: cn=a\n{s}"));
        let e = entries[0].as_ref().unwrap();
        assert_eq!(e.first("sn"), Some(" leading space"));
        assert_eq!(e.first("description").unwrap().len(), 100);
        assert_eq!(e.first("givenName"), Some("Zoë"));
        assert!(s.lines().all(|l| l.len() <= 76));
        assert_eq!(escape_rdn("Smith, Jo "), "Smith\\, Jo\\ ");
    }
}
