//! Resolved filters → SQL conditions over indexed columns and the attribute index. Every
//! leaf is an indexed lookup (`akey, value_text`) or a dedicated column; nothing is filtered
//! after loading.

use sea_orm::DbBackend;

use super::builder::Sql;
use crate::filter::{
    AttrTarget, CompareOp, MemberCondition, MemberField, Nesting, ResolvedFilter, ResolvedValue,
};
use crate::model::AttrType;

pub(crate) struct Compiler {
    pub backend: DbBackend,
    pub max_group_depth: i64,
    alias: usize,
}

/// The highest code point: appended to a prefix it bounds every string starting with it.
const MAX_CHAR: char = '\u{10FFFF}';

impl Compiler {
    pub fn new(backend: DbBackend, max_group_depth: i64) -> Self {
        Compiler {
            backend,
            max_group_depth,
            alias: 0,
        }
    }

    fn fresh(&mut self, base: &str) -> String {
        self.alias += 1;
        format!("{base}{}", self.alias)
    }

    /// `col <op> value` for text values (already folded where the attribute folds).
    fn text_compare(&self, out: &mut Sql, col: &str, op: CompareOp, v: &str) {
        match op {
            CompareOp::Eq | CompareOp::Ne => {
                out.push(col)
                    .push(if op == CompareOp::Eq { " = " } else { " <> " })
                    .bind(v.to_string());
            }
            CompareOp::Gt => {
                out.push(col).push(" > ").bind(v.to_string());
            }
            CompareOp::Ge => {
                out.push(col).push(" >= ").bind(v.to_string());
            }
            CompareOp::Lt => {
                out.push(col).push(" < ").bind(v.to_string());
            }
            CompareOp::Le => {
                out.push(col).push(" <= ").bind(v.to_string());
            }
            CompareOp::Sw => {
                // A range, so the index serves prefix searches.
                let mut upper = v.to_string();
                upper.push(MAX_CHAR);
                out.push("(").push(col).push(" >= ").bind(v.to_string());
                out.push(" AND ")
                    .push(col)
                    .push(" < ")
                    .bind(upper)
                    .push(")");
            }
            CompareOp::Co => {
                let f = if self.backend == DbBackend::Postgres {
                    "strpos"
                } else {
                    "instr"
                };
                out.push(f)
                    .push("(")
                    .push(col)
                    .push(", ")
                    .bind(v.to_string())
                    .push(") > 0");
            }
            CompareOp::Ew => {
                let n = v.chars().count() as i64;
                if self.backend == DbBackend::Postgres {
                    out.push("right(")
                        .push(col)
                        .push(", CAST(")
                        .bind(n)
                        .push(" AS INTEGER)) = ")
                        .bind(v.to_string());
                } else {
                    out.push("(length(").push(col).push(") >= ").bind(n);
                    out.push(" AND substr(")
                        .push(col)
                        .push(", -")
                        .bind(n)
                        .push(") = ")
                        .bind(v.to_string())
                        .push(")");
                }
            }
        }
    }

    fn value_compare(
        &self,
        out: &mut Sql,
        text_col: &str,
        num_col: &str,
        op: CompareOp,
        v: &ResolvedValue,
    ) {
        match v {
            ResolvedValue::Text(t) => self.text_compare(out, text_col, op, t),
            ResolvedValue::Number(n) => {
                let sym = match op {
                    CompareOp::Eq => " = ",
                    CompareOp::Ne => " <> ",
                    CompareOp::Gt => " > ",
                    CompareOp::Ge => " >= ",
                    CompareOp::Lt => " < ",
                    _ => " <= ",
                };
                out.push(num_col).push(sym).bind(*n);
            }
        }
    }

    fn column(target: &AttrTarget, r: &str) -> Option<String> {
        Some(match target {
            AttrTarget::Id => format!("{r}.id"),
            AttrTarget::ExternalId => format!("{r}.external_id"),
            AttrTarget::Name => format!("{r}.name_norm"),
            AttrTarget::Created => format!("{r}.created"),
            AttrTarget::LastModified => format!("{r}.modified"),
            AttrTarget::ResourceType => format!("{r}.resource_type"),
            _ => return None,
        })
    }

