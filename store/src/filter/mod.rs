//! The one filter AST. SCIM filters (RFC 7644 §3.4.2.2) parse into it here; the LDAP front
//! builds it from LDAP filters; the engine uses it for consumer scoping; `sql/` compiles it.

mod parse;
mod resolve;

pub use parse::{MAX_FILTER_DEPTH, PatchPath};
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
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
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

impl Filter {
    /// Parses a SCIM filter with the default nesting limit.
    pub fn parse(s: &str) -> Result<Self, String> {
        parse::parse_filter(s, MAX_FILTER_DEPTH)
    }

    pub fn parse_with_depth(s: &str, max_depth: usize) -> Result<Self, String> {
        parse::parse_filter(s, max_depth)
    }

    pub fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }
    pub fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }
    #[allow(clippy::should_implement_trait)]
    pub fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }
    pub fn eq(path: AttrPath, value: &str) -> Filter {
        Filter::Compare(path, CompareOp::Eq, Literal::String(value.to_string()))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(a, b) => write!(f, "({a} and {b})"),
            Filter::Or(a, b) => write!(f, "({a} or {b})"),
            Filter::Not(a) => write!(f, "not ({a})"),
            Filter::Present(p) => write!(f, "{p} pr"),
            Filter::Compare(p, op, v) => write!(f, "{p} {} {v}", op.as_str()),
            Filter::ValuePath(p, inner) => write!(f, "{p}[{inner}]"),
            Filter::Const(true) => write!(f, "true"),
            Filter::Const(false) => write!(f, "false"),
        }
    }
}
