//! SCIM filter and PATCH path grammar (RFC 7644 §3.4.2.2, §3.5.2): recursive descent with
//! precedence `not` > `and` > `or`, case-insensitive operators, and a nesting limit.

use super::{AttrPath, CompareOp, Filter, Literal};

/// Default limit on nesting (parentheses, `not`, value paths) so that a hostile filter cannot
/// exhaust the stack.
pub const MAX_FILTER_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Word(String),
    Str(String),
    Num(serde_json::Number),
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Word(w) => format!("'{w}'"),
        Tok::Str(s) => format!("string {}", serde_json::Value::String(s.clone())),
        Tok::Num(n) => format!("number {n}"),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-' | '$')
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, String> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push((pos, Tok::LParen));
                i += 1
            }
            ')' => {
                out.push((pos, Tok::RParen));
                i += 1
            }
            '[' => {
                out.push((pos, Tok::LBracket));
                i += 1
            }
            ']' => {
                out.push((pos, Tok::RBracket));
                i += 1
            }
            '"' => {
                let mut j = i + 1;
                let mut escaped = false;
                loop {
                    if j >= chars.len() {
                        return Err(format!("unterminated string starting at offset {pos}"));
                    }
                    let ch = chars[j].1;
                    if escaped {
                        escaped = false;
                    } else if ch == '\\' {
                        escaped = true;
                    } else if ch == '"' {
                        break;
                    }
                    j += 1;
                }
                let end = chars[j].0 + 1;
                let lit: String = serde_json::from_str(&s[pos..end])
                    .map_err(|e| format!("invalid string literal at offset {pos}: {e}"))?;
                if lit.contains('\0') {
                    return Err(format!(
                        "the string at offset {pos} contains a NUL character"
                    ));
                }
                out.push((pos, Tok::Str(lit)));
                i = j + 1;
            }
            c if c == '-' || c.is_ascii_digit() => {
                let mut j = i;
                while j < chars.len()
                    && (chars[j].1.is_ascii_digit()
                        || matches!(chars[j].1, '-' | '+' | '.' | 'e' | 'E'))
                {
                    j += 1;
                }
                let end = if j < chars.len() { chars[j].0 } else { s.len() };
                let text = &s[pos..end];
                let n: serde_json::Number = serde_json::from_str(text)
                    .map_err(|_| format!("invalid number {text:?} at offset {pos}"))?;
                out.push((pos, Tok::Num(n)));
                i = j;
            }
            c if is_word_char(c) => {
                let mut j = i;
                while j < chars.len() && is_word_char(chars[j].1) {
                    j += 1;
                }
                let end = if j < chars.len() { chars[j].0 } else { s.len() };
                out.push((pos, Tok::Word(s[pos..end].to_string())));
                i = j;
            }
            other => return Err(format!("unexpected character {other:?} at offset {pos}")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    max_depth: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.toks
            .get(self.pos)
            .map(|(o, _)| *o)
            .unwrap_or(self.src.len())
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn expect(&mut self, want: Tok) -> Result<(), String> {
        let at = self.offset();
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(format!(
                "expected {} at offset {at}, found {}",
                describe(&want),
                describe(&t)
            )),
            None => Err(format!("expected {} at end of filter", describe(&want))),
        }
    }
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(format!(
                "filter is nested more than {} levels deep",
                self.max_depth
            ));
        }
        Ok(())
    }

    fn or_expr(&mut self, in_value_path: bool) -> Result<Filter, String> {
        let mut left = self.and_expr(in_value_path)?;
        while self.peek_keyword("or") {
            self.next();
            let right = self.and_expr(in_value_path)?;
            left = Filter::or(left, right);
        }
        Ok(left)
    }

    fn and_expr(&mut self, in_value_path: bool) -> Result<Filter, String> {
        let mut left = self.unary(in_value_path)?;
        while self.peek_keyword("and") {
            self.next();
            let right = self.unary(in_value_path)?;
            left = Filter::and(left, right);
        }
        Ok(left)
    }

    fn unary(&mut self, in_value_path: bool) -> Result<Filter, String> {
        if self.peek_keyword("not") && self.peek_at(1) == Some(&Tok::LParen) {
            self.next();
            self.enter()?;
            self.expect(Tok::LParen)?;
            let inner = self.or_expr(in_value_path)?;
            self.expect(Tok::RParen)?;
            self.depth -= 1;
            return Ok(Filter::not(inner));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.next();
            self.enter()?;
            let inner = self.or_expr(in_value_path)?;
            self.expect(Tok::RParen)?;
            self.depth -= 1;
            return Ok(inner);
        }
        self.attr_expr(in_value_path)
    }

    fn attr_expr(&mut self, in_value_path: bool) -> Result<Filter, String> {
        let at = self.offset();
        let path = match self.next() {
            Some(Tok::Word(w)) => parse_attr_path(&w).map_err(|e| format!("{e} at offset {at}"))?,
            Some(t) => {
                return Err(format!(
                    "expected an attribute path at offset {at}, found {}",
                    describe(&t)
                ));
            }
            None => return Err("expected an attribute path at end of filter".into()),
        };
        if self.peek() == Some(&Tok::LBracket) {
            if in_value_path {
                return Err(format!("value filters cannot be nested (offset {at})"));
            }
            if path.sub.is_some() {
                return Err(format!(
                    "a value filter applies to an attribute, not a sub-attribute (offset {at})"
                ));
            }
            self.next();
            self.enter()?;
            let inner = self.or_expr(true)?;
            self.expect(Tok::RBracket)?;
            self.depth -= 1;
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let op_at = self.offset();
        let op = match self.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("pr") => return Ok(Filter::Present(path)),
            Some(Tok::Word(w)) => CompareOp::parse(&w)
                .ok_or_else(|| format!("unknown operator '{w}' at offset {op_at}; expected one of eq ne co sw ew gt ge lt le pr"))?,
            Some(t) => return Err(format!("expected an operator at offset {op_at}, found {}", describe(&t))),
            None => return Err(format!("expected an operator after '{path}'")),
        };
        let val_at = self.offset();
        let value = match self.next() {
            Some(Tok::Str(s)) => Literal::String(s),
            Some(Tok::Num(n)) => Literal::Number(n),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Some(t) => {
                return Err(format!(
                    "expected a value (a quoted string, number, true, false or null) at offset {val_at}, found {}",
                    describe(&t)
                ));
            }
            None => return Err(format!("expected a value after '{path} {}'", op.as_str())),
        };
        Ok(Filter::Compare(path, op, value))
    }
}