    /// A condition on index rows `x` (alias) for one leaf.
    fn index_leaf(
        &mut self,
        out: &mut Sql,
        x: &str,
        target: &AttrTarget,
        cmp: Option<(CompareOp, &ResolvedValue)>,
    ) {
        match target {
            AttrTarget::Indexed { key, kind, .. } => {
                out.push(&format!("{x}.akey = ")).bind(key.clone());
                if let Some((op, v)) = cmp {
                    out.push(" AND ");
                    let v = match (kind, v) {
                        (AttrType::Integer | AttrType::Decimal, ResolvedValue::Text(t)) => {
                            ResolvedValue::Number(t.parse().unwrap_or(f64::NAN))
                        }
                        _ => v.clone(),
                    };
                    self.value_compare(
                        out,
                        &format!("{x}.value_text"),
                        &format!("{x}.value_num"),
                        op,
                        &v,
                    );
                }
            }
            AttrTarget::AnyUnder { prefix } => {
                let mut upper = prefix.clone();
                upper.push(MAX_CHAR);
                out.push(&format!("{x}.akey >= ")).bind(prefix.clone());
                out.push(&format!(" AND {x}.akey < ")).bind(upper);
            }
            _ => unreachable!("column targets are not in the index"),
        }
    }

    /// Compiles `f` to a condition on the resources row aliased `r`.
    pub fn compile(&mut self, f: &ResolvedFilter, r: &str, out: &mut Sql) {
        match f {
            ResolvedFilter::And(a, b) | ResolvedFilter::Or(a, b) => {
                let joiner = if matches!(f, ResolvedFilter::And(..)) {
                    " AND "
                } else {
                    " OR "
                };
                out.push("(");
                self.compile(a, r, out);
                out.push(joiner);
                self.compile(b, r, out);
                out.push(")");
            }
            ResolvedFilter::Not(a) => {
                out.push("NOT (");
                self.compile(a, r, out);
                out.push(")");
            }
            ResolvedFilter::Const(true) => {
                out.push("1 = 1");
            }
            ResolvedFilter::Const(false) => {
                out.push("1 = 0");
            }
            ResolvedFilter::Present(t) => match Self::column(t, r) {
                Some(col) => {
                    out.push(&format!("{col} IS NOT NULL"));
                }
                None => {
                    let x = self.fresh("x");
                    out.push(&format!(
                        "{r}.rid IN (SELECT {x}.resource_rid FROM attr_index {x} WHERE "
                    ));
                    self.index_leaf(out, &x, t, None);
                    out.push(")");
                }
            },
            ResolvedFilter::Compare(t, op, v) => match Self::column(t, r) {
                Some(col) => {
                    // Never NULL, so that NOT (...) keeps resources without the attribute.
                    out.push(&format!("({col} IS NOT NULL AND "));
                    self.value_compare(out, &col, &col, *op, v);
                    out.push(")");
                }
                None => {
                    let x = self.fresh("x");
                    out.push(&format!(
                        "{r}.rid IN (SELECT {x}.resource_rid FROM attr_index {x} WHERE "
                    ));
                    self.index_leaf(out, &x, t, Some((*op, v)));
                    out.push(")");
                }
            },
            ResolvedFilter::Element { key, inner } => {
                let e = self.fresh("e");
                out.push(&format!(
                    "{r}.rid IN (SELECT {e}.resource_rid FROM attr_index {e} WHERE {e}.akey = "
                ))
                .bind(key.clone())
                .push(" AND ");
                self.compile_element(inner, &e, out);
                out.push(")");
            }
            ResolvedFilter::MemberOf { groups, nesting } => {
                let g = self.fresh("g");
                if *nesting == Nesting::Direct {
                    let m = self.fresh("m");
                    out.push(&format!(
                        "{r}.rid IN (SELECT {m}.member_rid FROM memberships {m} JOIN resources {g} ON {g}.rid = {m}.group_rid WHERE "
                    ));
                    self.member_condition(groups, &g, &m, out);
                    out.push(")");
                } else {
                    let d = self.fresh("d");
                    let m = self.fresh("m");
                    out.push(&format!(
                        "{r}.rid IN (WITH RECURSIVE {d}(rid, depth) AS (SELECT {g}.rid, CAST(0 AS BIGINT) FROM resources {g} WHERE {g}.resource_type = 'Group' AND "
                    ));
                    self.member_condition(groups, &g, &m, out);
                    out.push(&format!(
                        " UNION SELECT {m}.member_rid, {d}.depth + 1 FROM {d} JOIN memberships {m} ON {m}.group_rid = {d}.rid WHERE {d}.depth < "
                    ))
                    .bind(self.max_group_depth)
                    .push(&format!(") SELECT {d}.rid FROM {d} WHERE {d}.depth "))
                    .push(if *nesting == Nesting::Indirect { ">= 2" } else { ">= 1" })
                    .push(")");
                }
            }
            ResolvedFilter::HasMember { members } => {
                let m = self.fresh("m");
                let u = self.fresh("u");
                out.push(&format!(
                    "{r}.rid IN (SELECT {m}.group_rid FROM memberships {m} JOIN resources {u} ON {u}.rid = {m}.member_rid WHERE "
                ));
                self.member_condition(members, &u, &m, out);
                out.push(")");
            }
        }
    }

