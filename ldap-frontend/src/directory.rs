//! Protocol handling: one request in, the reply messages out (`handle`). No sockets here:
//! the server module frames messages and writes the replies; tests call `handle` directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapBindResponse, LdapCompareRequest, LdapExtendedRequest,
    LdapExtendedResponse, LdapFilter, LdapMsg, LdapOp, LdapResult, LdapResultCode,
    LdapSearchRequest, LdapSearchScope,
};
use store::filter::{AttrTarget, CompareOp, ResolvedFilter, ResolvedValue};
use store::model::{ResourceKind, StoredResource};
use store::{AuditEntry, Load, Store};

use crate::batch::NameBatcher;
use crate::config::{InactiveUsers, LdapConfig};
use crate::dit::{
    Container, Dit, Dn, Entry, Mapping, Names, SERVICE_OPERATIONAL, SUBSCHEMA_OPERATIONAL,
    Selection, Syntax, Target, base_entry, container_entry, is_inactive, referenced_ids,
    resource_entry, root_dse, service_entry, subschema_entry,
};
use crate::error::LdapError;
use crate::filter::{DnRef, DnRefs, Translator, dn_refs, filter_terms, matches_entry};
use crate::session::{Position, Principal, Session};
use crate::throttle::Throttle;

pub const OID_PAGED_RESULTS: &str = "1.2.840.113556.1.4.319";
pub const OID_WHOAMI: &str = "1.3.6.1.4.1.4203.1.11.3";
pub const OID_STARTTLS: &str = "1.3.6.1.4.1.1466.20037";
pub const OID_NOTICE_OF_DISCONNECTION: &str = "1.3.6.1.4.1.1466.20036";

/// Called after every request with the operation's name (`bind`, `search`, `compare`,
/// `extended`, `add`, `modify`, `delete`, `modrdn`, `unbind`, `abandon`, `other`), the result
/// code of its reply (0 when it has none) and how long it took; for metrics.
pub type Observer = Arc<dyn Fn(&'static str, u32, Duration) + Send + Sync>;

/// Rows fetched per store query while filling a page or an unpaged search.
const FETCH_CHUNK: u64 = 500;

fn result(code: LdapResultCode, matched: &str, message: impl Into<String>) -> LdapResult {
    LdapResult {
        code,
        matcheddn: matched.to_string(),
        message: message.into(),
        referral: Vec::new(),
    }
}

fn success() -> LdapResult {
    result(LdapResultCode::Success, "", "")
}

fn error_result(e: &LdapError) -> LdapResult {
    let (code, matched, message) = e.to_result();
    result(code, &matched, message)
}

/// The unsolicited notice sent before closing a connection that broke the protocol
/// (RFC 4511 §4.4.1).
pub fn notice_of_disconnection(code: LdapResultCode, message: &str) -> LdapMsg {
    LdapMsg {
        msgid: 0,
        op: LdapOp::ExtendedResponse(LdapExtendedResponse {
            res: result(code, "", message),
            name: Some(OID_NOTICE_OF_DISCONNECTION.into()),
            value: None,
        }),
        ctrl: Vec::new(),
    }
}

/// The OID of a control the request marks critical and this server does not implement.
fn unsupported_critical(ctrl: &[LdapControl]) -> Option<String> {
    ctrl.iter().find_map(|c| match c {
        LdapControl::Unknown {
            oid, criticality, ..
        } if *criticality => Some(oid.clone()),
        LdapControl::SyncRequest {
            criticality: true, ..
        } => Some("1.3.6.1.4.1.4203.1.9.1.1".into()),
        LdapControl::PasswordPolicyRequest { criticality: true } => {
            Some("1.3.6.1.4.1.42.2.27.8.5.1".into())
        }
        LdapControl::SearchOptions {
            criticality: true, ..
        } => Some("1.2.840.113556.1.4.1340".into()),
        LdapControl::ShowDeleted { criticality: true } => Some("1.2.840.113556.1.4.417".into()),
        LdapControl::SdFlags {
            criticality: true, ..
        } => Some("1.2.840.113556.1.4.801".into()),
        LdapControl::ExtendedDn {
            criticality: true, ..
        } => Some("1.2.840.113556.1.4.529".into()),
        _ => None,
    })
}

/// One part of a search: entries held in memory, resources of one type from the store, or
/// the service accounts.
#[derive(Debug, Clone)]
enum Phase {
    Fixed(Vec<Entry>, &'static [&'static str]),
    Resources(ResourceKind, Option<String>),
    Services(Option<String>),
}

/// What a search returns.
struct Found {
    entries: Vec<Entry>,
    /// Where to continue, when the limit was reached before the end.
    next: Option<Position>,
}

/// The read-only directory over a store.
pub struct Directory {
    store: Store,
    cfg: Arc<LdapConfig>,
    dit: Dit,
    mapping: Mapping,
    subschema: Entry,
    throttle: Throttle,
    tls_available: bool,
    names: Arc<NameBatcher>,
    observer: Option<Observer>,
}

