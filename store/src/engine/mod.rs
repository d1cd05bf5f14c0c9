//! The provisioning engine: which consumer gets which resource, shaped how, and what
//! operation brings the consumer from what it last received to what it should hold. Pure
//! logic over rendered resources; `sql/outbound` persists its queue, links and schedules,
//! and the delivery layer (the SCIM client) carries out its decisions.

pub mod eval;
pub mod spec;
pub mod view;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use spec::{
    AttributePolicy, ConsumerSpec, Deprovision, Restriction, RetrySpec, ScheduleRule,
    ScheduledAction, Transform, UpdateStyle, parse_duration,
};

use crate::model::{ResourceKind, SchemaRegistry};

/// What a consumer holds for one hub resource, as far as the hub knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Created or matched on the consumer and kept up to date.
    Provisioned,
    /// De-provisioned by deactivation (active=false).
    Deactivated,
    /// Deleted on the consumer.
    Removed,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Provisioned => "provisioned",
            LinkState::Deactivated => "deactivated",
            LinkState::Removed => "removed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "provisioned" => LinkState::Provisioned,
            "deactivated" => LinkState::Deactivated,
            "removed" => LinkState::Removed,
            _ => return None,
        })
    }
}

/// The link between a hub resource and its account on one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub consumer_id: String,
    pub resource_id: String,
    pub kind: ResourceKind,
    /// The consumer's id of the account.
    pub remote_id: Option<String>,
    pub state: LinkState,
    /// The outbound view the consumer last acknowledged.
    pub synced: Value,
    /// A fired scheduled rule (name and action) that keeps the account de-provisioned while
    /// the rule applies.
    pub hold: Option<(String, ScheduledAction)>,
    pub updated_at: String,
}

/// What to do for one (consumer, resource).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    /// Find the account by the match attribute, else create it, with this view.
    Create(Value),
    /// Bring the linked account to this view: PATCH `ops` (or PUT the view).
    Update {
        view: Value,
        ops: Vec<Value>,
    },
    /// Take the account away.
    Deprovision(Deprovision),
}

/// Decides the operation for a resource given what the consumer last received.
/// `current` is the rendered resource, `None` if it was deleted.
pub fn decide(
    reg: &SchemaRegistry,
    spec: &ConsumerSpec,
    kind: ResourceKind,
    current: Option<&Value>,
    link: Option<&Link>,
) -> Decision {
    let wanted = wanted(reg, spec, kind, current, link);
    let linked = link.filter(|l| l.remote_id.is_some() && l.state != LinkState::Removed);
    match (wanted, linked) {
        (None, None) => Decision::Nothing,
        (None, Some(l)) => {
            // Groups have no active flag: they are always deleted.
            let how = match (&l.hold, kind) {
                (_, ResourceKind::Group) => Deprovision::Delete,
                (Some((_, ScheduledAction::Delete)), _) => Deprovision::Delete,
                (Some((_, ScheduledAction::Deactivate)), _) => Deprovision::Deactivate,
                (None, _) => spec.deprovision,
            };
            if how == Deprovision::Deactivate && l.state == LinkState::Deactivated {
                Decision::Nothing
            } else {
                Decision::Deprovision(how)
            }
        }
        (Some(view), None) => Decision::Create(view),
        (Some(view), Some(l)) => {
            let ops = view::diff(&l.synced, &view);
            if ops.is_empty() {
                Decision::Nothing
            } else {
                Decision::Update { view, ops }
            }
        }
    }
}

/// The view the consumer should hold, or `None` when it should hold no (active) account:
/// the resource is gone, out of scope, held de-provisioned by a fired schedule, or a User
/// who is no longer active on a consumer that deletes leavers.
pub fn wanted(
    reg: &SchemaRegistry,
    spec: &ConsumerSpec,
    kind: ResourceKind,
    current: Option<&Value>,
    link: Option<&Link>,
) -> Option<Value> {
    current
        .filter(|full| view::in_scope(reg, spec, kind, full))
        .filter(|_| link.is_none_or(|l| l.hold.is_none()))
        // A User who is no longer active has left, whatever the scope says: where leavers
        // are deleted, the account goes (and none is made). Where they are deactivated, the
        // account is kept in step with active=false, which is that de-provisioning.
        .filter(|full| !(spec.deprovision == Deprovision::Delete && is_inactive(kind, full)))
        .map(|full| view::outbound_view(reg, &spec.attributes, kind, full))
}

/// A User whose `active` is false.
fn is_inactive(kind: ResourceKind, full: &Value) -> bool {
    kind == ResourceKind::User && full.get("active") == Some(&Value::Bool(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn link(state: LinkState, synced: Value) -> Link {
        Link {
            consumer_id: "c".into(),
            resource_id: "u".into(),
            kind: ResourceKind::User,
            remote_id: Some("r".into()),
            state,
            synced,
            hold: None,
            updated_at: String::new(),
        }
    }

    #[test]
    fn scope_entry_exit_and_updates() {
        let reg = SchemaRegistry::builtin();
        let spec: ConsumerSpec =
            serde_json::from_value(json!({"scope": "active eq true"})).unwrap();
        let active = json!({"id": "u", "userName": "a", "active": true});
        let inactive = json!({"id": "u", "userName": "a", "active": false});
        let k = ResourceKind::User;
        assert!(matches!(
            decide(&reg, &spec, k, Some(&active), None),
            Decision::Create(_)
        ));
        assert_eq!(
            decide(&reg, &spec, k, Some(&inactive), None),
            Decision::Nothing
        );
        let view = view::outbound_view(&reg, &spec.attributes, k, &active);
        let l = link(LinkState::Provisioned, view.clone());
        assert_eq!(
            decide(&reg, &spec, k, Some(&active), Some(&l)),
            Decision::Nothing
        );
        assert_eq!(
            decide(&reg, &spec, k, Some(&inactive), Some(&l)),
            Decision::Deprovision(Deprovision::Deactivate)
        );
        assert_eq!(
            decide(&reg, &spec, k, None, Some(&l)),
            Decision::Deprovision(Deprovision::Deactivate)
        );
        let deact = link(LinkState::Deactivated, view);
        assert_eq!(
            decide(&reg, &spec, k, Some(&inactive), Some(&deact)),
            Decision::Nothing
        );
        // A leaver goes as the consumer de-provisions, whatever the scope's wording.
        let delete: ConsumerSpec =
            serde_json::from_value(json!({"scope": "userName pr", "deprovision": "delete"}))
                .unwrap();
        assert_eq!(
            decide(&reg, &delete, k, Some(&inactive), Some(&l)),
            Decision::Deprovision(Deprovision::Delete)
        );
        assert_eq!(
            decide(&reg, &delete, k, Some(&inactive), None),
            Decision::Nothing,
            "no account is made for a leaver"
        );
        let keep: ConsumerSpec = serde_json::from_value(json!({"scope": "userName pr"})).unwrap();
        assert!(
            matches!(decide(&reg, &keep, k, Some(&inactive), Some(&l)), Decision::Update { ref ops, .. } if ops == &vec![json!({"op": "replace", "path": "active", "value": false})])
        );
        let renamed = json!({"id": "u", "userName": "b", "active": true});
        assert!(
            matches!(decide(&reg, &spec, k, Some(&renamed), Some(&deact)), Decision::Update { ref ops, .. } if ops.len() == 1)
        );
    }
}
