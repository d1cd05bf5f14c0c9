//! SCIM filter and PATCH path grammar (RFC 7644 §3.4.2.2, §3.5.2): recursive descent with
//! precedence `not` > `and` > `or`, case-insensitive operators, and limits on length,
//! nesting and terms. The descent recurses only per nesting level (checked on entry); a
//! chain of `and`/`or` is read by a loop into one n-ary node.

use super::{AttrPath, CompareOp, Filter, FilterLimits, Literal};
use crate::error::StoreError;

/// Why a filter was refused: its syntax, or one of the limits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseError {
    pub limit: bool,
    pub message: String,
}

impl ParseError {
    fn syntax(message: String) -> Self {
        ParseError {
            limit: false,
            message,
        }
    }
}

impl From<String> for ParseError {
    fn from(message: String) -> Self {
        ParseError::syntax(message)
    }
}

impl From<&str> for ParseError {
    fn from(message: &str) -> Self {
        ParseError::syntax(message.to_string())
    }
}

/// `s` for an error message: long inputs are cut, so that an error never echoes a
/// megabyte back.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

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
    terms: usize,
    limits: FilterLimits,
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
    fn expect(&mut self, want: Tok) -> Result<(), ParseError> {
        let at = self.offset();
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(format!(
                "expected {} at offset {at}, found {}",
                describe(&want),
                describe(&t)
            )
            .into()),
            None => Err(format!("expected {} at end of filter", describe(&want)).into()),
        }
    }
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(ParseError {
                limit: true,
                message: format!(
                    "the filter is nested more than {} levels deep (the limit max_filter_depth)",
                    self.limits.max_depth
                ),
            });
        }
        Ok(())
    }

    /// Counts one comparison or presence test.
    fn term(&mut self) -> Result<(), ParseError> {
        self.terms += 1;
        if self.terms > self.limits.max_terms {
            return Err(ParseError {
                limit: true,
                message: format!(
                    "the filter has more than {} terms (comparisons and presence tests; the limit max_filter_terms): split the query",
                    self.limits.max_terms
                ),
            });
        }
        Ok(())
    }

    fn or_expr(&mut self, in_value_path: bool) -> Result<Filter, ParseError> {
        let mut items = vec![self.and_expr(in_value_path)?];
        while self.peek_keyword("or") {
            self.next();
            items.push(self.and_expr(in_value_path)?);
        }
        Ok(Filter::any(items))
    }

    fn and_expr(&mut self, in_value_path: bool) -> Result<Filter, ParseError> {
        let mut items = vec![self.unary(in_value_path)?];
        while self.peek_keyword("and") {
            self.next();
            items.push(self.unary(in_value_path)?);
        }
        Ok(Filter::all(items))
    }

    fn unary(&mut self, in_value_path: bool) -> Result<Filter, ParseError> {
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

    fn attr_expr(&mut self, in_value_path: bool) -> Result<Filter, ParseError> {
        let at = self.offset();
        let path = match self.next() {
            Some(Tok::Word(w)) => parse_attr_path(&w).map_err(|e| format!("{e} at offset {at}"))?,
            Some(t) => {
                return Err(format!(
                    "expected an attribute path at offset {at}, found {}",
                    describe(&t)
                )
                .into());
            }
            None => return Err("expected an attribute path at end of filter".into()),
        };
        if self.peek() == Some(&Tok::LBracket) {
            if in_value_path {
                return Err(format!("value filters cannot be nested (offset {at})").into());
            }
            if path.sub.is_some() {
                return Err(format!(
                    "a value filter applies to an attribute, not a sub-attribute (offset {at})"
                )
                .into());
            }
            self.next();
            self.enter()?;
            let inner = self.or_expr(true)?;
            self.expect(Tok::RBracket)?;
            self.depth -= 1;
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.term()?;
        let op_at = self.offset();
        let op = match self.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("pr") => return Ok(Filter::Present(path)),
            Some(Tok::Word(w)) => CompareOp::parse(&w)
                .ok_or_else(|| format!("unknown operator '{w}' at offset {op_at}; expected one of eq ne co sw ew gt ge lt le pr"))?,
            Some(t) => return Err(format!("expected an operator at offset {op_at}, found {}", describe(&t)).into()),
            None => return Err(format!("expected an operator after '{path}'").into()),
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
                )
                .into());
            }
            None => return Err(format!("expected a value after '{path} {}'", op.as_str()).into()),
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