impl Directory {
    pub fn new(store: Store, cfg: Arc<LdapConfig>, tls_available: bool) -> Result<Self, LdapError> {
        cfg.validate()?;
        let dit = Dit::new(&cfg.base_dn)?;
        let mapping = Mapping::new(store.registry(), &cfg.attributes)?;
        let subschema = subschema_entry(&mapping);
        let throttle = Throttle::new(
            cfg.bind_max_failures,
            Duration::from_secs(cfg.bind_failure_window_seconds),
            Duration::from_secs(cfg.bind_lockout_seconds),
        );
        let mut dir = Directory {
            names: NameBatcher::new(store.clone(), HashMap::new()),
            store,
            cfg,
            dit,
            mapping,
            subschema,
            throttle,
            tls_available,
            observer: None,
        };
        let mut visible = HashMap::new();
        if let Some(v) = dir.visibility(ResourceKind::User) {
            visible.insert(ResourceKind::User, v);
        }
        dir.names = NameBatcher::new(dir.store.clone(), visible);
        Ok(dir)
    }

    pub fn dit(&self) -> &Dit {
        &self.dit
    }

    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    /// Reports every completed request to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Answers one request. Unbind and abandon answer nothing; StartTLS and unbind set
    /// flags on the session for the connection to act on after writing the replies.
    pub async fn handle(&self, session: &mut Session, msg: LdapMsg) -> Vec<LdapMsg> {
        let Some(observer) = &self.observer else {
            return self.answer(session, msg).await;
        };
        let op = op_name(&msg.op);
        let started = std::time::Instant::now();
        let replies = self.answer(session, msg).await;
        let code = replies.last().and_then(result_code).unwrap_or(0);
        observer(op, code, started.elapsed());
        replies
    }

    async fn answer(&self, session: &mut Session, msg: LdapMsg) -> Vec<LdapMsg> {
        let id = msg.msgid;
        let reply = |op: LdapOp| vec![LdapMsg::new(id, op)];
        let needs_reply = !matches!(msg.op, LdapOp::UnbindRequest | LdapOp::AbandonRequest(_));
        if needs_reply && let Some(oid) = unsupported_critical(&msg.ctrl) {
            let res = result(
                LdapResultCode::UnavailableCriticalExtension,
                "",
                format!("control {oid} is marked critical and this server does not support it"),
            );
            if let Some(op) = response_for(&msg.op, res) {
                return reply(op);
            }
        }
        match msg.op {
            LdapOp::BindRequest(req) => reply(LdapOp::BindResponse(self.bind(session, req).await)),
            LdapOp::UnbindRequest => {
                session.closing = true;
                Vec::new()
            }
            LdapOp::SearchRequest(req) => self.search(session, id, req, &msg.ctrl).await,
            LdapOp::CompareRequest(req) => {
                let res = match self.compare(session, &req).await {
                    Ok(r) => r,
                    Err(e) => error_result(&e),
                };
                reply(LdapOp::CompareResult(res))
            }
            LdapOp::AddRequest(_) => reply(LdapOp::AddResponse(read_only())),
            LdapOp::ModifyRequest(_) => reply(LdapOp::ModifyResponse(read_only())),
            LdapOp::DelRequest(_) => reply(LdapOp::DelResponse(read_only())),
            LdapOp::ModifyDNRequest(_) => reply(LdapOp::ModifyDNResponse(read_only())),
            // Requests are answered in order, so there is never one in flight to abandon.
            LdapOp::AbandonRequest(_) => Vec::new(),
            LdapOp::ExtendedRequest(req) => {
                reply(LdapOp::ExtendedResponse(self.extended(session, req)))
            }
            other => {
                tracing::debug!(op = ?other, "client sent a response PDU");
                session.closing = true;
                vec![notice_of_disconnection(
                    LdapResultCode::ProtocolError,
                    "a client may send requests only",
                )]
            }
        }
    }

    fn extended(&self, session: &mut Session, req: LdapExtendedRequest) -> LdapExtendedResponse {
        match req.name.as_str() {
            OID_WHOAMI => LdapExtendedResponse {
                res: success(),
                name: None,
                value: Some(
                    session
                        .principal
                        .dn()
                        .map(|dn| format!("dn:{dn}"))
                        .unwrap_or_default()
                        .into_bytes(),
                ),
            },
            OID_STARTTLS => {
                let res = if !self.tls_available {
                    result(
                        LdapResultCode::Unavailable,
                        "",
                        "StartTLS is not available: no certificate is configured",
                    )
                } else if session.tls {
                    result(
                        LdapResultCode::OperationsError,
                        "",
                        "TLS is already established on this connection",
                    )
                } else {
                    session.start_tls = true;
                    success()
                };
                LdapExtendedResponse {
                    res,
                    name: Some(OID_STARTTLS.into()),
                    value: None,
                }
            }
            other => LdapExtendedResponse {
                // RFC 4511 §4.12: an unrecognised request name is a protocolError.
                res: result(
                    LdapResultCode::ProtocolError,
                    "",
                    format!(
                        "extended operation {other} is not supported; supported: {OID_WHOAMI} (Who am I?){}",
                        if self.tls_available {
                            format!(", {OID_STARTTLS} (StartTLS)")
                        } else {
                            String::new()
                        }
                    ),
                ),
                name: None,
                value: None,
            },
        }
    }

    async fn audit_bind(
        &self,
        session: &Session,
        dn: &str,
        target: (&str, Option<String>),
        outcome: &str,
        reason: &str,
    ) {
        let entry = AuditEntry {
            actor: if dn.is_empty() {
                "ldap:anonymous".into()
            } else {
                format!("ldap:{dn}")
            },
            source: session.peer_ip(),
            layer: "ldap".into(),
            action: "ldap.bind".into(),
            resource_type: (!target.0.is_empty()).then(|| target.0.to_string()),
            resource_id: target.1,
            consumer: None,
            outcome: outcome.into(),
            detail: serde_json::json!({ "dn": dn, "reason": reason, "tls": session.tls }),
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(error = %e, "could not audit an LDAP bind");
        }
    }