    /// Inside `attr[...]`: leaves must hold for the same element as `e`.
    fn compile_element(&mut self, f: &ResolvedFilter, e: &str, out: &mut Sql) {
        match f {
            ResolvedFilter::And(a, b) | ResolvedFilter::Or(a, b) => {
                let joiner = if matches!(f, ResolvedFilter::And(..)) {
                    " AND "
                } else {
                    " OR "
                };
                out.push("(");
                self.compile_element(a, e, out);
                out.push(joiner);
                self.compile_element(b, e, out);
                out.push(")");
            }
            ResolvedFilter::Not(a) => {
                out.push("NOT (");
                self.compile_element(a, e, out);
                out.push(")");
            }
            ResolvedFilter::Const(b) => {
                out.push(if *b { "1 = 1" } else { "1 = 0" });
            }
            ResolvedFilter::Present(t) | ResolvedFilter::Compare(t, _, _) => {
                let x = self.fresh("x");
                out.push(&format!(
                    "EXISTS (SELECT 1 FROM attr_index {x} WHERE {x}.resource_rid = {e}.resource_rid AND {x}.elem = {e}.elem AND "
                ));
                let cmp = match f {
                    ResolvedFilter::Compare(_, op, v) => Some((*op, v)),
                    _ => None,
                };
                self.index_leaf(out, &x, t, cmp);
                out.push(")");
            }
            // The resolver never nests these inside a value filter.
            ResolvedFilter::Element { .. }
            | ResolvedFilter::MemberOf { .. }
            | ResolvedFilter::HasMember { .. } => {
                out.push("1 = 0");
            }
        }
    }

    /// A condition on the resource `o` at the other end of membership row `m`.
    pub(crate) fn member_condition(
        &mut self,
        c: &MemberCondition,
        o: &str,
        m: &str,
        out: &mut Sql,
    ) {
        match c {
            MemberCondition::And(a, b) | MemberCondition::Or(a, b) => {
                let joiner = if matches!(c, MemberCondition::And(..)) {
                    " AND "
                } else {
                    " OR "
                };
                out.push("(");
                self.member_condition(a, o, m, out);
                out.push(joiner);
                self.member_condition(b, o, m, out);
                out.push(")");
            }
            MemberCondition::Not(a) => {
                out.push("NOT (");
                self.member_condition(a, o, m, out);
                out.push(")");
            }
            MemberCondition::Present(field) => {
                let col = match field {
                    MemberField::Value => format!("{o}.id"),
                    MemberField::Display => format!("{o}.display"),
                    MemberField::Type => format!("{o}.resource_type"),
                };
                out.push(&format!("{col} IS NOT NULL"));
            }
            MemberCondition::Compare(field, op, v) => {
                let col = match field {
                    MemberField::Value => format!("{o}.id"),
                    // A group's folded displayName is its name_norm; a user's display is
                    // folded on the fly.
                    MemberField::Display => format!("lower(COALESCE({o}.display, ''))"),
                    MemberField::Type => format!("{o}.resource_type"),
                };
                let _ = m;
                out.push("(");
                self.text_compare(out, &col, *op, v);
                out.push(")");
            }
        }
    }
}
