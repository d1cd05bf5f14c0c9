//! Reconciliation: read a consumer's accounts, compare them with what the hub last
//! delivered, and report drift, accounts the consumer lost, and orphans (accounts there that
//! no identity here accounts for); optionally fix them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};
use store::engine::LinkState;
use store::{Actor, AuditEntry, Consumer, ResourceKind, Store};

use super::client::{ConsumerEndpoint, ScimClient};
use crate::error::ServerError;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    pub resource_type: String,
    pub resource_id: String,
    pub remote_id: String,
    /// Attributes whose values on the consumer differ from what the hub sent.
    pub attributes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Missing {
    pub resource_type: String,
    pub resource_id: String,
    pub remote_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Orphan {
    pub resource_type: String,
    pub remote_id: String,
    pub name: Option<String>,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    pub consumer: String,
    pub remote_accounts: usize,
    pub linked: usize,
    pub in_sync: usize,
    pub drift: Vec<Drift>,
    pub missing: Vec<Missing>,
    pub orphans: Vec<Orphan>,
    pub requeued: usize,
    pub orphans_deleted: usize,
}

/// Whether everything in `sent` is in `remote` (consumers add defaults and computed values;
/// those are not drift).
pub(crate) fn contains(sent: &Value, remote: Option<&Value>) -> bool {
    match (sent, remote) {
        (_, None) => sent.is_null(),
        (Value::Object(s), Some(Value::Object(r))) => s.iter().all(|(k, v)| contains(v, r.get(k))),
        (Value::Array(s), Some(Value::Array(r))) => {
            s.iter().all(|v| r.iter().any(|x| contains(v, Some(x))))
        }
        (Value::String(a), Some(Value::String(b))) => a == b || a.eq_ignore_ascii_case(b),
        (a, Some(b)) => a == b,
    }
}

pub async fn reconcile(
    store: &Store,
    consumer: &Consumer,
    fix: bool,
    delete_orphans: bool,
    actor: &Actor,
) -> Result<ReconcileReport, ServerError> {
    let endpoint: ConsumerEndpoint = serde_json::from_value(consumer.endpoint.clone())
        .map_err(|e| ServerError::Internal(format!("consumer endpoint settings: {e}")))?;
    let client = ScimClient::new(&endpoint)?;
    let mut report = ReconcileReport {
        consumer: consumer.name.clone(),
        ..Default::default()
    };
    let links = store.links_of_consumer(&consumer.id).await?;
    let mut requeue: Vec<(ResourceKind, String)> = Vec::new();
    for kind in consumer.spec.kinds() {
        let remote = client.list_all(kind.endpoint(), 500).await.map_err(|e| {
            ServerError::bad(
                "invalidValue",
                format!("reading {} from {}: {e}", kind.endpoint(), consumer.name),
            )
        })?;
        report.remote_accounts += remote.len();
        let by_id: HashMap<String, &Value> = remote
            .iter()
            .filter_map(|r| {
                r.get("id")
                    .and_then(Value::as_str)
                    .map(|id| (id.to_string(), r))
            })
            .collect();
        let mut accounted: HashSet<String> = HashSet::new();
        for l in links
            .iter()
            .filter(|l| l.kind == kind && l.state != LinkState::Removed)
        {
            let Some(remote_id) = l.remote_id.clone() else {
                continue;
            };
            report.linked += 1;
            accounted.insert(remote_id.clone());
            match by_id.get(&remote_id) {
                None => {
                    report.missing.push(Missing {
                        resource_type: kind.as_str().into(),
                        resource_id: l.resource_id.clone(),
                        remote_id,
                    });
                    if fix {
                        store.reset_link(&consumer.id, &l.resource_id, true).await?;
                        requeue.push((kind, l.resource_id.clone()));
                    }
                }
                Some(r) => {
                    let differing: Vec<String> = l
                        .synced
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| *k != "schemas")
                        .filter(|(k, v)| !contains(v, r.get(*k)))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if differing.is_empty() {
                        report.in_sync += 1;
                    } else {
                        report.drift.push(Drift {
                            resource_type: kind.as_str().into(),
                            resource_id: l.resource_id.clone(),
                            remote_id,
                            attributes: differing,
                        });
                        if fix {
                            store
                                .reset_link(&consumer.id, &l.resource_id, false)
                                .await?;
                            requeue.push((kind, l.resource_id.clone()));
                        }
                    }
                }
            }
        }
        for (id, r) in &by_id {
            if accounted.contains(id) {
                continue;
            }
            let name_attr = if kind == ResourceKind::User {
                "userName"
            } else {
                "displayName"
            };
            report.orphans.push(Orphan {
                resource_type: kind.as_str().into(),
                remote_id: id.clone(),
                name: r.get(name_attr).and_then(Value::as_str).map(str::to_string),
                external_id: r
                    .get("externalId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
            if delete_orphans {
                let path = ScimClient::resource_path(kind.endpoint(), id);
                match client.delete(&path).await {
                    Ok(_) => report.orphans_deleted += 1,
                    Err(e) => {
                        tracing::warn!(consumer = %consumer.name, remote = %id, error = %e, "could not delete an orphan account")
                    }
                }
            }
        }
    }
    report.orphans.sort_by(|a, b| a.remote_id.cmp(&b.remote_id));
    if !requeue.is_empty() {
        report.requeued = store
            .enqueue(&consumer.name, Some(&requeue), "reconcile", actor)
            .await? as usize;
    }
    store
        .append_audit(&AuditEntry {
            actor: actor.principal.clone(),
            source: actor.source.clone(),
            layer: actor.layer.into(),
            action: "consumer.reconcile".into(),
            resource_type: None,
            resource_id: None,
            consumer: Some(consumer.name.clone()),
            outcome: "success".into(),
            detail: json!({
                "remoteAccounts": report.remote_accounts, "linked": report.linked, "inSync": report.in_sync,
                "drift": report.drift.len(), "missing": report.missing.len(), "orphans": report.orphans.len(),
                "requeued": report.requeued, "orphansDeleted": report.orphans_deleted, "fix": fix,
            }),
        })
        .await?;
    Ok(report)
}