    async fn bind(&self, session: &mut Session, req: LdapBindRequest) -> LdapBindResponse {
        let resp = |res: LdapResult| LdapBindResponse {
            res,
            saslcreds: None,
        };
        let dn = req.dn.trim().to_string();
        // RFC 4511 §4.2.1: any bind request leaves the connection anonymous until one succeeds.
        session.principal = Principal::Anonymous;
        let password = match &req.cred {
            LdapBindCred::Simple(p) => Some(p.clone()),
            _ => None,
        };
        // Refusals before any credential check, audited like every other bind.
        let refusal = match &password {
            _ if req.version != 3 => Some((
                LdapResultCode::ProtocolError,
                format!(
                    "LDAP version {} is not supported; use version 3",
                    req.version
                ),
            )),
            None => Some((
                LdapResultCode::AuthMethodNotSupported,
                "only simple binds are supported".to_string(),
            )),
            Some(p) if dn.is_empty() && !p.is_empty() => Some((
                LdapResultCode::InvalidCredentials,
                "a password needs a bind DN".to_string(),
            )),
            // RFC 4513 §5.1.2: unauthenticated binds are refused by default.
            Some(p) if !dn.is_empty() && p.is_empty() => Some((
                LdapResultCode::UnwillingToPerform,
                "unauthenticated bind (a DN without a password) is not allowed".to_string(),
            )),
            Some(_) => None,
        };
        if let Some((code, message)) = refusal {
            self.audit_bind(session, &dn, ("", None), "failure", &message)
                .await;
            return resp(result(code, "", message));
        }
        let password = password.unwrap_or_default();
        if dn.is_empty() {
            self.audit_bind(session, "", ("", None), "success", "anonymous")
                .await;
            return resp(success());
        }
        // A name that is not a DN names no account whatever the password: refused as such
        // (its syntax tells nothing about which accounts exist).
        let key = match Dn::parse(&dn) {
            Ok(d) => d.norm(),
            Err(e) => {
                self.audit_bind(session, &dn, ("", None), "failure", "invalid DN syntax")
                    .await;
                return resp(result(LdapResultCode::InvalidDNSyntax, "", e));
            }
        };
        let invalid = || {
            resp(result(
                LdapResultCode::InvalidCredentials,
                "",
                "invalid credentials",
            ))
        };
        if let Some(left) = self.throttle.locked(&key) {
            self.audit_bind(session, &dn, ("", None), "throttled", "too many failures")
                .await;
            return resp(result(
                LdapResultCode::InvalidCredentials,
                "",
                format!(
                    "too many failed binds for this DN; try again in {} s",
                    left.as_secs().max(1)
                ),
            ));
        }
        let outcome = match self.dit.locate(&dn) {
            Ok(Target::Leaf(Container::People, name)) => {
                match self.store.verify_user_password(&name, &password).await {
                    Ok(Some((user, true))) if !is_inactive(&user) => {
                        let dn = self.dit.leaf_dn(
                            Container::People,
                            user.doc
                                .get("userName")
                                .and_then(|v| v.as_str())
                                .unwrap_or(&name),
                        );
                        Ok(Some((
                            Principal::User {
                                dn,
                                id: user.id.clone(),
                            },
                            ("User", Some(user.id)),
                        )))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Ok(Target::Leaf(Container::Services, name)) => {
                match self.store.verify_ldap_account(&name, &password).await {
                    Ok(Some((acct, true))) => {
                        let dn = self.dit.leaf_dn(Container::Services, &acct.name);
                        Ok(Some((
                            Principal::Service {
                                dn,
                                name: acct.name.clone(),
                            },
                            ("LdapAccount", Some(acct.id)),
                        )))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            // No account by that name: the same argon2 work as a wrong password, so that
            // timing does not tell which accounts exist.
            _ => self.store.verify_no_account(&password).await.map(|_| None),
        };
        match outcome {
            Ok(Some((principal, target))) => {
                self.throttle.success(&key);
                self.audit_bind(session, &dn, target, "success", "").await;
                session.principal = principal;
                resp(success())
            }
            Ok(None) => {
                self.throttle.failure(&key);
                self.audit_bind(session, &dn, ("", None), "failure", "invalid credentials")
                    .await;
                invalid()
            }
            Err(e) => resp(error_result(&LdapError::Store(e))),
        }
    }

    fn may_read(&self, session: &Session) -> bool {
        self.cfg.allow_anonymous || session.principal != Principal::Anonymous
    }

    fn hide_inactive(&self) -> bool {
        self.cfg.inactive_users == InactiveUsers::Hidden
    }

    /// The phases of a search, or an error for a base that does not exist.
    async fn plan(
        &self,
        target: &Target,
        scope: &LdapSearchScope,
    ) -> Result<Vec<Phase>, LdapError> {
        use LdapSearchScope::*;
        let containers = || -> Vec<Entry> {
            Container::ALL
                .iter()
                .map(|c| container_entry(&self.dit, *c))
                .collect()
        };
        let everything_below = || {
            vec![
                Phase::Resources(ResourceKind::User, None),
                Phase::Resources(ResourceKind::Group, None),
                Phase::Services(None),
            ]
        };
        let kind_phase = |c: Container, name: Option<String>| match c {
            Container::People => Phase::Resources(ResourceKind::User, name),
            Container::Groups => Phase::Resources(ResourceKind::Group, name),
            Container::Services => Phase::Services(name),
        };
        Ok(match (target, scope) {
            (Target::RootDse, Base) => vec![Phase::Fixed(
                vec![root_dse(&self.dit, self.tls_available)],
                &[],
            )],
            (Target::RootDse, OneLevel) => vec![Phase::Fixed(vec![base_entry(&self.dit)], &[])],
            (Target::RootDse, Subtree | Children) => {
                let mut fixed = vec![base_entry(&self.dit)];
                fixed.extend(containers());
                let mut p = vec![Phase::Fixed(fixed, &[])];
                p.extend(everything_below());
                p
            }
            (Target::Subschema, Base | Subtree) => {
                vec![Phase::Fixed(
                    vec![self.subschema.clone()],
                    SUBSCHEMA_OPERATIONAL,
                )]
            }
            (Target::Subschema, _) => Vec::new(),
            (Target::Base, Base) => vec![Phase::Fixed(vec![base_entry(&self.dit)], &[])],
            (Target::Base, OneLevel) => vec![Phase::Fixed(containers(), &[])],
            (Target::Base, Subtree | Children) => {
                let mut fixed = if *scope == Subtree {
                    vec![base_entry(&self.dit)]
                } else {
                    Vec::new()
                };
                fixed.extend(containers());
                let mut p = vec![Phase::Fixed(fixed, &[])];
                p.extend(everything_below());
                p
            }
            (Target::Container(c), Base) => {
                vec![Phase::Fixed(vec![container_entry(&self.dit, *c)], &[])]
            }
            (Target::Container(c), OneLevel | Children) => vec![kind_phase(*c, None)],
            (Target::Container(c), Subtree) => vec![
                Phase::Fixed(vec![container_entry(&self.dit, *c)], &[]),
                kind_phase(*c, None),
            ],
            (Target::Leaf(c, name), _) => {
                if !self.leaf_exists(*c, name).await? {
                    return Err(LdapError::no_such_object(
                        format!("no entry {}", self.dit.leaf_dn(*c, name)),
                        self.dit.container_dn(*c),
                    ));
                }
                match scope {
                    Base | Subtree => vec![kind_phase(*c, Some(name.clone()))],
                    _ => Vec::new(),
                }
            }
        })
    }

    async fn leaf_exists(&self, c: Container, name: &str) -> Result<bool, LdapError> {
        Ok(match c {
            Container::Services => self
                .store
                .list_ldap_accounts(false)
                .await?
                .iter()
                .any(|a| a.name.eq_ignore_ascii_case(name)),
            Container::People | Container::Groups => {
                let kind = if c == Container::People {
                    ResourceKind::User
                } else {
                    ResourceKind::Group
                };
                let filter = self.name_filter(kind, name);
                self.store.count(kind, Some(&filter)).await? > 0
            }
        })
    }

    /// `name eq X` (with the resource type, which leads the name index), plus the
    /// inactive-user rule.
    fn name_filter(&self, kind: ResourceKind, name: &str) -> ResolvedFilter {
        let f = ResolvedFilter::And(vec![
            ResolvedFilter::Compare(
                AttrTarget::ResourceType,
                CompareOp::Eq,
                ResolvedValue::Text(kind.as_str().to_string()),
            ),
            ResolvedFilter::Compare(
                AttrTarget::Name,
                CompareOp::Eq,
                ResolvedValue::Text(store::model::name_key(name)),
            ),
        ]);
        self.with_visibility(kind, f)
    }

    /// The condition that hides inactive users, when they are hidden.
    fn visibility(&self, kind: ResourceKind) -> Option<ResolvedFilter> {
        if kind != ResourceKind::User || !self.hide_inactive() {
            return None;
        }
        let inactive = store::filter::resolve(
            self.store.registry(),
            ResourceKind::User,
            &store::filter::Filter::Compare(
                store::filter::AttrPath::simple("active"),
                CompareOp::Eq,
                store::filter::Literal::Bool(false),
            ),
        )
        .expect("active is a core User attribute");
        Some(ResolvedFilter::Not(Box::new(inactive)))
    }

    fn with_visibility(&self, kind: ResourceKind, f: ResolvedFilter) -> ResolvedFilter {
        match (self.visibility(kind), f) {
            (None, f) | (_, f @ ResolvedFilter::Const(false)) => f,
            (Some(v), ResolvedFilter::Const(true)) => v,
            (Some(v), f) => ResolvedFilter::all([f, v]),
        }
    }

    /// Looks up the DNs a filter mentions.
    async fn resolve_refs(&self, filter: &LdapFilter) -> Result<DnRefs, LdapError> {
        let mut wanted: Vec<DnRef> = Vec::new();
        dn_refs(filter, &self.mapping, &mut wanted);
        let mut refs = DnRefs::default();
        if wanted.is_empty() {
            return Ok(refs);
        }
        let mut users = Vec::new();
        let mut groups = Vec::new();
        let mut located = Vec::new();
        for w in &wanted {
            let Ok(dn) = Dn::parse(&w.dn) else { continue };
            match self.dit.locate(&w.dn) {
                Ok(Target::Leaf(Container::People, n)) => {
                    users.push(n.clone());
                    located.push((dn.norm(), ResourceKind::User, n, w.in_chain));
                }
                Ok(Target::Leaf(Container::Groups, n)) => {
                    groups.push(n.clone());
                    located.push((dn.norm(), ResourceKind::Group, n, w.in_chain));
                }
                _ => {}
            }
        }
        let user_ids = if users.is_empty() {
            Default::default()
        } else {
            self.store.ids_by_name(ResourceKind::User, &users).await?
        };
        let group_ids = if groups.is_empty() {
            Default::default()
        } else {
            self.store.ids_by_name(ResourceKind::Group, &groups).await?
        };
        for (norm, kind, name, in_chain) in located {
            let ids = if kind == ResourceKind::User {
                &user_ids
            } else {
                &group_ids
            };
            if let Some(id) = ids.get(&store::model::name_key(&name)) {
                if in_chain && !refs.containing.contains_key(&norm) {
                    refs.containing
                        .insert(norm.clone(), self.store.groups_containing(id).await?);
                }
                refs.ids.insert(norm, (kind, id.clone()));
            }
        }
        Ok(refs)
    }

    /// Runs the phases from `start` until `limit` entries are found (None: all).
    async fn collect(
        &self,
        phases: &[Phase],
        filter: &LdapFilter,
        refs: &DnRefs,
        sel: &Selection,
        start: Position,
        limit: Option<usize>,
    ) -> Result<Found, LdapError> {
        let mut out: Vec<Entry> = Vec::new();
        let mut pos = start;
        while pos.phase < phases.len() {
            let room = limit.map(|l| l.saturating_sub(out.len()));
            if room == Some(0) {
                return Ok(Found {
                    entries: out,
                    next: Some(pos),
                });
            }
            match &phases[pos.phase] {
                Phase::Fixed(entries, operational) => {
                    let matched: Vec<&Entry> = entries
                        .iter()
                        .filter(|e| matches_entry(filter, e) == Some(true))
                        .skip(pos.offset)
                        .collect();
                    let take = room.unwrap_or(usize::MAX).min(matched.len());
                    for e in &matched[..take] {
                        let e = (*e).clone();
                        out.push(if sel.is_wildcard() && operational.is_empty() {
                            e
                        } else {
                            e.select(sel, operational)
                        });
                    }
                    if take < matched.len() {
                        pos.offset += take;
                        continue;
                    }
                }
                Phase::Services(name) => {
                    if service_filter_may_match(filter) {
                        let accounts = self.store.list_ldap_accounts(false).await?;
                        let matched: Vec<Entry> = accounts
                            .iter()
                            .filter(|a| {
                                name.as_ref().is_none_or(|n| a.name.eq_ignore_ascii_case(n))
                            })
                            .map(|a| service_entry(&self.dit, a))
                            .filter(|e| matches_entry(filter, e) == Some(true))
                            .skip(pos.offset)
                            .collect();
                        let take = room.unwrap_or(usize::MAX).min(matched.len());
                        out.extend(
                            matched
                                .into_iter()
                                .take(take)
                                .map(|e| e.select(sel, SERVICE_OPERATIONAL)),
                        );
                        if let Some(r) = room
                            && take == r
                        {
                            // Possibly more; the next page will tell.
                            pos.offset += take;
                            continue;
                        }
                    }
                }
                Phase::Resources(kind, name) => {
                    let t = Translator {
                        reg: self.store.registry(),
                        mapping: &self.mapping,
                        refs,
                        kind: *kind,
                        flag_inactive: !self.hide_inactive(),
                    };
                    let raw = t.translate(filter);
                    let load = Load {
                        members: *kind == ResourceKind::Group
                            && self.wants_source(*kind, sel, |s| {
                                matches!(s, crate::dit::Source::Member)
                            }),
                        groups: *kind == ResourceKind::User
                            && self.wants_source(*kind, sel, |s| {
                                matches!(s, crate::dit::Source::MemberOf)
                            }),
                    };
                    // One entry by its name: answered together with concurrent lookups.
                    let by_name = match (&raw, name) {
                        (ResolvedFilter::Const(true), Some(n)) => Some(n.clone()),
                        (f, None) => name_equality(f),
                        _ => None,
                    };
                    if let (Some(n), None) = (by_name, pos.after_rid) {
                        if let Some(r) = self.names.get(*kind, &n, load).await? {
                            out.extend(self.render(&[r], sel).await?);
                        }
                        pos = Position {
                            phase: pos.phase + 1,
                            after_rid: None,
                            offset: 0,
                        };
                        continue;
                    }
                    let mut rf = raw;
                    if let Some(n) = name {
                        rf = match rf {
                            ResolvedFilter::Const(false) => rf,
                            ResolvedFilter::Const(true) => self.name_filter(*kind, n),
                            other => ResolvedFilter::all([self.name_filter(*kind, n), other]),
                        };
                    } else {
                        rf = self.with_visibility(*kind, rf);
                    }
                    if rf != ResolvedFilter::Const(false) {
                        let filter = (rf != ResolvedFilter::Const(true)).then_some(rf);
                        loop {
                            let room = limit.map(|l| l.saturating_sub(out.len()));
                            let count = room.map_or(FETCH_CHUNK, |r| (r as u64).min(FETCH_CHUNK));
                            if count == 0 {
                                return Ok(Found {
                                    entries: out,
                                    next: Some(pos),
                                });
                            }
                            // One row more than needed tells whether another page exists.
                            let mut rows = self
                                .store
                                .scan(*kind, filter.as_ref(), pos.after_rid, count + 1, load)
                                .await?;
                            let more = rows.len() as u64 > count;
                            rows.truncate(count as usize);
                            pos.after_rid = rows.last().map(|r| r.rid).or(pos.after_rid);
                            out.extend(self.render(&rows, sel).await?);
                            if !more {
                                break;
                            }
                        }
                    }
                }
            }
            pos = Position {
                phase: pos.phase + 1,
                after_rid: None,
                offset: 0,
            };
        }
        Ok(Found {
            entries: out,
            next: None,
        })
    }

    fn wants_source(
        &self,
        kind: ResourceKind,
        sel: &Selection,
        f: impl Fn(&crate::dit::Source) -> bool,
    ) -> bool {
        self.mapping
            .table(kind)
            .iter()
            .any(|a| f(&a.source) && sel.wants_map(a))
    }

    async fn render(
        &self,
        resources: &[StoredResource],
        sel: &Selection,
    ) -> Result<Vec<Entry>, LdapError> {
        let ids: Vec<String> = resources
            .iter()
            .flat_map(|r| referenced_ids(&self.mapping, r, sel))
            .collect();
        let names = if ids.is_empty() {
            Names::default()
        } else {
            Names(self.store.names_by_id(&ids).await?)
        };
        Ok(resources
            .iter()
            .map(|r| resource_entry(&self.dit, &self.mapping, r, &names, sel))
            .collect())
    }

    async fn search(
        &self,
        session: &mut Session,
        id: i32,
        req: LdapSearchRequest,
        ctrl: &[LdapControl],
    ) -> Vec<LdapMsg> {
        let done = |res: LdapResult, ctrl: Vec<LdapControl>| {
            LdapMsg::new_with_ctrls(id, LdapOp::SearchResultDone(res), ctrl)
        };
        let paged = ctrl.iter().find_map(|c| match c {
            LdapControl::SimplePagedResults { size, cookie } => Some((*size, cookie.clone())),
            _ => None,
        });
        let is_root_dse = req.base.trim().is_empty() && req.scope == LdapSearchScope::Base;
        if !is_root_dse && !self.may_read(session) {
            return vec![done(
                result(
                    LdapResultCode::InsufficentAccessRights,
                    "",
                    "anonymous clients may read the root DSE only; bind first",
                ),
                Vec::new(),
            )];
        }
        let time_limit =
            effective_time_limit(req.timelimit.max(0) as u64, self.cfg.max_time_limit_seconds);
        let is_paged = paged.is_some();
        let work = self.search_inner(session, id, &req, paged);
        let outcome = match time_limit {
            Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), work).await {
                Ok(r) => r,
                Err(_) => Err(LdapError::new(
                    LdapResultCode::TimeLimitExceeded,
                    format!("the search ran longer than {secs} s"),
                )),
            },
            None => work.await,
        };
        match outcome {
            Ok(msgs) => msgs,
            Err(e) => {
                let ctrls = match is_paged {
                    true => vec![LdapControl::SimplePagedResults {
                        size: 0,
                        cookie: Vec::new(),
                    }],
                    false => Vec::new(),
                };
                vec![done(error_result(&e), ctrls)]
            }
        }
    }

    async fn search_inner(
        &self,
        session: &mut Session,
        id: i32,
        req: &LdapSearchRequest,
        paged: Option<(i64, Vec<u8>)>,
    ) -> Result<Vec<LdapMsg>, LdapError> {
        // Before anything walks the filter (the decoder has already bounded its nesting).
        let terms = filter_terms(&req.filter);
        if terms > self.cfg.max_filter_terms {
            return Err(LdapError::new(
                LdapResultCode::AdminLimitExceeded,
                format!(
                    "the filter has {terms} terms; this server accepts at most {} (ldap.max_filter_terms): split the search",
                    self.cfg.max_filter_terms
                ),
            ));
        }
        let target = self.dit.locate(&req.base)?;
        let phases = self.plan(&target, &req.scope).await?;
        let refs = self.resolve_refs(&req.filter).await?;
        let sel = Selection::new(&req.attrs, req.typesonly);
        let entry_msg =
            |e: Entry| LdapMsg::new(id, LdapOp::SearchResultEntry(e.into_ldap(req.typesonly)));
        let done = |res: LdapResult, ctrl: Vec<LdapControl>| {
            LdapMsg::new_with_ctrls(id, LdapOp::SearchResultDone(res), ctrl)
        };
        let client_limit = req.sizelimit.max(0) as usize;
        if let Some((size, cookie)) = paged {
            let fingerprint = format!(
                "{}|{:?}|{:?}|{:?}|{}",
                Dn::parse(&req.base).map(|d| d.norm()).unwrap_or_default(),
                req.scope,
                req.filter,
                req.attrs,
                req.typesonly
            );
            let start = if cookie.is_empty() {
                Position::default()
            } else {
                match session.take_paged(&cookie) {
                    Some(p) if p.fingerprint == fingerprint => p.position,
                    Some(_) => {
                        return Err(LdapError::unwilling(
                            "the paged-results cookie belongs to a different search: repeat the same base, scope, filter and attributes",
                        ));
                    }
                    None => {
                        return Err(LdapError::unwilling(
                            "unknown paged-results cookie (it was already used, abandoned, or issued on another connection)",
                        ));
                    }
                }
            };
            if size <= 0 {
                // RFC 2696 §3: a size of zero abandons the paged search.
                return Ok(vec![done(
                    success(),
                    vec![LdapControl::SimplePagedResults {
                        size: 0,
                        cookie: Vec::new(),
                    }],
                )]);
            }
            let mut page = (size as u64).min(self.cfg.max_page_size) as usize;
            if client_limit > 0 {
                page = page.min(client_limit);
            }
            let found = self
                .collect(&phases, &req.filter, &refs, &sel, start, Some(page))
                .await?;
            let cookie = match found.next {
                Some(p) => session.save_paged(fingerprint, p),
                None => Vec::new(),
            };
            let mut msgs: Vec<LdapMsg> = found.entries.into_iter().map(entry_msg).collect();
            msgs.push(done(
                success(),
                vec![LdapControl::SimplePagedResults { size: 0, cookie }],
            ));
            return Ok(msgs);
        }
        let server_limit = self.cfg.max_size_limit as usize;
        let limit = match (client_limit, server_limit) {
            (0, 0) => None,
            (0, m) | (m, 0) => Some(m),
            (a, b) => Some(a.min(b)),
        };
        let found = self
            .collect(
                &phases,
                &req.filter,
                &refs,
                &sel,
                Position::default(),
                limit.map(|l| l + 1),
            )
            .await?;
        let exceeded = limit.is_some_and(|l| found.entries.len() > l);
        let mut msgs: Vec<LdapMsg> = found
            .entries
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(entry_msg)
            .collect();
        let res = if exceeded {
            let l = limit.unwrap_or_default();
            result(
                LdapResultCode::SizeLimitExceeded,
                "",
                if server_limit > 0 && (client_limit == 0 || server_limit < client_limit) {
                    format!(
                        "more than the server's limit of {l} entries match; narrow the filter or use the paged results control"
                    )
                } else {
                    format!("more than the requested {l} entries match")
                },
            )
        } else {
            success()
        };
        msgs.push(done(res, Vec::new()));
        Ok(msgs)
    }

    async fn compare(
        &self,
        session: &Session,
        req: &LdapCompareRequest,
    ) -> Result<LdapResult, LdapError> {
        if !self.may_read(session) {
            return Err(LdapError::new(
                LdapResultCode::InsufficentAccessRights,
                "anonymous clients may read the root DSE only; bind first",
            ));
        }
        let target = self.dit.locate(&req.dn)?;
        let phases = self.plan(&target, &LdapSearchScope::Base).await?;
        let refs = DnRefs::default();
        let all = Selection::everything();
        let found = self
            .collect(
                &phases,
                &LdapFilter::Present("objectClass".into()),
                &refs,
                &all,
                Position::default(),
                Some(1),
            )
            .await?;
        let Some(entry) = found.entries.into_iter().next() else {
            return Err(LdapError::no_such_object(
                format!("no entry {:?}", req.dn),
                "",
            ));
        };
        let attr = req.atype.split(';').next().unwrap_or(&req.atype);
        let asserted = String::from_utf8_lossy(&req.val).to_string();
        let known = attr.eq_ignore_ascii_case("objectClass")
            || self.mapping.get(ResourceKind::User, attr).is_some()
            || self.mapping.get(ResourceKind::Group, attr).is_some()
            || entry.get(attr).is_some();
        let Some(values) = entry.get(attr) else {
            return Err(if known {
                LdapError::new(
                    LdapResultCode::NoSuchAttribute,
                    format!("{} has no {attr}", entry.dn),
                )
            } else {
                LdapError::new(
                    LdapResultCode::UndefinedAttributeType,
                    format!("{attr} is not an attribute type of this directory"),
                )
            });
        };
        let is_dn = self
            .mapping
            .users
            .iter()
            .chain(&self.mapping.groups)
            .any(|a| a.syntax == Syntax::Dn && a.name.eq_ignore_ascii_case(attr));
        let norm = |v: &str| -> String {
            if is_dn {
                Dn::parse(v)
                    .map(|d| d.norm())
                    .unwrap_or_else(|_| v.to_lowercase())
            } else {
                v.to_lowercase()
            }
        };
        let want = norm(&asserted);
        let hit = values.iter().any(|v| norm(v) == want);
        Ok(result(
            if hit {
                LdapResultCode::CompareTrue
            } else {
                LdapResultCode::CompareFalse
            },
            "",
            "",
        ))
    }
}

/// `name eq V` (as the filter translation writes it, with the resource type): V.
fn name_equality(f: &ResolvedFilter) -> Option<String> {
    let ResolvedFilter::And(parts) = f else {
        return None;
    };
    match parts.as_slice() {
        [
            ResolvedFilter::Compare(AttrTarget::ResourceType, CompareOp::Eq, _),
            ResolvedFilter::Compare(AttrTarget::Name, CompareOp::Eq, ResolvedValue::Text(v)),
        ] => Some(v.clone()),
        _ => None,
    }
}

fn op_name(op: &LdapOp) -> &'static str {
    match op {
        LdapOp::BindRequest(_) => "bind",
        LdapOp::UnbindRequest => "unbind",
        LdapOp::SearchRequest(_) => "search",
        LdapOp::CompareRequest(_) => "compare",
        LdapOp::ExtendedRequest(_) => "extended",
        LdapOp::AddRequest(_) => "add",
        LdapOp::ModifyRequest(_) => "modify",
        LdapOp::DelRequest(_) => "delete",
        LdapOp::ModifyDNRequest(_) => "modrdn",
        LdapOp::AbandonRequest(_) => "abandon",
        _ => "other",
    }
}

fn result_code(msg: &LdapMsg) -> Option<u32> {
    let code = match &msg.op {
        LdapOp::BindResponse(r) => &r.res.code,
        LdapOp::ExtendedResponse(r) => &r.res.code,
        LdapOp::SearchResultDone(r)
        | LdapOp::CompareResult(r)
        | LdapOp::AddResponse(r)
        | LdapOp::ModifyResponse(r)
        | LdapOp::DelResponse(r)
        | LdapOp::ModifyDNResponse(r) => &r.code,
        _ => return None,
    };
    Some(code.clone() as i64 as u32)
}

fn read_only() -> LdapResult {
    result(
        LdapResultCode::UnwillingToPerform,
        "",
        "this directory is read-only: change users and groups through the SCIM API",
    )
}

/// The response PDU that answers `op` with `res`; None for requests without a response.
fn response_for(op: &LdapOp, res: LdapResult) -> Option<LdapOp> {
    Some(match op {
        LdapOp::BindRequest(_) => LdapOp::BindResponse(LdapBindResponse {
            res,
            saslcreds: None,
        }),
        LdapOp::SearchRequest(_) => LdapOp::SearchResultDone(res),
        LdapOp::ModifyRequest(_) => LdapOp::ModifyResponse(res),
        LdapOp::AddRequest(_) => LdapOp::AddResponse(res),
        LdapOp::DelRequest(_) => LdapOp::DelResponse(res),
        LdapOp::ModifyDNRequest(_) => LdapOp::ModifyDNResponse(res),
        LdapOp::CompareRequest(_) => LdapOp::CompareResult(res),
        LdapOp::ExtendedRequest(_) => LdapOp::ExtendedResponse(LdapExtendedResponse {
            res,
            name: None,
            value: None,
        }),
        _ => return None,
    })
}

/// Whether a filter can be TRUE for some service-account entry, judged from the attributes
/// those entries have; lets searches skip reading the accounts when it cannot.
fn service_filter_may_match(f: &LdapFilter) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum T {
        True,
        False,
        Undef,
        Maybe,
    }
    fn eval(f: &LdapFilter) -> T {
        const ATTRS: &[&str] = &[
            "objectclass",
            "cn",
            "description",
            "entryuuid",
            "createtimestamp",
        ];
        let leaf = |a: &str| {
            let a = a.split(';').next().unwrap_or(a).to_ascii_lowercase();
            if ATTRS.contains(&a.as_str()) {
                T::Maybe
            } else {
                T::False
            }
        };
        match f {
            LdapFilter::And(xs) => {
                let v: Vec<T> = xs.iter().map(eval).collect();
                if v.contains(&T::False) {
                    T::False
                } else if v.iter().all(|x| *x == T::True) {
                    T::True
                } else if v.contains(&T::Maybe) {
                    T::Maybe
                } else {
                    T::Undef
                }
            }
            LdapFilter::Or(xs) => {
                let v: Vec<T> = xs.iter().map(eval).collect();
                if v.contains(&T::True) {
                    T::True
                } else if v.iter().all(|x| *x == T::False) {
                    T::False
                } else if v.contains(&T::Maybe) {
                    T::Maybe
                } else {
                    T::Undef
                }
            }
            LdapFilter::Not(x) => match eval(x) {
                T::True => T::False,
                T::False => T::True,
                other => other,
            },
            LdapFilter::Present(a) if a.eq_ignore_ascii_case("objectClass") => T::True,
            LdapFilter::Equality(a, _)
            | LdapFilter::Approx(a, _)
            | LdapFilter::GreaterOrEqual(a, _)
            | LdapFilter::LessOrEqual(a, _)
            | LdapFilter::Substring(a, _)
            | LdapFilter::Present(a) => leaf(a),
            LdapFilter::Extensible(m) => m.type_.as_deref().map_or(T::Maybe, |t| match leaf(t) {
                T::False => T::Undef,
                x => x,
            }),
        }
    }
    matches!(eval(f), T::True | T::Maybe)
}

/// The time limit a search runs under, in seconds: the client's (0: none asked), capped by
/// the server's maximum (0: no maximum); `None` when neither sets one.
fn effective_time_limit(requested: u64, server_max: u64) -> Option<u64> {
    match (requested, server_max) {
        (0, 0) => None,
        (0, m) | (m, 0) => Some(m),
        (a, b) => Some(a.min(b)),
    }
}

#[cfg(test)]
mod time_limit_tests {
    #[test]
    fn the_server_maximum_caps_the_client_time_limit() {
        assert_eq!(super::effective_time_limit(0, 0), None);
        assert_eq!(super::effective_time_limit(0, 60), Some(60));
        assert_eq!(super::effective_time_limit(5, 60), Some(5));
        assert_eq!(super::effective_time_limit(600, 60), Some(60));
        assert_eq!(super::effective_time_limit(7, 0), Some(7));
    }
}
