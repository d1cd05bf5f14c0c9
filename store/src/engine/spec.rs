//! A consumer's provisioning policy: what it receives (resource types, scoping filters,
//! attribute allowlist, transforms, privacy restrictions), how (PATCH or PUT, how existing
//! accounts are matched, how accounts are de-provisioned) and when (scheduled actions).
//! Policies are data (JSON or TOML); `validate` checks every filter and path against the
//! schemas so that a mistake is refused on save with a message that names it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;
use crate::filter::{Filter, FilterLimits, resolve};
use crate::model::{AttrType, ResourceKind, SchemaRegistry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Deprovision {
    /// PATCH active=false (the account stays, disabled).
    #[default]
    Deactivate,
    /// DELETE the account.
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpdateStyle {
    /// Send only what changed, as PATCH operations.
    #[default]
    Patch,
    /// Send the whole resource with PUT.
    Put,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Attribute path written in what the consumer receives.
    pub target: String,
    /// Copy the value of this hub attribute path...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// ...or send this constant...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<Value>,
    /// ...or render this template, where `{path}` is replaced by the attribute's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Only when the resource matches this SCIM filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    /// A SCIM filter selecting the people this restriction protects.
    pub when: String,
    /// Attribute paths the consumer must not receive for them.
    pub hide: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AttributePolicy {
    /// Attribute paths sent (userName / Group displayName are always sent). Absent: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<Restriction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduledAction {
    Deactivate,
    Delete,
}

/// "When a User matches `when`, `after` that (or at the dateTime in attribute `at`), do
/// `action` on this consumer." Cancelled if the User stops matching first (a rehire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRule {
    pub name: String,
    pub when: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub action: ScheduledAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    pub max_attempts: u32,
    pub base_delay_secs: f64,
    pub max_delay_secs: f64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: 8,
            base_delay_secs: 2.0,
            max_delay_secs: 3600.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSpec {
    /// "User" and/or "Group".
    pub resource_types: Vec<String>,
    /// SCIM filter over Users: who is provisioned. Absent: everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// SCIM filter over Groups. Absent: every group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_scope: Option<String>,
    pub attributes: AttributePolicy,
    pub deprovision: Deprovision,
    pub update_style: UpdateStyle,
    /// How an existing account on the consumer is recognised before creating one:
    /// "externalId" (holding the hub's id) or "userName" (Group: displayName).
    pub match_attribute: String,
    pub retry: RetrySpec,
    /// Deliveries in flight to this consumer at once.
    pub concurrency: u32,
    /// Requests per second to this consumer; absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<f64>,
    /// Consecutive failed attempts after which the consumer is paused automatically.
    pub auto_pause_after: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleRule>,
}

impl Default for ConsumerSpec {
    fn default() -> Self {
        ConsumerSpec {
            resource_types: vec!["User".into(), "Group".into()],
            scope: None,
            group_scope: None,
            attributes: AttributePolicy::default(),
            deprovision: Deprovision::Deactivate,
            update_style: UpdateStyle::Patch,
            match_attribute: "externalId".into(),
            retry: RetrySpec::default(),
            concurrency: 4,
            rate_limit_per_second: None,
            auto_pause_after: 20,
            schedules: Vec::new(),
        }
    }
}

/// The longest duration a schedule accepts. Due times are `now + duration`, which must stay
/// a representable date; a century is more than any retention rule needs.
pub const MAX_DURATION_DAYS: i64 = 36_500;

/// Parses "14d", "36h", "30m", "45s" (or a plain number of seconds), up to
/// [`MAX_DURATION_DAYS`].
pub fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().ok()?;
    let unit_secs = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return None,
    };
    let secs = n.checked_mul(unit_secs)?;
    if secs > MAX_DURATION_DAYS * 86400 {
        return None;
    }
    chrono::Duration::try_seconds(secs)
}

fn bad(msg: String) -> StoreError {
    StoreError::InvalidValue(msg)
}

impl ConsumerSpec {
    pub fn kinds(&self) -> Vec<ResourceKind> {
        self.resource_types
            .iter()
            .filter_map(|t| ResourceKind::parse(t))
            .collect()
    }

    pub fn handles(&self, kind: ResourceKind) -> bool {
        self.kinds().contains(&kind)
    }

    pub fn scope_for(&self, kind: ResourceKind) -> Option<&str> {
        match kind {
            ResourceKind::User => self.scope.as_deref(),
            ResourceKind::Group => self.group_scope.as_deref(),
        }
    }

    /// Whether the User scope depends on group membership (then membership changes can move
    /// people in and out of scope).
    pub fn scope_uses_groups(&self) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.to_ascii_lowercase().contains("groups"))
    }

    /// Checks every filter (held to `limits`, as filters of the API are), path and
    /// duration; errors name the field.
    pub fn validate(&self, reg: &SchemaRegistry, limits: &FilterLimits) -> Result<(), StoreError> {
        if self.resource_types.is_empty() {
            return Err(bad(
                "resource_types: name at least one of \"User\", \"Group\"".into(),
            ));
        }
        for t in &self.resource_types {
            if ResourceKind::parse(t).is_none() {
                return Err(bad(format!(
                    "resource_types: {t:?} is not \"User\" or \"Group\""
                )));
            }
        }
        let filter = |field: &str, text: &str, kind: ResourceKind| -> Result<Filter, StoreError> {
            let f =
                Filter::parse_limited(text, limits).map_err(|e| bad(format!("{field}: {e}")))?;
            resolve(reg, kind, &f).map_err(|e| bad(format!("{field}: {e}")))?;
            Ok(f)
        };
        if let Some(s) = &self.scope {
            filter("scope", s, ResourceKind::User)?;
        }
        if let Some(s) = &self.group_scope {
            filter("group_scope", s, ResourceKind::Group)?;
        }
        let path = |field: &str, p: &str| -> Result<(), StoreError> {
            super::view::check_path(reg, ResourceKind::User, p)
                .or_else(|_| super::view::check_path(reg, ResourceKind::Group, p))
                .map_err(|e| bad(format!("{field}: {e}")))
        };
        for p in self.attributes.include.iter().flatten() {
            path("attributes.include", p)?;
        }
        for (i, t) in self.attributes.transforms.iter().enumerate() {
            let field = format!("attributes.transforms[{i}]");
            path(&format!("{field}.target"), &t.target)?;
            let sources = [t.from.is_some(), t.constant.is_some(), t.template.is_some()];
            if sources.iter().filter(|x| **x).count() != 1 {
                return Err(bad(format!(
                    "{field}: give exactly one of from, constant, template"
                )));
            }
            if let Some(f) = &t.from {
                path(&format!("{field}.from"), f)?;
            }
            if let Some(tpl) = &t.template {
                for p in super::view::template_paths(tpl) {
                    path(&format!("{field}.template"), &p)?;
                }
            }
            if let Some(w) = &t.when {
                filter(&format!("{field}.when"), w, ResourceKind::User)?;
            }
        }
        for (i, r) in self.attributes.restrictions.iter().enumerate() {
            let field = format!("attributes.restrictions[{i}]");
            filter(&format!("{field}.when"), &r.when, ResourceKind::User)?;
            if r.hide.is_empty() {
                return Err(bad(format!("{field}.hide: name the attributes to hide")));
            }
            for p in &r.hide {
                path(&format!("{field}.hide"), p)?;
            }
        }
        if !matches!(self.match_attribute.as_str(), "externalId" | "userName") {
            return Err(bad(format!(
                "match_attribute: {:?} is not \"externalId\" or \"userName\"",
                self.match_attribute
            )));
        }
        if self.retry.max_attempts == 0
            || self.retry.base_delay_secs <= 0.0
            || self.retry.max_delay_secs < self.retry.base_delay_secs
        {
            return Err(bad(
                "retry: max_attempts ≥ 1 and 0 < base_delay_secs ≤ max_delay_secs".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(bad("concurrency must be at least 1".into()));
        }
        if self.rate_limit_per_second.is_some_and(|r| r <= 0.0) {
            return Err(bad("rate_limit_per_second must be positive".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let field = format!("schedules[{i}]");
            if s.name.trim().is_empty() || !names.insert(s.name.clone()) {
                return Err(bad(format!("{field}.name: give each rule a unique name")));
            }
            filter(&format!("{field}.when"), &s.when, ResourceKind::User)?;
            match (&s.after, &s.at) {
                (Some(a), None) => {
                    parse_duration(a).ok_or_else(|| {
                        bad(format!(
                            "{field}.after: {a:?} is not a duration such as 14d, 36h, 30m (at most {MAX_DURATION_DAYS}d)"
                        ))
                    })?;
                }
                (None, Some(at)) => {
                    let kind = super::view::path_type(reg, ResourceKind::User, at)
                        .map_err(|e| bad(format!("{field}.at: {e}")))?;
                    if kind != AttrType::DateTime {
                        return Err(bad(format!("{field}.at: {at} is not a dateTime attribute")));
                    }
                }
                _ => return Err(bad(format!("{field}: give exactly one of after, at"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let reg = SchemaRegistry::builtin();
        let ok: ConsumerSpec = serde_json::from_value(serde_json::json!({
            "scope": "active eq true and urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder:facilities eq \"HQ\"",
            "attributes": {
                "include": ["userName", "name", "emails", "active", "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder"],
                "transforms": [{"target": "displayName", "template": "{name.givenName} {name.familyName}"}],
                "restrictions": [{"when": "title eq \"VIP\"", "hide": ["emails"]}]
            },
            "schedules": [{"name": "purge", "when": "active eq false", "after": "14d", "action": "delete"}]
        }))
        .unwrap();
        ok.validate(&reg, &FilterLimits::default()).unwrap();
        let cases = [
            (serde_json::json!({"scope": "nosuch eq 1"}), "scope"),
            (
                serde_json::json!({"attributes": {"include": ["name.nosuch"]}}),
                "attributes.include",
            ),
            (
                serde_json::json!({"attributes": {"transforms": [{"target": "title", "from": "title", "constant": 1}]}}),
                "exactly one",
            ),
            (
                serde_json::json!({"schedules": [{"name": "x", "when": "active eq false", "after": "soon", "action": "delete"}]}),
                "schedules[0].after",
            ),
            (
                serde_json::json!({"schedules": [{"name": "x", "when": "active eq false", "at": "title", "action": "delete"}]}),
                "not a dateTime",
            ),
            (
                serde_json::json!({"match_attribute": "email"}),
                "match_attribute",
            ),
            (
                serde_json::json!({"resource_types": ["Printer"]}),
                "resource_types",
            ),
        ];
        for (v, want) in cases {
            let spec: ConsumerSpec = serde_json::from_value(v.clone()).unwrap();
            let e = spec
                .validate(&reg, &FilterLimits::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
        assert!(
            serde_json::from_value::<ConsumerSpec>(serde_json::json!({"scopes": "x"})).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("14d").unwrap().num_seconds(), 14 * 86400);
        assert_eq!(parse_duration("90").unwrap().num_seconds(), 90);
        assert!(parse_duration("2 fortnights").is_none());
        assert_eq!(
            parse_duration("36500d").unwrap().num_seconds(),
            MAX_DURATION_DAYS * 86400
        );
        assert!(parse_duration("36501d").is_none());
    }

    /// Found by fuzzing: "after" durations whose seconds overflow i64 panicked in
    /// validation, and ones just below that validated and then overflowed the due-time
    /// arithmetic (`now + duration`) of the outbound planner.
    #[test]
    fn huge_durations_are_refused_not_overflowed() {
        for s in [
            "99999999999999999d",
            "9223372036854775807w",
            "99999999999d",
            "9223372036854775807",
        ] {
            assert!(parse_duration(s).is_none(), "{s}");
        }
        let reg = SchemaRegistry::builtin();
        let spec: ConsumerSpec = serde_json::from_value(serde_json::json!({
            "schedules": [{"name": "x", "when": "active eq false", "after": "99999999999999999d", "action": "delete"}]
        }))
        .unwrap();
        let e = spec
            .validate(&reg, &FilterLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("schedules[0].after") && e.contains("at most"),
            "{e}"
        );
        let longest = parse_duration(&format!("{MAX_DURATION_DAYS}d")).unwrap();
        assert!(chrono::Utc::now().checked_add_signed(longest).is_some());
    }
}
