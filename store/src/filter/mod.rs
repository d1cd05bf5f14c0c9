//! The one filter AST. SCIM filters (RFC 7644 §3.4.2.2) parse into it here; the LDAP front
//! builds it from LDAP filters; the engine uses it for consumer scoping; `sql/` compiles it.

mod parse;
mod resolve;

pub use parse::PatchPath;
pub(crate) use parse::shown;
pub use resolve::{
    AttrTarget, MemberCondition, MemberField, Nesting, ResolvedFilter, ResolvedPath, ResolvedValue,
    resolve, resolve_member_filter, resolve_sort_path,
};

use std::fmt;

/// An attribute reference as written: optional schema URN, attribute, optional sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl AttrPath {
    pub fn simple(attr: &str) -> Self {
        AttrPath {
            urn: None,
            attr: attr.to_string(),
            sub: None,
        }
    }
    pub fn with_sub(attr: &str, sub: &str) -> Self {
        AttrPath {
            urn: None,
            attr: attr.to_string(),
            sub: Some(sub.to_string()),
        }
    }

    /// Parses `[URN ":"] attr ["." sub]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        parse::parse_attr_path(s)
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        write!(f, "{}", self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
    pub fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }
    pub fn is_substring(self) -> bool {
        matches!(self, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
    Null,
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => write!(f, "null"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every operand holds. Built through [`Filter::all`] / [`Filter::and`], which flatten
    /// nested conjunctions, so that a long chain is one node and nothing that walks the tree
    /// recurses once per operand.
    And(Vec<Filter>),
    /// Some operand holds; flattened like `And` by [`Filter::any`] / [`Filter::or`].
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    Compare(AttrPath, CompareOp, Literal),
    /// `attr[filter]`: some single value of the multi-valued `attr` satisfies `filter`,
    /// whose paths name sub-attributes.
    ValuePath(AttrPath, Box<Filter>),
    /// Matches everything (`true`) or nothing (`false`): LDAP's `(objectClass=*)` and
    /// filters on attributes a resource type does not have.
    Const(bool),
}

/// Default nesting limit (parentheses, `not`, value paths).
pub const MAX_FILTER_DEPTH: usize = 32;
/// Default limit on the terms of a filter: comparisons and presence tests. A membership
/// query of a few hundred ids fits; the SQL of the largest accepted filter stays far below
/// the database's limits (see [`FilterLimits::CEILING`]).
pub const MAX_FILTER_TERMS: usize = 1000;
/// Default limit on the length of a filter text, in characters: room for
/// [`MAX_FILTER_TERMS`] terms of about 60 characters (an id equality with its `or`).
pub const MAX_FILTER_LENGTH: usize = 65536;

/// How large a filter may be. Checked while parsing, before anything walks the filter; the
/// LDAP front applies `max_terms` to the filters it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Longest filter text, in characters.
    pub max_length: usize,
    /// Deepest nesting of parentheses, `not` and value filters.
    pub max_depth: usize,
    /// Most terms (comparisons and presence tests).
    pub max_terms: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_length: MAX_FILTER_LENGTH,
            max_depth: MAX_FILTER_DEPTH,
            max_terms: MAX_FILTER_TERMS,
        }
    }
}

impl FilterLimits {
    /// The largest limits a configuration may set. At this size the SQL of any accepted
    /// filter binds fewer than 32,766 parameters (SQLite's limit; a term binds at most 16)
    /// and its expression tree stays far below SQLite's depth limit of 1,000 (operands are
    /// combined as balanced trees, and nesting adds at most two levels per level).
    pub const CEILING: FilterLimits = FilterLimits {
        max_length: 4 * 1024 * 1024,
        max_depth: 64,
        max_terms: 2000,
    };