pub(crate) fn parse_filter(s: &str, limits: &FilterLimits) -> Result<Filter, ParseError> {
    // Before anything else looks at the text.
    let length = s.chars().count();
    if length > limits.max_length {
        return Err(ParseError {
            limit: true,
            message: format!(
                "the filter is {length} characters long, more than {} (the limit max_filter_length)",
                limits.max_length
            ),
        });
    }
    if s.trim().is_empty() {
        return Err("the filter is empty".into());
    }
    let toks = tokenize(s)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        terms: 0,
        limits: *limits,
        src: s,
    };
    let f = p.or_expr(false)?;
    if let Some(t) = p.peek().cloned() {
        return Err(format!(
            "unexpected {} at offset {}; filters combine with 'and' / 'or'",
            describe(&t),
            p.offset()
        )
        .into());
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
    /// Parses a path whose value filter must keep within `limits`. A malformed path is
    /// `InvalidPath`; a value filter beyond the limits is `InvalidFilter` (RFC 7644
    /// §3.12 lists invalidFilter for PATCH path filters).
    pub fn parse(s: &str, limits: &FilterLimits) -> Result<Self, StoreError> {
        let s = s.trim();
        let bad = |m: String| StoreError::InvalidPath(m);
        if s.is_empty() {
            return Err(bad("the path is empty".into()));
        }
        let Some(open) = s.find('[') else {
            return Ok(PatchPath {
                attr: parse_attr_path(s).map_err(|e| bad(shown(&e)))?,
                filter: None,
                sub_after_filter: None,
            });
        };
        let close = s
            .rfind(']')
            .ok_or_else(|| bad(format!("'{}': '[' without a closing ']'", shown(s))))?;
        if close < open {
            return Err(bad(format!("'{}' is not a valid path", shown(s))));
        }
        let attr = parse_attr_path(&s[..open]).map_err(|e| bad(shown(&e)))?;
        if attr.sub.is_some() {
            return Err(bad(format!(
                "'{}': a value filter applies to an attribute, not a sub-attribute",
                shown(s)
            )));
        }
        let filter = parse_filter(&s[open + 1..close], limits).map_err(|e| {
            if e.limit {
                StoreError::InvalidFilter(format!("the value filter of {}[…]: {}", attr, e.message))
            } else {
                bad(format!("'{}': {}", shown(s), e.message))
            }
        })?;
        let tail = &s[close + 1..];
        let sub_after_filter = if tail.is_empty() {
            None
        } else {
            let sub = tail.strip_prefix('.').ok_or_else(|| {
                bad(format!(
                    "'{}': only '.subAttribute' may follow ']'",
                    shown(s)
                ))
            })?;
            if !valid_attr_name(sub) {
                return Err(bad(format!(
                    "'{}': '{}' is not a valid sub-attribute name",
                    shown(s),
                    shown(sub)
                )));
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
        parse_filter(s, &FilterLimits::default()).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn limits(max_depth: usize, max_terms: usize) -> FilterLimits {
        FilterLimits {
            max_depth,
            max_terms,
            ..FilterLimits::default()
        }
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
            Filter::Or(v) => assert!(matches!(v.as_slice(), [_, Filter::And(_)])),
            other => panic!("{other:?}"),
        }
        let f = p(r#"not(a pr) and b pr"#);
        assert!(matches!(f, Filter::And(v) if matches!(v[0], Filter::Not(_))));
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
            let err = parse_filter(f, &FilterLimits::default()).unwrap_err();
            assert!(!err.limit, "{f:?}");
            assert!(err.message.contains(want), "{f:?}: {}", err.message);
        }
    }

    #[test]
    fn depth_limit_rejects_deep_nesting() {
        let deep = format!("{}a pr{}", "(".repeat(40), ")".repeat(40));
        let err = parse_filter(&deep, &limits(32, 1000)).unwrap_err();
        assert!(
            err.limit && err.message.contains("nested more than 32"),
            "{err:?}"
        );
        let ok = format!("{}a pr{}", "(".repeat(10), ")".repeat(10));
        parse_filter(&ok, &limits(32, 1000)).unwrap();
    }

    fn or_chain(n: usize) -> String {
        (0..n)
            .map(|i| format!("value eq \"{i}\""))
            .collect::<Vec<_>>()
            .join(" or ")
    }

    #[test]
    fn chains_are_one_flat_node() {
        let Filter::Or(items) = p(&or_chain(500)) else {
            panic!("not an OR");
        };
        assert_eq!(items.len(), 500);
        assert!(items.iter().all(|f| matches!(f, Filter::Compare(..))));
        // Parentheses around a chain splice into the enclosing one.
        let f = p("a pr and (b pr and c pr) and ((d pr))");
        assert!(matches!(&f, Filter::And(v) if v.len() == 4), "{f:?}");
        assert_eq!(f.size().terms, 4);
        assert_eq!(p("not (a pr) or x[y pr and z pr]").size().depth, 1);
    }

    #[test]
    fn term_limit_counts_comparisons_and_presence() {
        let l = limits(32, 1000);
        assert_eq!(
            parse_filter(&or_chain(1000), &l).unwrap().size().terms,
            1000
        );
        let err = parse_filter(&or_chain(1001), &l).unwrap_err();
        assert!(
            err.limit && err.message.contains("more than 1000 terms"),
            "{err:?}"
        );
        let err = parse_filter("a pr and b pr and c pr", &limits(32, 2)).unwrap_err();
        assert!(err.limit, "{err:?}");
        // 30,000 terms (about 650 KB) are refused at the first term past the limit, and a
        // text past the length limit before it is read at all.
        let huge = or_chain(30_000);
        let err = parse_filter(
            &huge,
            &FilterLimits {
                max_length: usize::MAX,
                ..l
            },
        )
        .unwrap_err();
        assert!(err.limit && err.message.contains("terms"), "{err:?}");
        let err = parse_filter(&huge, &FilterLimits::default()).unwrap_err();
        assert!(
            err.limit && err.message.contains("characters long"),
            "{err:?}"
        );
    }

    #[test]
    fn patch_paths() {
        let l = FilterLimits::default();
        let pp = PatchPath::parse(r#"members[value eq "2819c223"]"#, &l).unwrap();
        assert_eq!(pp.attr.attr, "members");
        assert!(pp.filter.is_some());
        let pp = PatchPath::parse(r#"emails[type eq "work"].value"#, &l).unwrap();
        assert_eq!(pp.sub_after_filter.as_deref(), Some("value"));
        let pp = PatchPath::parse(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            &l,
        )
        .unwrap();
        assert_eq!(pp.attr.attr, "employeeNumber");
        assert!(matches!(
            PatchPath::parse("emails[type eq \"work\"]value", &l),
            Err(StoreError::InvalidPath(_))
        ));
        assert!(matches!(
            PatchPath::parse("name.", &l),
            Err(StoreError::InvalidPath(_))
        ));
    }

    #[test]
    fn patch_path_filters_keep_to_the_limits() {
        let path = format!("emails[{}]", or_chain(30_000));
        match PatchPath::parse(&path, &FilterLimits::default()) {
            Err(StoreError::InvalidFilter(m)) => {
                assert!(m.contains("65536") && m.len() < 200, "{m}")
            }
            other => panic!("{other:?}"),
        }
        let unlimited_length = FilterLimits {
            max_length: usize::MAX,
            ..FilterLimits::default()
        };
        match PatchPath::parse(&path, &unlimited_length) {
            Err(StoreError::InvalidFilter(m)) => {
                assert!(m.contains("more than 1000 terms"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let deep = format!("emails[{}type pr{}]", "(".repeat(33), ")".repeat(33));
        assert!(matches!(
            PatchPath::parse(&deep, &FilterLimits::default()),
            Err(StoreError::InvalidFilter(_))
        ));
        let pp =
            PatchPath::parse(&format!("members[{}]", or_chain(1000)), &unlimited_length).unwrap();
        assert!(matches!(pp.filter, Some(Filter::Or(v)) if v.len() == 1000));
    }
}
