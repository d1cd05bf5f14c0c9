//! Coalescing of concurrent lookups by name. White-pages clients mostly ask for one entry by
//! its naming attribute (`(uid=X)`); with many connections, the lookups waiting while one
//! query runs are answered together by the next query (`name IN (…)`), so the per-query cost
//! of the database driver is paid once per batch instead of once per search. Every lookup is
//! answered by a query that started after it arrived, so a committed write is always seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use store::filter::ResolvedFilter;
use store::model::{ResourceKind, StoredResource};
use store::{Load, Store};
use tokio::sync::oneshot;

/// Names answered by one query at most.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Option<StoredResource>, String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    kind: ResourceKind,
    members: bool,
    groups: bool,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(String, Reply)>,
    flushing: bool,
}

pub(crate) struct NameBatcher {
    store: Store,
    /// Extra condition every lookup carries (visibility of inactive users), per kind.
    visible: HashMap<ResourceKind, ResolvedFilter>,
    queues: Mutex<HashMap<Key, Queue>>,
}

impl NameBatcher {
    pub fn new(store: Store, visible: HashMap<ResourceKind, ResolvedFilter>) -> Arc<Self> {
        Arc::new(NameBatcher {
            store,
            visible,
            queues: Mutex::new(HashMap::new()),
        })
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Queue>> {
        // Holders never panic mid-update; a poisoned lock still holds consistent queues.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource of `kind` named `name` (case-insensitively), if visible.
    pub async fn get(
        self: &Arc<Self>,
        kind: ResourceKind,
        name: &str,
        load: Load,
    ) -> Result<Option<StoredResource>, store::StoreError> {
        let key = Key {
            kind,
            members: load.members,
            groups: load.groups,
        };
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queues();
            let q = q.entry(key).or_default();
            q.waiting.push((store::model::name_key(name), tx));
            !std::mem::replace(&mut q.flushing, true)
        };
        if start {
            // A task of its own, so that a cancelled search cannot strand the others.
            let this = self.clone();
            tokio::spawn(async move { this.flush(key, load).await });
        }
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(store::StoreError::Database(e.into())),
            Err(_) => Err(store::StoreError::Corrupt("name lookup was dropped".into())),
        }
    }

    async fn flush(&self, key: Key, load: Load) {
        loop {
            let batch: Vec<(String, Reply)> = {
                let mut qs = self.queues();
                let q = qs.entry(key).or_default();
                if q.waiting.is_empty() {
                    q.flushing = false;
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect()
            };
            let mut names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
            names.sort_unstable();
            names.dedup();
            let found = self
                .store
                .find_by_names(key.kind, &names, self.visible.get(&key.kind), load)
                .await;
            match found {
                Ok(rows) => {
                    let attr = match key.kind {
                        ResourceKind::User => "userName",
                        ResourceKind::Group => "displayName",
                    };
                    let by_name: HashMap<String, StoredResource> = rows
                        .into_iter()
                        .filter_map(|r| {
                            let n = store::model::name_key(r.doc.get(attr)?.as_str()?);
                            Some((n, r))
                        })
                        .collect();
                    for (name, reply) in batch {
                        let _ = reply.send(Ok(by_name.get(&name).cloned()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "batched name lookup failed");
                    let msg = e.to_string();
                    for (_, reply) in batch {
                        let _ = reply.send(Err(msg.clone()));
                    }
                }
            }
        }
    }
}
