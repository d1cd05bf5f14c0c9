//! Verifying the audit chain, middle and end.
//!
//! Each row's hash covers the previous row's hash, so a row cannot be edited, removed or
//! inserted in the middle without breaking every later hash. What a chain cannot show by
//! itself is its end: deleting the newest rows leaves a shorter chain that verifies. The end
//! is proved by evidence the chain does not control:
//!
//! - the change feed: every write commits one change row and one audit row that records its
//!   `change_seq`, so each change row after the retention anchor must have its audit row;
//! - the resources: each one's current version must have its change row, so deleting the
//!   newest writes from both feed and trail is visible too, unless the resources are rolled
//!   back as well;
//! - the outbound planner's position in the feed, and on SQLite the sequence numbers the
//!   database has issued (rolled back with their transaction, so a gap is a deletion);
//! - heads (`SEQ:HASH`) an operator exported, or the hub logged, outside the database:
//!   `verify_audit_chain_against` fails unless each is still in the chain with its hash.
//!
//! With a key (`audit.chain_key_file`) each hash is an HMAC-SHA256, so a database writer
//! without the key cannot recompute the chain after rewriting rows. Rows record how they were
//! hashed (`hash_mode`); a writer only appends rows in the mode of the newest row, and the
//! mode changes only through an explicit, recorded `audit.rekey` row (`rekey_audit_chain`,
//! after a full verification): switching automatically would let a keyed writer seal
//! whatever an attacker had rewritten just before.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sea_orm::{ConnectionTrait, DbBackend};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::audit::{AuditEntry, AuditRecord, PRUNE_ACTION, audit_select, read_record};
use super::builder::stmt;
use super::{Actor, Store};
use crate::error::StoreError;
use crate::model::now_timestamp;

type HmacSha256 = Hmac<Sha256>;

/// The action of the row that records a switch of the chain to another key (or to none).
pub const REKEY_ACTION: &str = "audit.rekey";

const PLAIN: &str = "sha256";
const KEYED_PREFIX: &str = "hmac-sha256:";
/// Rows read per round trip while verifying.
const VERIFY_PAGE: i64 = 2000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret that keys the audit chain's hashes. It lives outside the database; the rows
/// name it by an id derived from it.
#[derive(Clone)]
pub struct ChainKey {
    id: String,
    secret: Arc<[u8]>,
}

impl ChainKey {
    pub const MIN_BYTES: usize = 32;
    pub const MAX_BYTES: usize = 4096;

    /// A key from the bytes of its file, used exactly as they are.
    pub fn new(secret: &[u8]) -> Result<ChainKey, StoreError> {
        if !(Self::MIN_BYTES..=Self::MAX_BYTES).contains(&secret.len()) {
            return Err(StoreError::Config(format!(
                "an audit chain key must be {} to {} bytes, not {} (e.g. `head -c 32 /dev/urandom > FILE`)",
                Self::MIN_BYTES,
                Self::MAX_BYTES,
                secret.len()
            )));
        }
        let mut mac = Self::mac(secret);
        mac.update(b"scimhub audit chain key id");
        Ok(ChainKey {
            id: hex(&mac.finalize().into_bytes()[..8]),
            secret: secret.into(),
        })
    }

    fn mac(secret: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of every length (longer ones are hashed first).
        HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
    }

    /// Names the key in `hash_mode` without revealing it: 16 hex digits of an HMAC of a
    /// constant under the key.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey").field("id", &self.id).finish()
    }
}

/// The keys of the audit chain: `current` keys new rows (none: unkeyed SHA-256); `retired`
/// keys only verify rows hashed with them before a rekey.
#[derive(Clone, Debug, Default)]
pub struct AuditKeys {
    pub current: Option<ChainKey>,
    pub retired: Vec<ChainKey>,
}

impl AuditKeys {
    fn find(&self, id: &str) -> Option<&ChainKey> {
        self.current
            .iter()
            .chain(&self.retired)
            .find(|k| k.id == id)
    }

    pub(crate) fn writing_mode(&self) -> Mode {
        match &self.current {
            Some(k) => Mode::Keyed(k.id.clone()),
            None => Mode::Plain,
        }
    }
}