fn valid_attr_name(s: &str) -> bool {
    if s == "$ref" {
        return true;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `[URN ":"] ATTRNAME ["." subAttr]`. The URN is everything up to the last colon, so a URN's
/// own dots ("2.0") never split the attribute.
pub(crate) fn parse_attr_path(s: &str) -> Result<AttrPath, String> {
    let (urn, rest) = match s.rfind(':') {
        Some(i) => (Some(s[..i].to_string()), &s[i + 1..]),
        None => (None, s),
    };
    if let Some(u) = &urn
        && !u.to_ascii_lowercase().starts_with("urn:")
    {
        return Err(format!(
            "'{s}' is not an attribute path: a qualified path starts with a schema URN"
        ));
    }
    let (attr, sub) = match rest.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    if !valid_attr_name(attr) {
        return Err(format!("'{s}' is not a valid attribute path"));
    }
    if let Some(sub) = sub
        && !valid_attr_name(sub)
    {
        return Err(format!("'{s}' is not a valid attribute path"));
    }
    Ok(AttrPath {
        urn,
        attr: attr.to_string(),
        sub: sub.map(str::to_string),
    })
}

pub(crate) fn parse_filter(s: &str, max_depth: usize) -> Result<Filter, String> {
    if s.trim().is_empty() {
        return Err("the filter is empty".into());
    }
    let toks = tokenize(s)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        max_depth,
        src: s,
    };
    let f = p.or_expr(false)?;
    if let Some(t) = p.peek().cloned() {
        return Err(format!(
            "unexpected {} at offset {}; filters combine with 'and' / 'or'",
            describe(&t),
            p.offset()
        ));
    }
    Ok(f)
}

/// A PATCH operation path (RFC 7644 §3.5.2): `attrPath`, `valuePath` (`attr[filter]`), or
/// `valuePath.subAttr` (`attr[filter].sub`).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    /// The sub-attribute after `]`, for `attr[filter].sub`.
    pub sub_after_filter: Option<String>,
}

