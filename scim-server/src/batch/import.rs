//! Importing users: each row is matched by externalId (or, without one, by userName) and
//! the user is created or updated in its own store transaction, audited with the import's
//! actor. Rows are spread over `jobs` workers by key, so the rows of one user keep their
//! file order. A dry run reads and validates everything and writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use store::model::{Normalized, ResourceKind, StoredResource, normalize_resource};
use store::patch::{PasswordChange, apply_patch};
use store::{Actor, Store, StoreError};
use tokio::sync::mpsc;

use super::progress::Progress;
use super::rows::{Change, Item, Row, resolve_ops};
use super::source::Source;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub dry_run: bool,
    /// Concurrent workers (each row is one transaction; on SQLite writers queue anyway).
    pub jobs: usize,
    pub actor: Actor,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            dry_run: false,
            jobs: 1,
            actor: Actor::new("cli:import", None, "cli"),
        }
    }
}

/// One row that was not imported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowError {
    pub line: u64,
    /// externalId or userName, when the row has one.
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub skipped: u64,
    pub elapsed_seconds: f64,
}

impl Summary {
    pub fn rows(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.failed + self.skipped
    }

    pub fn rows_per_second(&self) -> f64 {
        if self.elapsed_seconds > 0.0 {
            self.rows() as f64 / self.elapsed_seconds
        } else {
            0.0
        }
    }
}

/// The outcome of an import: counts, every failed row (by line), and remarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub summary: Summary,
    pub errors: Vec<RowError>,
    pub notes: Vec<String>,
}

impl Report {
    /// The validation report: one line per failed row.
    pub fn error_lines(&self) -> String {
        let mut s = String::new();
        for e in &self.errors {
            if e.key.is_empty() {
                s.push_str(&format!("line {}: {}\n", e.line, e.reason));
            } else {
                s.push_str(&format!("line {}: {}: {}\n", e.line, e.key, e.reason));
            }
        }
        s
    }

    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let verb = if self.dry_run { "would be " } else { "" };
        format!(
            "{} rows in {:.1} s ({:.0} rows/s): {} {verb}created, {} {verb}updated, {} unchanged, {} failed, {} skipped{}",
            s.rows(),
            s.elapsed_seconds,
            s.rows_per_second(),
            s.created,
            s.updated,
            s.unchanged,
            s.failed,
            s.skipped,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        )
    }
}

#[derive(Debug)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
    Failed(RowError),
}

/// Names of users this dry run would create, so that two rows claiming one userName are
/// caught without writing (lowercased userName → key of the row that claimed it).
type Claims = Arc<Mutex<HashMap<String, String>>>;

fn reason(e: &StoreError) -> String {
    if e.is_internal() {
        format!("internal error: {e}")
    } else {
        e.to_string()
    }
}

/// The user a row names: by externalId when it has one, else by userName.
async fn find(store: &Store, row: &Row) -> Result<Option<StoredResource>, String> {
    let found = match (&row.external_id, &row.user_name) {
        (Some(x), _) => store
            .find_by_external_id(ResourceKind::User, x, 2)
            .await
            .map_err(|e| reason(&e))?,
        (None, Some(u)) => return name_taken(store, u).await,
        (None, None) => return Err("the row has neither externalId nor userName".into()),
    };
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        _ => Err(format!(
            "{} names several users; give them distinct externalIds",
            row.label()
        )),
    }
}

async fn name_taken(store: &Store, name: &str) -> Result<Option<StoredResource>, String> {
    store
        .find_by_name(ResourceKind::User, name)
        .await
        .map_err(|e| reason(&e))
}

/// What the row makes of `current` (None: a new user): the normalized representation for
/// create/replace, or the patched document.
fn plan(
    store: &Store,
    row: &Row,
    current: Option<&StoredResource>,
) -> Result<(Normalized, bool), StoreError> {
    let reg = store.registry();
    let empty = Map::new();
    let doc = current.map(|c| &c.doc).unwrap_or(&empty);
    let ext = current.and_then(|c| c.external_id.as_deref());
    match &row.change {
        Change::Full(v) => {
            let n = normalize_resource(reg, ResourceKind::User, v)?;
            let changed = current.is_none_or(|c| {
                c.doc != n.doc || c.external_id != n.external_id || n.password.is_some()
            });
            Ok((n, changed))
        }
        Change::Ops(ops) => {
            let p = apply_patch(
                reg,
                ResourceKind::User,
                doc,
                ext,
                &resolve_ops(ops, doc),
                &store.options().filter_limits,
            )?;
            let password = match p.password {
                PasswordChange::Set(s) => Some(s),
                _ => None,
            };
            let changed = current.is_none_or(|c| {
                c.doc != p.doc || c.external_id != p.external_id || password.is_some()
            });
            Ok((
                Normalized {
                    doc: p.doc,
                    external_id: p.external_id,
                    password,
                    members: None,
                },
                changed,
            ))
        }
    }
}