/// How a row's hash was computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Written before migration 5: SHA-256, not covering change_seq (`hash_mode` NULL).
    Legacy,
    /// SHA-256 of the current format.
    Plain,
    /// HMAC-SHA256 of the current format under the key with this id.
    Keyed(String),
}

impl Mode {
    pub fn from_column(c: Option<&str>) -> Option<Mode> {
        match c {
            None => Some(Mode::Legacy),
            Some(PLAIN) => Some(Mode::Plain),
            Some(s) => s
                .strip_prefix(KEYED_PREFIX)
                .filter(|id| !id.is_empty())
                .map(|id| Mode::Keyed(id.to_string())),
        }
    }

    pub fn column(&self) -> Option<String> {
        match self {
            Mode::Legacy => None,
            Mode::Plain => Some(PLAIN.into()),
            Mode::Keyed(id) => Some(format!("{KEYED_PREFIX}{id}")),
        }
    }

    pub fn name(&self) -> String {
        self.column().unwrap_or_else(|| "legacy".into())
    }

    /// The key, if any: rows may follow each other only with the same one.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Mode::Keyed(id) => Some(id),
            _ => None,
        }
    }
}

/// The hash of a row hashed in `mode`, or `None` when its key is not among `keys`.
pub(crate) fn row_hash(
    mode: &Mode,
    keys: &AuditKeys,
    prev: &str,
    at: &str,
    e: &AuditEntry,
    detail: &str,
    change_seq: Option<i64>,
) -> Option<String> {
    let body = match mode {
        Mode::Legacy => serde_json::json!([
            at,
            e.actor,
            e.source,
            e.layer,
            e.action,
            e.resource_type,
            e.resource_id,
            e.consumer,
            e.outcome,
            detail
        ]),
        // The mode is hashed too, so that a row cannot be relabelled.
        Mode::Plain | Mode::Keyed(_) => serde_json::json!([
            2,
            mode.name(),
            at,
            e.actor,
            e.source,
            e.layer,
            e.action,
            e.resource_type,
            e.resource_id,
            e.consumer,
            e.outcome,
            detail,
            change_seq
        ]),
    }
    .to_string();
    match mode {
        Mode::Legacy | Mode::Plain => {
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(b"\n");
            h.update(body.as_bytes());
            Some(hex(&h.finalize()))
        }
        Mode::Keyed(id) => {
            let mut mac = ChainKey::mac(&keys.find(id)?.secret);
            mac.update(prev.as_bytes());
            mac.update(b"\n");
            mac.update(body.as_bytes());
            Some(hex(&mac.finalize().into_bytes()))
        }
    }
}

/// Whether an append may change the chain's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModeSwitch {
    Refuse,
    /// Only `rekey_audit_chain`, after verifying the chain.
    Allow,
}

/// Why a writer refuses to append after a head of another mode.
pub(crate) fn mode_mismatch(seq: i64, head: Option<&Mode>, keys: &AuditKeys) -> StoreError {
    let msg = match (head, &keys.current) {
        (None, _) => format!(
            "the newest audit row ({seq}) has a hash mode this version of scimhub does not know"
        ),
        (Some(Mode::Keyed(id)), None) => format!(
            "the audit chain is keyed (row {seq}: key {id}) but audit.chain_key_file is not set: configure that key file, or switch the chain to unkeyed hashes with `scimhub audit rekey` (with the key in audit.retired_chain_key_files)"
        ),
        (Some(Mode::Keyed(id)), Some(k)) => format!(
            "the newest audit row ({seq}) is keyed with key {id}, not with audit.chain_key_file (key {}): switch the chain to it with `scimhub audit rekey`, with the old key in audit.retired_chain_key_files",
            k.id()
        ),
        (Some(_), Some(k)) => format!(
            "audit.chain_key_file is set (key {}) but the newest audit row ({seq}) is not keyed: if the key was just configured, switch the chain to it once with `scimhub audit rekey` (it verifies the chain first); if the chain was keyed before, its rows were rewritten by someone without the key: run `scimhub audit verify`",
            k.id()
        ),
        (Some(_), None) => format!("the newest audit row ({seq}) is in an unexpected hash mode"),
    };
    StoreError::Config(msg)
}

/// A row of the chain as an operator exports it, `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for ChainHead {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not an audit head: expected SEQ:HASH as `scimhub audit head` prints it (a row number, a colon, 64 hex digits)"
            )
        };
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if seq < 1 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(ChainHead { seq, hash })
    }
}