impl PatchPath {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the path is empty".into());
        }
        let Some(open) = s.find('[') else {
            return Ok(PatchPath {
                attr: parse_attr_path(s)?,
                filter: None,
                sub_after_filter: None,
            });
        };
        let close = s
            .rfind(']')
            .ok_or_else(|| format!("'{s}': '[' without a closing ']'"))?;
        if close < open {
            return Err(format!("'{s}' is not a valid path"));
        }
        let attr = parse_attr_path(&s[..open])?;
        if attr.sub.is_some() {
            return Err(format!(
                "'{s}': a value filter applies to an attribute, not a sub-attribute"
            ));
        }
        let filter = parse_filter(&s[open + 1..close], MAX_FILTER_DEPTH)?;
        let tail = &s[close + 1..];
        let sub_after_filter = if tail.is_empty() {
            None
        } else {
            let sub = tail
                .strip_prefix('.')
                .ok_or_else(|| format!("'{s}': only '.subAttribute' may follow ']'"))?;
            if !valid_attr_name(sub) {
                return Err(format!("'{s}': '{sub}' is not a valid sub-attribute name"));
            }
            Some(sub.to_string())
        };
        Ok(PatchPath {
            attr,
            filter: Some(filter),
            sub_after_filter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Filter {
        parse_filter(s, MAX_FILTER_DEPTH).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc_examples_parse() {
        for f in [
            r#"userName Eq "john""#,
            r#"name.familyName co "O'Malley""#,
            r#"userName sw "J""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            r#"title pr"#,
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"title pr and userType eq "Employee""#,
            r#"title pr or userType eq "Intern""#,
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType eq "Employee" and (emails.type eq "work")"#,
            r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        ] {
            p(f);
        }
    }

    #[test]
    fn precedence_is_not_and_or() {
        let f = p(r#"a eq 1 or b eq 2 and c eq 3"#);
        match f {
            Filter::Or(_, right) => assert!(matches!(*right, Filter::And(_, _))),
            other => panic!("{other:?}"),
        }
        let f = p(r#"not(a pr) and b pr"#);
        assert!(matches!(f, Filter::And(l, _) if matches!(*l, Filter::Not(_))));
    }

    #[test]
    fn literals_and_case_insensitive_keywords() {
        assert_eq!(
            p("active EQ TRUE"),
            Filter::Compare(
                AttrPath::simple("active"),
                CompareOp::Eq,
                Literal::Bool(true)
            )
        );
        assert!(matches!(
            p("x GE -1.5e2"),
            Filter::Compare(_, CompareOp::Ge, Literal::Number(_))
        ));
        assert_eq!(
            p(r#"displayName eq "a \"quoted\" \u00e9""#),
            Filter::eq(AttrPath::simple("displayName"), "a \"quoted\" é")
        );
        assert!(matches!(
            p("x eq null"),
            Filter::Compare(_, _, Literal::Null)
        ));
    }

    #[test]
    fn urn_qualified_paths_split_at_last_colon() {
        let f =
            p(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "x""#);
        let Filter::Compare(path, _, _) = f else {
            panic!()
        };
        assert_eq!(
            path.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(path.attr, "manager");
        assert_eq!(path.sub.as_deref(), Some("value"));
    }

    #[test]
    fn errors_are_descriptive() {
        for (f, want) in [
            ("", "empty"),
            ("userName", "expected an operator"),
            (r#"userName eq"#, "expected a value"),
            (r#"userName xx "a""#, "unknown operator 'xx'"),
            (r#"userName eq "a"#, "unterminated string"),
            (r#"(userName eq "a""#, "expected ')'"),
            (r#"userName eq "a" userName eq "b""#, "unexpected"),
            (r#"emails[type eq "a"[x pr]]"#, "expected ']'"),
            (r#"userName eq john"#, "expected a value"),
            ("a eq 1 ; drop", "unexpected character"),
        ] {
            let err = parse_filter(f, MAX_FILTER_DEPTH).unwrap_err();
            assert!(err.contains(want), "{f:?}: {err}");
        }
    }

    #[test]
    fn depth_limit_rejects_deep_nesting() {
        let deep = format!("{}a pr{}", "(".repeat(40), ")".repeat(40));
        assert!(
            parse_filter(&deep, 32)
                .unwrap_err()
                .contains("nested more than 32")
        );
        let ok = format!("{}a pr{}", "(".repeat(10), ")".repeat(10));
        parse_filter(&ok, 32).unwrap();
    }

    #[test]
    fn patch_paths() {
        let pp = PatchPath::parse(r#"members[value eq "2819c223"]"#).unwrap();
        assert_eq!(pp.attr.attr, "members");
        assert!(pp.filter.is_some());
        let pp = PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(pp.sub_after_filter.as_deref(), Some("value"));
        let pp = PatchPath::parse(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        )
        .unwrap();
        assert_eq!(pp.attr.attr, "employeeNumber");
        assert!(PatchPath::parse("emails[type eq \"work\"]value").is_err());
        assert!(PatchPath::parse("name.").is_err());
    }
}