    /// An error message when a configured limit is out of range; `prefix` names the keys,
    /// e.g. "scim.max_filter".
    pub fn check(&self, prefix: &str) -> Result<(), String> {
        let c = Self::CEILING;
        for (key, v, max) in [
            ("length", self.max_length, c.max_length),
            ("depth", self.max_depth, c.max_depth),
            ("terms", self.max_terms, c.max_terms),
        ] {
            if v == 0 || v > max {
                return Err(format!(
                    "{prefix}_{key} is {v}; it must be between 1 and {max}"
                ));
            }
        }
        Ok(())
    }
}

/// The size of a filter: its terms and its nesting depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterSize {
    pub terms: usize,
    pub depth: usize,
}

impl Filter {
    /// Parses a SCIM filter with the default limits.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::parse_limited(s, &FilterLimits::default())
    }

    /// Parses a SCIM filter; a filter beyond `limits` is refused before it is built.
    pub fn parse_limited(s: &str, limits: &FilterLimits) -> Result<Self, String> {
        parse::parse_filter(s, limits).map_err(|e| e.message)
    }

    /// The conjunction of `items`, flattened: nested conjunctions are spliced in, and a
    /// single operand stands alone. An empty conjunction is `Const(true)`.
    pub fn all(items: impl IntoIterator<Item = Filter>) -> Filter {
        let mut out = Vec::new();
        for f in items {
            match f {
                Filter::And(v) => out.extend(v),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Filter::Const(true),
            1 => out.pop().unwrap_or(Filter::Const(true)),
            _ => Filter::And(out),
        }
    }

    /// The disjunction of `items`, flattened like [`Filter::all`]; empty is `Const(false)`.
    pub fn any(items: impl IntoIterator<Item = Filter>) -> Filter {
        let mut out = Vec::new();
        for f in items {
            match f {
                Filter::Or(v) => out.extend(v),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Filter::Const(false),
            1 => out.pop().unwrap_or(Filter::Const(false)),
            _ => Filter::Or(out),
        }
    }

    pub fn and(a: Filter, b: Filter) -> Filter {
        Filter::all([a, b])
    }
    pub fn or(a: Filter, b: Filter) -> Filter {
        Filter::any([a, b])
    }
    #[allow(clippy::should_implement_trait)]
    pub fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }
    pub fn eq(path: AttrPath, value: &str) -> Filter {
        Filter::Compare(path, CompareOp::Eq, Literal::String(value.to_string()))
    }

    /// Terms and nesting depth, counted without recursion.
    pub fn size(&self) -> FilterSize {
        let mut size = FilterSize::default();
        let mut stack: Vec<(&Filter, usize)> = vec![(self, 0)];
        while let Some((f, depth)) = stack.pop() {
            size.depth = size.depth.max(depth);
            match f {
                Filter::And(v) | Filter::Or(v) => stack.extend(v.iter().map(|x| (x, depth))),
                Filter::Not(x) | Filter::ValuePath(_, x) => stack.push((x, depth + 1)),
                Filter::Present(_) | Filter::Compare(..) => size.terms += 1,
                Filter::Const(_) => {}
            }
        }
        size
    }
}

/// Writes `items` joined by `sep`, each operand parenthesised where needed.
fn write_joined(f: &mut fmt::Formatter<'_>, items: &[Filter], sep: &str) -> fmt::Result {
    write!(f, "(")?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            write!(f, " {sep} ")?;
        }
        write!(f, "{x}")?;
    }
    write!(f, ")")
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(v) => write_joined(f, v, "and"),
            Filter::Or(v) => write_joined(f, v, "or"),
            Filter::Not(a) => write!(f, "not ({a})"),
            Filter::Present(p) => write!(f, "{p} pr"),
            Filter::Compare(p, op, v) => write!(f, "{p} {} {v}", op.as_str()),
            Filter::ValuePath(p, inner) => write!(f, "{p}[{inner}]"),
            Filter::Const(true) => write!(f, "true"),
            Filter::Const(false) => write!(f, "false"),
        }
    }
}
