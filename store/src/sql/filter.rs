//! Resolved filters → SQL conditions over indexed columns and the attribute index. Every
//! leaf is an indexed lookup (`akey, value_text`) or a dedicated column; nothing is filtered
//! after loading.
//!
//! The operands of an n-ary AND/OR are written as a balanced tree of parentheses: SQLite
//! parses `a OR b OR c …` into a chain as deep as it is long and refuses expression trees
//! deeper than 1,000, while a balanced tree of 2,000 operands is 11 levels deep. The
//! compiler itself recurses only per nesting level and per halving of a list.

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
    /// Bind every `IN` list of two or more values as one JSON array (see `compile`).
    json_lists: bool,
}

/// Bound parameters one filter's SQL may use before its `IN` lists are bound as JSON
/// arrays instead: below SQLite's limit of 32,766 per statement with room for the rest of
/// the statement. Without lists a term binds at most 12 (an LDAP `(cn=*x)` tests three
/// attributes), so a filter within the term ceiling then stays below this too; only lists
/// the server derives from data (the groups containing a member) can be longer than the
/// terms that asked for them.
const BIND_BUDGET: usize = 30_000;

/// The highest code point: appended to a prefix it bounds every string starting with it.
const MAX_CHAR: char = '\u{10FFFF}';

/// `IN` lists longer than this are bound as one JSON array instead of one parameter per
/// value. Lists built from a client's filter never get here (they are bounded by the term
/// limit); lists the server derives from data can (the groups containing a member).
const MAX_BOUND_IN_LIST: usize = 2000;