/// The outcome of checking the audit chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainReport {
    /// Every check passed.
    pub intact: bool,
    /// Rows verified.
    pub rows: u64,
    /// Of which keyed (HMAC).
    pub keyed_rows: u64,
    /// When older rows were pruned by retention: the last pruned row, after which the
    /// verified chain starts (anchored on that row's hash).
    pub anchored_after: Option<i64>,
    /// The audit row at fault, when one is.
    pub first_broken: Option<i64>,
    /// A change-feed row that has no audit row (the audit row was deleted).
    pub missing_change: Option<i64>,
    pub reason: Option<String>,
    /// The newest row verified: what to export for a later `verify --head`.
    pub head: Option<ChainHead>,
    /// Exported heads found in the chain with their hash.
    pub heads_checked: u64,
}

impl ChainReport {
    fn fail(mut self, row: Option<i64>, reason: String) -> Self {
        self.intact = false;
        self.first_broken = row;
        self.reason = Some(reason);
        self
    }
}

/// What `rekey_audit_chain` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RekeyReport {
    /// The mode of the head before, and the mode rows are hashed in from now on.
    pub from: String,
    pub to: String,
    /// The rekey row (the new head); `None` when nothing had to change.
    pub head: Option<ChainHead>,
    /// Rows verified before switching.
    pub rows_verified: u64,
}

/// The state of a walk along the chain, row by row, oldest first: used by verification and
/// by pruning (which verifies what it deletes).
pub(crate) struct ChainWalk<'a> {
    keys: &'a AuditKeys,
    expected_prev: String,
    prev_mode: Option<Mode>,
    current_format_seen: bool,
    /// (change seq, audit seq) of the first and of the newest row linked to a change.
    pub first_change: Option<(i64, i64)>,
    pub last_change: Option<i64>,
    pub rows: u64,
    pub keyed_rows: u64,
    /// The newest row checked, and its mode.
    pub last: Option<(ChainHead, Mode)>,
}

impl<'a> ChainWalk<'a> {
    pub fn new(keys: &'a AuditKeys, expected_prev: String) -> Self {
        ChainWalk {
            keys,
            expected_prev,
            prev_mode: None,
            current_format_seen: false,
            first_change: None,
            last_change: None,
            rows: 0,
            keyed_rows: 0,
            last: None,
        }
    }

    /// The hash the next row must chain to.
    pub fn expected_prev(&self) -> &str {
        &self.expected_prev
    }

    /// Checks the next row; the reason it does not verify, if it does not.
    pub fn check(&mut self, rec: &AuditRecord, detail_s: &str) -> Result<(), String> {
        if rec.prev_hash != self.expected_prev {
            return Err("its prev_hash is not the hash of the row before it: a row was removed, inserted or reordered".into());
        }
        let mode = Mode::from_column(rec.hash_mode.as_deref()).ok_or_else(|| {
            format!(
                "its hash mode {:?} is unknown to this version of scimhub",
                rec.hash_mode.as_deref().unwrap_or_default()
            )
        })?;
        if mode == Mode::Legacy && self.current_format_seen {
            return Err("it has the hash format of rows written before the chain covered change-feed links, yet follows rows of the current format: it was rewritten".into());
        }
        if let Some(prev) = &self.prev_mode
            && prev.key_id() != mode.key_id()
        {
            let d = &rec.entry.detail;
            let recorded = rec.entry.action == REKEY_ACTION
                && d.get("from").and_then(Value::as_str) == Some(prev.name().as_str())
                && d.get("to").and_then(Value::as_str) == Some(mode.name().as_str());
            if !recorded {
                return Err(format!(
                    "it is hashed {} after a row hashed {}, and it is not the {REKEY_ACTION} row recording that switch: rows were rewritten",
                    mode.name(),
                    prev.name()
                ));
            }
        }
        let hash = row_hash(
            &mode,
            self.keys,
            &rec.prev_hash,
            &rec.at,
            &rec.entry,
            detail_s,
            rec.change_seq,
        )
        .ok_or_else(|| {
            format!(
                "it is keyed with audit chain key {}, which is not configured (audit.chain_key_file or audit.retired_chain_key_files): it cannot be verified",
                mode.key_id().unwrap_or_default()
            )
        })?;
        if hash != rec.hash {
            return Err("its content does not match its hash: the row was edited".into());
        }
        if let Some(c) = rec.change_seq {
            if self.last_change.is_some_and(|l| c <= l) {
                return Err(format!(
                    "it records change-feed row {c}, which is not after the change an earlier row records: rows were reordered or copied"
                ));
            }
            self.last_change = Some(c);
            self.first_change.get_or_insert((c, rec.seq));
        }
        self.current_format_seen |= mode != Mode::Legacy;
        self.keyed_rows += u64::from(mode.key_id().is_some());
        self.rows += 1;
        self.expected_prev = rec.hash.clone();
        self.last = Some((
            ChainHead {
                seq: rec.seq,
                hash: rec.hash.clone(),
            },
            mode.clone(),
        ));
        self.prev_mode = Some(mode);
        Ok(())
    }
}