async fn process(store: &Store, row: Row, opts: &ImportOptions, claims: &Claims) -> Outcome {
    let fail = |reason: String| {
        Outcome::Failed(RowError {
            line: row.line,
            key: row.label(),
            reason,
        })
    };
    let current = match find(store, &row).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if opts.dry_run {
        let (n, changed) = match plan(store, &row, current.as_ref()) {
            Ok(p) => p,
            Err(e) => return fail(reason(&e)),
        };
        let name = n
            .doc
            .get("userName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        let renamed = current.as_ref().is_none_or(|c| {
            c.doc
                .get("userName")
                .and_then(Value::as_str)
                .map(str::to_lowercase)
                != Some(name.clone())
        });
        if renamed {
            match name_taken(store, &name).await {
                Ok(Some(_)) => {
                    return fail(format!("userName {name:?} is already taken"));
                }
                Ok(_) => {}
                Err(e) => return fail(e),
            }
            let key = row.label();
            let mut c = claims.lock().expect("claims lock");
            match c.get(&name) {
                Some(other) if *other != key => {
                    return fail(format!(
                        "userName {name:?} is already taken (by {other} earlier in the file)"
                    ));
                }
                _ => {
                    c.insert(name, key);
                }
            }
        }
        return match (current, changed) {
            (None, _) => Outcome::Created,
            (Some(_), true) => Outcome::Updated,
            (Some(_), false) => Outcome::Unchanged,
        };
    }
    let result = match (&current, &row.change) {
        (None, _) => match plan(store, &row, None) {
            Ok((n, _)) => store
                .create(ResourceKind::User, n, &opts.actor)
                .await
                .map(|_| Outcome::Created),
            Err(e) => Err(e),
        },
        (Some(c), Change::Full(v)) => {
            match normalize_resource(store.registry(), ResourceKind::User, v) {
                Ok(n) => store
                    .replace(ResourceKind::User, &c.id, n, None, &opts.actor)
                    .await
                    .map(|u| {
                        if u.version == c.version {
                            Outcome::Unchanged
                        } else {
                            Outcome::Updated
                        }
                    }),
                Err(e) => Err(e),
            }
        }
        (Some(c), Change::Ops(ops)) => store
            .patch(
                ResourceKind::User,
                &c.id,
                &resolve_ops(ops, &c.doc),
                None,
                &opts.actor,
            )
            .await
            .map(|u| {
                if u.version == c.version {
                    Outcome::Unchanged
                } else {
                    Outcome::Updated
                }
            }),
    };
    match result {
        Ok(o) => o,
        Err(e) => fail(reason(&e)),
    }
}

fn worker_of(row: &Row, jobs: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match (&row.external_id, &row.user_name) {
        (Some(x), _) => x.hash(&mut h),
        (None, Some(u)) => u.to_lowercase().hash(&mut h),
        (None, None) => row.line.hash(&mut h),
    }
    (h.finish() % jobs as u64) as usize
}

/// Imports every item of `source`. `total_bytes` sizes the progress bar (0: unknown).
pub async fn import(
    store: &Store,
    mut source: Box<dyn Source>,
    opts: ImportOptions,
    progress: &mut Progress,
) -> Report {
    let started = Instant::now();
    if let Err(e) = store.refresh_statistics().await {
        tracing::warn!(error = %e, "could not refresh planner statistics");
    }
    let jobs = opts.jobs.max(1);
    let opts = Arc::new(opts);
    let claims: Claims = Arc::default();
    let (done_tx, mut done_rx) = mpsc::channel::<(Outcome, u64)>(1024);
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..jobs {
        let (tx, mut rx) = mpsc::channel::<(Row, u64)>(256);
        senders.push(tx);
        let store = store.clone();
        let opts = opts.clone();
        let claims = claims.clone();
        let done = done_tx.clone();
        workers.push(tokio::spawn(async move {
            while let Some((row, pos)) = rx.recv().await {
                let o = process(&store, row, &opts, &claims).await;
                if done.send((o, pos)).await.is_err() {
                    break;
                }
            }
        }));
    }
    // Reading is synchronous file IO: it runs on a blocking thread and feeds the workers.
    let notes = source.notes();
    let reader = tokio::task::spawn_blocking(move || {
        while let Some(item) = source.next_item() {
            let pos = source.position();
            let sent = match item {
                Item::Row(row) => {
                    let w = worker_of(&row, jobs);
                    senders[w].blocking_send((row, pos)).is_ok()
                }
                Item::Invalid { line, key, reason } => done_tx
                    .blocking_send((Outcome::Failed(RowError { line, key, reason }), pos))
                    .is_ok(),
                Item::Skipped { .. } => done_tx.blocking_send((Outcome::Skipped, pos)).is_ok(),
            };
            if !sent {
                break;
            }
        }
    });
    let mut report = Report {
        dry_run: opts.dry_run,
        notes,
        ..Default::default()
    };
    let mut last_draw = Instant::now();
    // Statistics are refreshed as the import doubles the number of users it wrote.
    let mut analyze_at = 1000;
    let mut analyzing: Option<tokio::task::JoinHandle<()>> = None;
    while let Some((o, pos)) = done_rx.recv().await {
        let s = &mut report.summary;
        match o {
            Outcome::Created => s.created += 1,
            Outcome::Updated => s.updated += 1,
            Outcome::Unchanged => s.unchanged += 1,
            Outcome::Skipped => s.skipped += 1,
            Outcome::Failed(e) => {
                s.failed += 1;
                report.errors.push(e);
            }
        }
        if !opts.dry_run
            && s.created >= analyze_at
            && analyzing.as_ref().is_none_or(|t| t.is_finished())
        {
            analyze_at = s.created * 2;
            let store = store.clone();
            analyzing = Some(tokio::spawn(async move {
                if let Err(e) = store.refresh_statistics().await {
                    tracing::warn!(error = %e, "could not refresh planner statistics");
                }
            }));
        }
        if last_draw.elapsed() >= Duration::from_millis(100) {
            s.elapsed_seconds = started.elapsed().as_secs_f64();
            progress.draw(pos, s);
            last_draw = Instant::now();
        }
    }
    let _ = reader.await;
    if let Some(t) = analyzing {
        let _ = t.await;
    }
    for w in workers {
        let _ = w.await;
    }
    report.summary.elapsed_seconds = started.elapsed().as_secs_f64();
    progress.finish(&report.summary);
    report.errors.sort_by_key(|e| e.line);
    report
}