/// What an index-row leaf tests.
#[derive(Clone, Copy)]
enum LeafTest<'a> {
    Present,
    Compare(CompareOp, &'a ResolvedValue),
    In(&'a [ResolvedValue]),
}

/// What index rows of a leaf belong to: the resource row `r`, or the element row `e` of a
/// value filter.
#[derive(Clone, Copy)]
enum Within<'a> {
    Resource(&'a str),
    Element(&'a str),
}

/// An operand of an OR: a filter, or the tests of several operands on one indexed target.
enum OrPart<'a> {
    Node(&'a ResolvedFilter),
    Lookup(&'a AttrTarget, Vec<LeafTest<'a>>),
}

impl Compiler {
    pub fn new(backend: DbBackend, max_group_depth: i64) -> Self {
        Compiler {
            backend,
            max_group_depth,
            alias: 0,
            json_lists: false,
        }
    }

    /// Appends `f` as a condition on the resources row aliased `r`.
    pub fn compile(&mut self, f: &ResolvedFilter, r: &str, out: &mut Sql) {
        self.bounded(out, |c, sql| c.node(f, r, sql));
    }

    /// Appends `c` as a condition on the resource `o` at the other end of a membership.
    pub fn member_condition(&mut self, c: &MemberCondition, o: &str, out: &mut Sql) {
        self.bounded(out, |comp, sql| comp.member_node(c, o, sql));
    }

    /// Writes a condition with `write`; when it binds more than the budget, writes it again
    /// with JSON-bound lists.
    fn bounded(&mut self, out: &mut Sql, write: impl Fn(&mut Self, &mut Sql)) {
        let mut cond = Sql::default();
        write(self, &mut cond);
        if cond.params.len() > BIND_BUDGET && !self.json_lists {
            self.json_lists = true;
            cond = Sql::default();
            write(self, &mut cond);
            self.json_lists = false;
        }
        out.append(cond);
    }

    fn fresh(&mut self, base: &str) -> String {
        self.alias += 1;
        format!("{base}{}", self.alias)
    }

    /// `col <op> value` for text values (already folded where the attribute folds).
    fn text_compare(&self, out: &mut Sql, col: &str, op: CompareOp, v: &str) {
        if op.is_substring() && v.is_empty() {
            // Every string contains, starts and ends with "" (SQLite's substr(x, -0) is
            // the whole string, not "").
            out.push("1 = 1");
            return;
        }
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

    /// `col IN (…)` for text values.
    fn text_in(&self, out: &mut Sql, col: &str, values: Vec<String>) {
        if values.len() > MAX_BOUND_IN_LIST || (self.json_lists && values.len() > 1) {
            let json = serde_json::Value::from(values).to_string();
            if self.backend == DbBackend::Postgres {
                out.push(col)
                    .push(" IN (SELECT jsonb_array_elements_text(CAST(")
                    .bind(json)
                    .push(" AS jsonb)))");
            } else {
                out.push(col)
                    .push(" IN (SELECT value FROM json_each(")
                    .bind(json)
                    .push("))");
            }
        } else {
            out.push(col).push(" IN ").bind_list(&values);
        }
    }

    /// `text_col IN (…)` / `num_col IN (…)` for a list of values of either kind.
    fn value_in(&self, out: &mut Sql, text_col: &str, num_col: &str, values: &[ResolvedValue]) {
        let mut texts = Vec::new();
        let mut nums = Vec::new();
        for v in values {
            match v {
                ResolvedValue::Text(t) => texts.push(t.clone()),
                ResolvedValue::Number(n) => nums.push(*n),
            }
        }
        match (texts.is_empty(), nums.is_empty()) {
            (true, true) => {
                out.push("1 = 0");
            }
            (false, true) => self.text_in(out, text_col, texts),
            (true, false) => {
                out.push(num_col).push(" IN ").bind_list(&nums);
            }
            (false, false) => {
                out.push("(");
                self.text_in(out, text_col, texts);
                out.push(" OR ").push(num_col).push(" IN ").bind_list(&nums);
                out.push(")");
            }
        }
    }

    /// A condition on index rows `x` (alias): their key is the target's, and (for an
    /// indexed target) their value passes one of `tests`.
    fn index_leaf(&mut self, out: &mut Sql, x: &str, target: &AttrTarget, tests: &[LeafTest<'_>]) {
        match target {
            AttrTarget::Indexed { key, kind, .. } => {
                out.push(&format!("{x}.akey = ")).bind(key.clone());
                let numeric = matches!(kind, AttrType::Integer | AttrType::Decimal);
                let typed = |v: &ResolvedValue| match (numeric, v) {
                    (true, ResolvedValue::Text(t)) => {
                        ResolvedValue::Number(t.parse().unwrap_or(f64::NAN))
                    }
                    _ => v.clone(),
                };
                let (text_col, num_col) = (format!("{x}.value_text"), format!("{x}.value_num"));
                out.push(" AND ");
                self.balanced(tests, " OR ", "1 = 0", out, &mut |c, test, o| match test {
                    LeafTest::Compare(op, v) => {
                        c.value_compare(o, &text_col, &num_col, *op, &typed(v));
                    }
                    LeafTest::In(vs) => {
                        let vs: Vec<ResolvedValue> = vs.iter().map(typed).collect();
                        c.value_in(o, &text_col, &num_col, &vs);
                    }
                    // An empty string is no value (RFC 7644 §3.4.2.2, "pr").
                    LeafTest::Present => {
                        o.push(&format!("{x}.value_text <> ''"));
                    }
                });
            }
            AttrTarget::AnyUnder { prefix } => {
                let mut upper = prefix.clone();
                upper.push(MAX_CHAR);
                out.push(&format!("{x}.akey >= ")).bind(prefix.clone());
                out.push(&format!(" AND {x}.akey < ")).bind(upper);
            }
            // Column targets never reach the index; match nothing rather than panic.
            _ => {
                out.push("1 = 0");
            }
        }
    }

    /// One lookup in the attribute index for `target` and `tests`, tied to the resource
    /// row or to the element `within` names.
    fn index_lookup(
        &mut self,
        out: &mut Sql,
        within: Within<'_>,
        target: &AttrTarget,
        tests: &[LeafTest<'_>],
    ) {
        let x = self.fresh("x");
        match within {
            Within::Resource(r) => out.push(&format!(
                "{r}.rid IN (SELECT {x}.resource_rid FROM attr_index {x} WHERE "
            )),
            Within::Element(e) => out.push(&format!(
                "EXISTS (SELECT 1 FROM attr_index {x} WHERE {x}.resource_rid = {e}.resource_rid AND {x}.elem = {e}.elem AND "
            )),
        };
        self.index_leaf(out, &x, target, tests);
        out.push(")");
    }

    /// Writes the OR of `items`, with the comparisons on one indexed attribute gathered into
    /// one index lookup (one subquery instead of one per term).
    fn gathered_or(
        &mut self,
        items: &[ResolvedFilter],
        within: Within<'_>,
        out: &mut Sql,
        node: &mut dyn FnMut(&mut Self, &ResolvedFilter, &mut Sql),
    ) {
        let mut parts: Vec<OrPart<'_>> = Vec::new();
        for f in items {
            let (target, test) = match f {
                ResolvedFilter::Compare(t @ AttrTarget::Indexed { .. }, op, v) => {
                    (t, LeafTest::Compare(*op, v))
                }
                ResolvedFilter::In(t @ AttrTarget::Indexed { .. }, vs) => (t, LeafTest::In(vs)),
                ResolvedFilter::Present(t @ AttrTarget::Indexed { .. }) => (t, LeafTest::Present),
                other => {
                    parts.push(OrPart::Node(other));
                    continue;
                }
            };
            let same = parts.iter_mut().find_map(|p| match p {
                OrPart::Lookup(t, tests) if *t == target => Some(tests),
                _ => None,
            });
            match same {
                Some(tests) => tests.push(test),
                None => parts.push(OrPart::Lookup(target, vec![test])),
            }
        }
        self.balanced(&parts, " OR ", "1 = 0", out, &mut |c, p, o| match p {
            OrPart::Node(f) => node(c, f, o),
            OrPart::Lookup(t, tests) => c.index_lookup(o, within, t, tests),
        });
    }

    /// Writes `items` joined by `joiner` as a balanced tree; `empty` when there are none.
    fn balanced<T>(
        &mut self,
        items: &[T],
        joiner: &str,
        empty: &str,
        out: &mut Sql,
        each: &mut dyn FnMut(&mut Self, &T, &mut Sql),
    ) {
        match items {
            [] => {
                out.push(empty);
            }
            [one] => each(self, one, out),
            _ => {
                let (a, b) = items.split_at(items.len() / 2);
                out.push("(");
                self.balanced(a, joiner, empty, out, each);
                out.push(joiner);
                self.balanced(b, joiner, empty, out, each);
                out.push(")");
            }
        }
    }

    /// Compiles `f` to a condition on the resources row aliased `r`.
    fn node(&mut self, f: &ResolvedFilter, r: &str, out: &mut Sql) {
        match f {
            ResolvedFilter::And(items) => {
                self.balanced(items, " AND ", "1 = 1", out, &mut |c, x, o| c.node(x, r, o));
            }
            ResolvedFilter::Or(items) => {
                self.gathered_or(items, Within::Resource(r), out, &mut |c, f, o| {
                    c.node(f, r, o)
                });
            }
            ResolvedFilter::Not(a) => {
                out.push("NOT (");
                self.node(a, r, out);
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
                    out.push(&format!("({col} IS NOT NULL AND {col} <> '')"));
                }
                None => self.index_lookup(out, Within::Resource(r), t, &[LeafTest::Present]),
            },
            ResolvedFilter::Compare(t, op, v) => match Self::column(t, r) {
                Some(col) => {
                    // Never NULL, so that NOT (...) keeps resources without the attribute.
                    out.push(&format!("({col} IS NOT NULL AND "));
                    self.value_compare(out, &col, &col, *op, v);
                    out.push(")");
                }
                None => {
                    self.index_lookup(out, Within::Resource(r), t, &[LeafTest::Compare(*op, v)])
                }
            },
            ResolvedFilter::In(t, vs) => match Self::column(t, r) {
                Some(col) => {
                    out.push(&format!("({col} IS NOT NULL AND "));
                    self.value_in(out, &col, &col, vs);
                    out.push(")");
                }
                None => self.index_lookup(out, Within::Resource(r), t, &[LeafTest::In(vs)]),
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
                    self.member_node(groups, &g, out);
                    out.push(")");
                } else if *nesting == Nesting::Any {
                    let d = self.fresh("d");
                    let m = self.fresh("m");
                    out.push(&format!(
                        "{r}.rid IN (WITH RECURSIVE {d}(rid, depth) AS (SELECT {g}.rid, CAST(0 AS BIGINT) FROM resources {g} WHERE {g}.resource_type = 'Group' AND "
                    ));
                    self.member_node(groups, &g, out);
                    out.push(&format!(
                        " UNION SELECT {m}.member_rid, {d}.depth + 1 FROM {d} JOIN memberships {m} ON {m}.group_rid = {d}.rid WHERE {d}.depth < "
                    ))
                    .bind(self.max_group_depth)
                    .push(&format!(") SELECT {d}.rid FROM {d} WHERE {d}.depth >= 1)"));
                } else {
                    // Through nesting and not directly: a user's `groups` lists a group once,
                    // as "direct" when it is a direct member, whatever the other paths.
                    let d = self.fresh("d");
                    let m = self.fresh("m");
                    let x = self.fresh("m");
                    out.push(&format!(
                        "{r}.rid IN (WITH RECURSIVE {d}(top, rid, depth) AS (SELECT {g}.rid, {g}.rid, CAST(0 AS BIGINT) FROM resources {g} WHERE {g}.resource_type = 'Group' AND "
                    ));
                    self.member_node(groups, &g, out);
                    out.push(&format!(
                        " UNION SELECT {d}.top, {m}.member_rid, {d}.depth + 1 FROM {d} JOIN memberships {m} ON {m}.group_rid = {d}.rid WHERE {d}.depth < "
                    ))
                    .bind(self.max_group_depth)
                    .push(&format!(
                        ") SELECT {d}.rid FROM {d} WHERE {d}.depth >= 2 AND NOT EXISTS (SELECT 1 FROM memberships {x} WHERE {x}.group_rid = {d}.top AND {x}.member_rid = {d}.rid))"
                    ));
                }
            }
            ResolvedFilter::HasMember { members } => {
                let m = self.fresh("m");
                let u = self.fresh("u");
                out.push(&format!(
                    "{r}.rid IN (SELECT {m}.group_rid FROM memberships {m} JOIN resources {u} ON {u}.rid = {m}.member_rid WHERE "
                ));
                self.member_node(members, &u, out);
                out.push(")");
            }
        }
    }

    /// Inside `attr[...]`: leaves must hold for the same element as `e`.
    fn compile_element(&mut self, f: &ResolvedFilter, e: &str, out: &mut Sql) {
        match f {
            ResolvedFilter::And(items) => {
                self.balanced(items, " AND ", "1 = 1", out, &mut |c, x, o| {
                    c.compile_element(x, e, o)
                });
            }
            ResolvedFilter::Or(items) => {
                self.gathered_or(items, Within::Element(e), out, &mut |c, f, o| {
                    c.compile_element(f, e, o)
                });
            }
            ResolvedFilter::Not(a) => {
                out.push("NOT (");
                self.compile_element(a, e, out);
                out.push(")");
            }
            ResolvedFilter::Const(b) => {
                out.push(if *b { "1 = 1" } else { "1 = 0" });
            }
            ResolvedFilter::Present(t)
            | ResolvedFilter::Compare(t, _, _)
            | ResolvedFilter::In(t, _) => {
                let test = match f {
                    ResolvedFilter::Compare(_, op, v) => LeafTest::Compare(*op, v),
                    ResolvedFilter::In(_, vs) => LeafTest::In(vs),
                    _ => LeafTest::Present,
                };
                self.index_lookup(out, Within::Element(e), t, &[test]);
            }
            // The resolver never nests these inside a value filter.
            ResolvedFilter::Element { .. }
            | ResolvedFilter::MemberOf { .. }
            | ResolvedFilter::HasMember { .. } => {
                out.push("1 = 0");
            }
        }
    }

    /// A condition on the resource `o` at the other end of a membership.
    fn member_node(&mut self, c: &MemberCondition, o: &str, out: &mut Sql) {
        match c {
            MemberCondition::And(items) => {
                self.balanced(items, " AND ", "1 = 1", out, &mut |c, x, s| {
                    c.member_node(x, o, s)
                });
            }
            MemberCondition::Or(items) => {
                self.balanced(items, " OR ", "1 = 0", out, &mut |c, x, s| {
                    c.member_node(x, o, s)
                });
            }
            MemberCondition::Not(a) => {
                out.push("NOT (");
                self.member_node(a, o, out);
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
                let col = self.member_column(*field, o);
                // Never NULL (a member without a display), so that NOT (...) holds for it.
                out.push(&format!("({col} IS NOT NULL AND "));
                self.text_compare(out, &col, *op, v);
                out.push(")");
            }
            MemberCondition::In(field, vs) => {
                let col = self.member_column(*field, o);
                out.push(&format!("({col} IS NOT NULL AND "));
                self.text_in(out, &col, vs.clone());
                out.push(")");
            }
        }
    }

    /// The folded value of a member field, as the resolver folds literals: ids are lowercase;
    /// a group's folded displayName is its name column and a user's is in the index (SQL's
    /// lower() folds ASCII only); types are ASCII.
    fn member_column(&mut self, field: MemberField, o: &str) -> String {
        match field {
            MemberField::Value => format!("{o}.id"),
            MemberField::Display => {
                let d = self.fresh("dn");
                // An empty displayName is no display (as members render).
                format!(
                    "NULLIF(CASE WHEN {o}.resource_type = 'Group' THEN {o}.name_norm ELSE (SELECT MIN({d}.value_text) FROM attr_index {d} WHERE {d}.resource_rid = {o}.rid AND {d}.akey = 'displayname') END, '')"
                )
            }
            MemberField::Type => format!("lower({o}.resource_type)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{FilterLimits, resolve};
    use crate::model::{ResourceKind, SchemaRegistry};

    /// Bound parameters and the deepest nesting of parentheses of `f`'s SQL.
    fn shape(backend: DbBackend, f: &ResolvedFilter) -> (usize, usize) {
        let mut sql = Sql::default();
        Compiler::new(backend, 5).compile(f, "r", &mut sql);
        let (mut depth, mut deepest) = (0usize, 0usize);
        for c in sql.text.chars() {
            match c {
                '(' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        (sql.params.len(), deepest)
    }

    fn scim(kind: ResourceKind, text: &str) -> ResolvedFilter {
        let f = crate::filter::Filter::parse_limited(text, &FilterLimits::CEILING).unwrap();
        resolve(&SchemaRegistry::builtin(), kind, &f).unwrap()
    }

    #[test]
    fn the_largest_filters_stay_within_the_database_limits() {
        let max = FilterLimits::CEILING.max_terms;
        let chain_of = |n: usize, joiner: &str, term: &dyn Fn(usize) -> String| {
            (0..n).map(term).collect::<Vec<_>>().join(joiner)
        };
        let chain = |joiner: &str, term: &dyn Fn(usize) -> String| chain_of(max, joiner, term);
        let cases = [
            scim(
                ResourceKind::User,
                &chain(" or ", &|i| format!("name.familyName ew \"{i}\"")),
            ),
            scim(
                ResourceKind::User,
                &chain(" and ", &|i| format!("not (name.familyName ew \"{i}\")")),
            ),
            scim(
                ResourceKind::User,
                &chain_of(max / 2, " or ", &|i| {
                    format!("(title sw \"{i}\" and nickName ew \"{i}\")")
                }),
            ),
            scim(
                ResourceKind::User,
                &chain(" or ", &|i| format!("emails[value ew \"{i}\"]")),
            ),
            scim(
                ResourceKind::User,
                &chain(" and ", &|i| format!("groups.display ew \"{i}\"")),
            ),
        ];
        for f in &cases {
            for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
                let (params, depth) = shape(backend, f);
                assert!(params < 32_766, "{params} parameters");
                assert!(depth < 64, "nested {depth} deep");
            }
        }
        // Equalities on one attribute are one list, bound value by value.
        let f = scim(
            ResourceKind::User,
            &chain(" or ", &|i| format!("userName eq \"u{i}\"")),
        );
        assert!(matches!(&f, ResolvedFilter::In(AttrTarget::Name, v) if v.len() == max));
        assert_eq!(shape(DbBackend::Sqlite, &f).0, max);
    }

    #[test]
    fn lists_derived_from_data_fall_back_to_json_arrays() {
        let list = |n: usize| {
            ResolvedFilter::In(
                AttrTarget::Id,
                (0..n)
                    .map(|i| ResolvedValue::Text(format!("g{i}")))
                    .collect(),
            )
        };
        // 1,000 terms each expanded by the server into 1,500 group ids.
        let f = ResolvedFilter::And((0..1000).map(|_| list(1500)).collect());
        let (params, _) = shape(DbBackend::Sqlite, &f);
        assert_eq!(params, 1000, "one JSON array per list");
        // Small filters keep plain parameters.
        assert_eq!(shape(DbBackend::Postgres, &list(40)).0, 40);
        assert_eq!(shape(DbBackend::Sqlite, &list(2500)).0, 1);
    }
}