impl Store {
    /// The newest audit row, `SEQ:HASH`, for an operator to keep outside the database.
    pub async fn audit_head(&self) -> Result<Option<ChainHead>, StoreError> {
        let row = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        row.map(|r| {
            Ok(ChainHead {
                seq: r.try_get_by_index(0)?,
                hash: r.try_get_by_index(1)?,
            })
        })
        .transpose()
    }

    /// Fails when this store would refuse to append to the chain (its newest row is in
    /// another hash mode than the configured key gives): checked when the hub starts, so
    /// that a mismatch stops it rather than every write.
    pub async fn check_audit_mode(&self) -> Result<(), StoreError> {
        let head = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT seq, hash_mode FROM audit ORDER BY seq DESC LIMIT 1",
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        let Some(row) = head else {
            return Ok(());
        };
        let seq: i64 = row.try_get_by_index(0)?;
        let mode = Mode::from_column(row.try_get_by_index::<Option<String>>(1)?.as_deref());
        let keys = &self.opts.audit_keys;
        if mode.as_ref().map(Mode::key_id) != Some(keys.writing_mode().key_id()) {
            return Err(mode_mismatch(seq, mode.as_ref(), keys));
        }
        Ok(())
    }

    /// Checks the chain from the retention anchor to its newest row, and its end against the
    /// change feed, the resources and the outbound planner.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError> {
        self.verify_chain(&[], true).await
    }

    /// As `verify_audit_chain`, and each exported head must still be in the chain with its
    /// hash: rows deleted or rewritten at or before an exported head are detected even
    /// without a key.
    pub async fn verify_audit_chain_against(
        &self,
        heads: &[ChainHead],
    ) -> Result<ChainReport, StoreError> {
        self.verify_chain(heads, true).await
    }

    async fn one_i64s(&self, sql: &str, n: usize) -> Result<Vec<Option<i64>>, StoreError> {
        let row = self
            .db
            .query_one_raw(stmt(sql, vec![]).build(self.backend))
            .await?;
        (0..n)
            .map(|i| match &row {
                Some(r) => Ok(r.try_get_by_index::<Option<i64>>(i)?),
                None => Ok(None),
            })
            .collect()
    }

    /// `require_current_key`: the newest row must be keyed with `audit.chain_key_file` when
    /// one is set (off only while rekeying, which is what switches it).
    async fn verify_chain(
        &self,
        heads: &[ChainHead],
        require_current_key: bool,
    ) -> Result<ChainReport, StoreError> {
        let keys = &self.opts.audit_keys;
        let anchor = self.audit_anchor().await?;
        let report = ChainReport {
            intact: true,
            rows: 0,
            keyed_rows: 0,
            anchored_after: anchor.as_ref().map(|a| a.through_seq),
            first_broken: None,
            missing_change: None,
            reason: None,
            head: None,
            heads_checked: 0,
        };
        if let Some(a) = &anchor {
            let below = self.one_i64s("SELECT MIN(seq) FROM audit", 1).await?[0];
            if let Some(seq) = below.filter(|s| *s <= a.through_seq) {
                return Ok(report.fail(
                    Some(seq),
                    format!(
                        "it precedes the retention anchor (rows up to {} were pruned): a row was inserted",
                        a.through_seq
                    ),
                ));
            }
        }
        let mut walk = ChainWalk::new(
            keys,
            anchor.as_ref().map(|a| a.hash.clone()).unwrap_or_default(),
        );
        let mut last_seq = anchor.as_ref().map_or(0, |a| a.through_seq);
        let wanted: BTreeMap<i64, &str> = heads.iter().map(|h| (h.seq, h.hash.as_str())).collect();
        let mut met = BTreeSet::new();
        // The newest `audit.prune` row must name the anchor, so that moving the anchor
        // (to hide deleted rows) breaks the chain.
        let mut last_prune: Option<(i64, Value)> = None;
        loop {
            let rows = self
                .db
                .query_all_raw(
                    stmt(
                        &format!("{} WHERE seq > ? ORDER BY seq LIMIT ?", audit_select()),
                        vec![last_seq.into(), VERIFY_PAGE.into()],
                    )
                    .build(self.backend),
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let (rec, detail_s) = read_record(row)?;
                if let Err(reason) = walk.check(&rec, &detail_s) {
                    let mut r = report;
                    r.rows = walk.rows;
                    return Ok(r.fail(Some(rec.seq), reason));
                }
                if let Some(h) = wanted.get(&rec.seq) {
                    if *h != rec.hash {
                        let mut r = report;
                        r.rows = walk.rows;
                        return Ok(r.fail(
                            Some(rec.seq),
                            format!(
                                "its hash is not that of the exported head {}:{h}: this row or rows before it were rewritten",
                                rec.seq
                            ),
                        ));
                    }
                    met.insert(rec.seq);
                }
                if rec.entry.action == PRUNE_ACTION {
                    last_prune = Some((rec.seq, rec.entry.detail.clone()));
                }
                last_seq = rec.seq;
            }
        }
        let mut report = ChainReport {
            rows: walk.rows,
            keyed_rows: walk.keyed_rows,
            head: walk.last.as_ref().map(|(h, _)| h.clone()),
            heads_checked: met.len() as u64,
            ..report
        };
        if let Some(a) = &anchor {
            let named = last_prune.as_ref().is_some_and(|(_, d)| {
                d.get("throughSeq").and_then(Value::as_i64) == Some(a.through_seq)
                    && d.get("anchorHash").and_then(Value::as_str) == Some(a.hash.as_str())
                    // Prune rows written before the change-feed link lack it.
                    && d.get("throughChangeSeq")
                        .is_none_or(|v| v.as_i64() == Some(a.through_change_seq))
            });
            if !named {
                let seq = last_prune.map(|(s, _)| s).unwrap_or(a.through_seq + 1);
                return Ok(report.fail(
                    Some(seq),
                    format!(
                        "the retention anchor (rows up to {}) is not the one the last audit.prune row names: the anchor was altered",
                        a.through_seq
                    ),
                ));
            }
            if let Some((change, seq)) = walk.first_change
                && change <= a.through_change_seq
            {
                return Ok(report.fail(
                    Some(seq),
                    format!(
                        "the retention anchor says the audit rows of change-feed rows up to {} were pruned, but this row still records change {change}: the anchor was altered",
                        a.through_change_seq
                    ),
                ));
            }
        }
        if require_current_key
            && let Some(k) = &keys.current
            && let Some((head, mode)) = &walk.last
            && mode.key_id() != Some(k.id())
        {
            return Ok(report.fail(
                Some(head.seq),
                format!(
                    "audit.chain_key_file is set (key {}), but the newest row is hashed {}: if the key was just configured, switch the chain to it with `scimhub audit rekey`; if the chain was keyed with it before, its keyed rows were rewritten by someone without the key",
                    k.id(),
                    mode.name()
                ),
            ));
        }
        let newest = walk.last.as_ref().map_or(last_seq, |(h, _)| h.seq);
        for (&seq, &hash) in wanted.iter().filter(|(s, _)| !met.contains(s)) {
            let pruned = anchor.as_ref().filter(|a| seq <= a.through_seq);
            let Some(a) = pruned else {
                return Ok(report.fail(
                    Some(seq),
                    if seq > newest {
                        format!(
                            "the exported head {seq}:{hash} is past the newest row ({newest}): rows {}..={seq} were deleted",
                            newest + 1
                        )
                    } else {
                        format!("row {seq} of the exported head {seq}:{hash} is missing: it was deleted")
                    },
                ));
            };
            match self.anchor_hash_at(seq).await? {
                Some(h) if h == hash => report.heads_checked += 1,
                Some(_) => {
                    return Ok(report.fail(
                        Some(seq),
                        format!("the retention anchor at row {seq} does not have the hash of the exported head {seq}:{hash}: rows at or before it were rewritten before they were pruned"),
                    ));
                }
                None => {
                    return Ok(report.fail(
                        Some(seq),
                        format!("row {seq} of the exported head was pruned (the chain now starts after row {}): it can no longer be checked; check a head exported after the last pruning", a.through_seq),
                    ));
                }
            }
        }
        if let Some(r) = self.check_feed_links(&anchor).await? {
            let (row, change, reason) = r;
            report.missing_change = change;
            return Ok(report.fail(row, reason));
        }
        if let Some((row, reason)) = self.check_feed_end().await? {
            return Ok(report.fail(row, reason));
        }
        Ok(report)
    }

    async fn anchor_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        self.db
            .query_one_raw(
                stmt(
                    "SELECT hash FROM audit_anchor WHERE through_seq = ? ORDER BY id DESC LIMIT 1",
                    vec![seq.into()],
                )
                .build(self.backend),
            )
            .await?
            .map(|r| r.try_get_by_index::<String>(0))
            .transpose()
            .map_err(Into::into)
    }

    /// Every change-feed row after the anchor has its audit row, and every audit row's
    /// change is in the feed: (audit row at fault, change row at fault, reason).
    async fn check_feed_links(
        &self,
        anchor: &Option<super::AuditAnchor>,
    ) -> Result<Option<(Option<i64>, Option<i64>, String)>, StoreError> {
        let pruned = anchor.as_ref().map_or(0, |a| a.through_change_seq);
        let orphan = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT c.seq, c.resource_type, c.resource_id, c.op, c.at FROM changes c WHERE c.seq > ? AND NOT EXISTS (SELECT 1 FROM audit a WHERE a.change_seq = c.seq) ORDER BY c.seq LIMIT 1",
                    vec![pruned.into()],
                )
                .build(self.backend),
            )
            .await?;
        if let Some(r) = orphan {
            let seq: i64 = r.try_get_by_index(0)?;
            let (kind, id, op, at): (String, String, String, String) = (
                r.try_get_by_index(1)?,
                r.try_get_by_index(2)?,
                r.try_get_by_index(3)?,
                r.try_get_by_index(4)?,
            );
            let before = self
                .db
                .query_one_raw(
                    stmt(
                        "SELECT seq FROM audit WHERE change_seq < ? ORDER BY change_seq DESC LIMIT 1",
                        vec![seq.into()],
                    )
                    .build(self.backend),
                )
                .await?
                .map(|r| r.try_get_by_index::<i64>(0))
                .transpose()?;
            let place = match before {
                Some(b) => format!(", which came after audit row {b},"),
                None => String::new(),
            };
            return Ok(Some((
                before.map(|b| b + 1),
                Some(seq),
                format!(
                    "change-feed row {seq} ({kind} {id} {op} at {at}) has no audit row: the audit row recording it{place} was deleted"
                ),
            )));
        }
        let dangling = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT a.seq, a.change_seq FROM audit a WHERE a.change_seq IS NOT NULL AND NOT EXISTS (SELECT 1 FROM changes c WHERE c.seq = a.change_seq AND c.resource_id = a.resource_id) ORDER BY a.seq LIMIT 1",
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        if let Some(r) = dangling {
            let (seq, change): (i64, i64) = (r.try_get_by_index(0)?, r.try_get_by_index(1)?);
            return Ok(Some((
                Some(seq),
                Some(change),
                format!(
                    "it records change-feed row {change}, which the change feed no longer has for that resource: change-feed rows were deleted or rewritten"
                ),
            )));
        }
        Ok(None)
    }

    /// Evidence of the feed's and the trail's end outside both: the resources' versions, the
    /// outbound planner's position and, on SQLite, the sequence numbers issued.
    async fn check_feed_end(&self) -> Result<Option<(Option<i64>, String)>, StoreError> {
        let stale = self
            .db
            .query_one_raw(
                stmt(
                    "SELECT r.resource_type, r.id, r.version FROM resources r WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE c.resource_id = r.id AND c.resource_type = r.resource_type AND c.new_version = r.version) ORDER BY r.rid LIMIT 1",
                    vec![],
                )
                .build(self.backend),
            )
            .await?;
        if let Some(r) = stale {
            let (kind, id, version): (String, String, i64) = (
                r.try_get_by_index(0)?,
                r.try_get_by_index(1)?,
                r.try_get_by_index(2)?,
            );
            return Ok(Some((
                None,
                format!(
                    "{kind} {id} is at version {version}, but the change feed has no row for that version: the newest change-feed rows, and their audit rows, were deleted"
                ),
            )));
        }
        let v = self
            .one_i64s(
                "SELECT (SELECT value FROM outbound_state WHERE name = 'planner_seq'), (SELECT MAX(seq) FROM changes)",
                2,
            )
            .await?;
        if let (Some(planner), newest) = (v[0], v[1].unwrap_or(0))
            && planner > newest
        {
            return Ok(Some((
                None,
                format!(
                    "the outbound planner has read the change feed up to row {planner}, but its newest row is {newest}: change-feed rows, and their audit rows, were deleted"
                ),
            )));
        }
        // SQLite's AUTOINCREMENT counter is rolled back with its transaction, so numbers it
        // issued beyond the newest row were deleted rows. (PostgreSQL's sequences are not
        // transactional: a rolled-back write leaves a gap, so they prove nothing.)
        if self.backend == DbBackend::Sqlite {
            // Counters and newest rows read in one statement: rows appended since the walk
            // must not look like deleted ones.
            let v = self
                .one_i64s(
                    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'audit'), (SELECT MAX(seq) FROM audit), (SELECT seq FROM sqlite_sequence WHERE name = 'changes'), (SELECT MAX(seq) FROM changes)",
                    4,
                )
                .await?;
            let newest = v[1].unwrap_or(0);
            if let Some(issued) = v[0].filter(|i| *i > newest) {
                return Ok(Some((
                    Some(newest + 1),
                    format!(
                        "audit rows {}..={issued} were deleted: the database issued row numbers up to {issued}, but the newest row is {newest}",
                        newest + 1
                    ),
                )));
            }
            let newest_change = v[3].unwrap_or(0);
            if let Some(issued) = v[2].filter(|i| *i > newest_change) {
                return Ok(Some((
                    None,
                    format!(
                        "change-feed rows {}..={issued} were deleted, with their audit rows: the database issued change numbers up to {issued}, but the newest change is {newest_change}",
                        newest_change + 1
                    ),
                )));
            }
        }
        Ok(None)
    }

    /// Switches the chain to the configured key (or to unkeyed hashes when none is set):
    /// verifies the whole chain with every configured key, then appends an `audit.rekey`
    /// row in the new mode that names the old one. Hub instances still configured for the
    /// old mode refuse to append from then on.
    pub async fn rekey_audit_chain(&self, actor: &Actor) -> Result<RekeyReport, StoreError> {
        let keys = &self.opts.audit_keys;
        let target = keys.writing_mode();
        for _ in 0..3 {
            let verified = self.verify_chain(&[], false).await?;
            if !verified.intact {
                return Err(StoreError::Corrupt(format!(
                    "the audit chain does not verify{}: {}; it was not switched to another key",
                    verified
                        .first_broken
                        .map(|s| format!(" at row {s}"))
                        .unwrap_or_default(),
                    verified.reason.unwrap_or_default()
                )));
            }
            let _guard = self.write_guard().await;
            let txn = self.begin_write().await?;
            self.lock_feed(&txn).await?;
            let head = txn
                .query_one_raw(
                    stmt(
                        "SELECT seq, hash_mode FROM audit ORDER BY seq DESC LIMIT 1",
                        vec![],
                    )
                    .build(self.backend),
                )
                .await?
                .map(|r| {
                    Ok::<_, StoreError>((
                        r.try_get_by_index::<i64>(0)?,
                        r.try_get_by_index::<Option<String>>(1)?,
                    ))
                })
                .transpose()?;
            if head.as_ref().map(|h| h.0) != verified.head.as_ref().map(|h| h.seq) {
                // Rows were appended since the verification: verify them too.
                txn.rollback().await?;
                continue;
            }
            let Some((seq, head_mode)) = head else {
                txn.rollback().await?;
                // An empty chain: its first row will be written in the configured mode.
                return Ok(RekeyReport {
                    from: target.name(),
                    to: target.name(),
                    head: None,
                    rows_verified: 0,
                });
            };
            let from = Mode::from_column(head_mode.as_deref()).ok_or_else(|| {
                StoreError::Corrupt(format!("audit row {seq} has an unknown hash mode"))
            })?;
            if from.key_id() == target.key_id() {
                txn.rollback().await?;
                return Ok(RekeyReport {
                    from: from.name(),
                    to: target.name(),
                    head: None,
                    rows_verified: verified.rows,
                });
            }
            let entry = AuditEntry {
                actor: actor.principal.clone(),
                source: actor.source.clone(),
                layer: actor.layer.into(),
                action: REKEY_ACTION.into(),
                resource_type: None,
                resource_id: None,
                consumer: None,
                outcome: "success".into(),
                detail: serde_json::json!({
                    "from": from.name(),
                    "to": target.name(),
                    "verifiedRows": verified.rows,
                }),
            };
            let head = self
                .append_chained(&txn, &entry, &now_timestamp(), None, ModeSwitch::Allow)
                .await?;
            txn.commit().await?;
            return Ok(RekeyReport {
                from: from.name(),
                to: target.name(),
                head: Some(head),
                rows_verified: verified.rows,
            });
        }
        Err(StoreError::Conflict(
            "the audit trail kept growing while it was verified for rekeying; try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_print() {
        let h: ChainHead = format!("42:{}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(h.seq, 42);
        assert_eq!(h.to_string(), format!("42:{}", "ab".repeat(32)));
        for bad in [
            "",
            "42",
            "x:ab",
            "0:aa",
            &format!("5:{}", "g".repeat(64)),
            "5:abc",
        ] {
            let e = bad.parse::<ChainHead>().unwrap_err();
            assert!(e.contains("SEQ:HASH"), "{e}");
        }
    }

    #[test]
    fn keys_are_named_without_revealing_them() {
        assert!(ChainKey::new(&[7; 31]).is_err());
        assert!(ChainKey::new(&[7; 4097]).is_err());
        let a = ChainKey::new(&[7; 32]).unwrap();
        let b = ChainKey::new(&[8; 32]).unwrap();
        assert_eq!(a.id().len(), 16);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), ChainKey::new(&[7; 32]).unwrap().id());
        assert!(!format!("{a:?}").contains("7, 7"));
    }

    #[test]
    fn modes_round_trip_through_their_column() {
        for m in [
            Mode::Legacy,
            Mode::Plain,
            Mode::Keyed("0123456789abcdef".into()),
        ] {
            assert_eq!(Mode::from_column(m.column().as_deref()), Some(m));
        }
        assert_eq!(Mode::from_column(Some("md5")), None);
        assert_eq!(Mode::from_column(Some("hmac-sha256:")), None);
    }

    #[test]
    fn a_keyed_hash_depends_on_the_key_and_covers_the_link() {
        let e = AuditEntry {
            actor: "a".into(),
            source: None,
            layer: "scim".into(),
            action: "user.create".into(),
            resource_type: Some("User".into()),
            resource_id: Some("1".into()),
            consumer: None,
            outcome: "success".into(),
            detail: Value::Null,
        };
        let k1 = ChainKey::new(&[1; 32]).unwrap();
        let k2 = ChainKey::new(&[2; 32]).unwrap();
        let keys = AuditKeys {
            current: Some(k1.clone()),
            retired: vec![k2.clone()],
        };
        let h = |m: &Mode, c| row_hash(m, &keys, "p", "t", &e, "null", c).unwrap();
        let (m1, m2) = (Mode::Keyed(k1.id().into()), Mode::Keyed(k2.id().into()));
        assert_ne!(h(&m1, Some(1)), h(&m2, Some(1)));
        assert_ne!(h(&m1, Some(1)), h(&m1, Some(2)));
        assert_ne!(h(&Mode::Plain, Some(1)), h(&Mode::Plain, Some(2)));
        // Legacy rows never covered the link.
        assert_eq!(h(&Mode::Legacy, Some(1)), h(&Mode::Legacy, Some(2)));
        assert_ne!(h(&Mode::Plain, Some(1)), h(&m1, Some(1)));
        assert!(
            row_hash(
                &Mode::Keyed("ffff".into()),
                &keys,
                "p",
                "t",
                &e,
                "null",
                None
            )
            .is_none()
        );
    }
}
