//! A small Prometheus registry (text exposition format 0.0.4): counters, gauges and
//! histograms in labelled families, and hooks that refresh gauges at scrape time.
//!
//! [`Metrics`] holds the hub's own families and the typed calls each layer makes:
//! - HTTP (recorded by the `ops::record_metrics` middleware): `observe_http`.
//! - LDAP: `observe_ldap(operation, result_code, elapsed)` per completed operation.
//! - Outbound delivery: `observe_delivery(consumer, outcome, elapsed)` per attempt,
//!   `delivery_failed(consumer, reason)` per failed attempt, and the backlog per consumer,
//!   either pushed with `set_delivery_backlog` or refreshed by a hook registered with
//!   `registry().on_scrape(...)` that queries the queue when `/metrics` is read.
//!
//! Further families: `registry().counter(...)`, `.gauge(...)`, `.histogram(...)`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;

/// Latency buckets in seconds, from a fast index lookup to a slow outbound call.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An f64 updated atomically (stored as its bits).
#[derive(Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn add(&self, d: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + d).to_bits())
            });
    }
}

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicF64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.set(v);
    }
    pub fn add(&self, d: f64) {
        self.0.add(d);
    }
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// A distribution of observations in fixed buckets (seconds for durations).
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; made cumulative when rendered.
    buckets: Vec<AtomicU64>,
    sum: AtomicF64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicF64::default(),
            count: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum.add(v);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One metric kind's constructor and rendering.
pub trait Metric: Send + Sync + 'static {
    const TYPE: &'static str;
    fn make(buckets: &'static [f64]) -> Self;
    fn render(&self, name: &str, labels: &str, out: &mut String);
}

impl Metric for Counter {
    const TYPE: &'static str = "counter";
    fn make(_: &'static [f64]) -> Self {
        Counter::default()
    }
    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let _ = writeln!(out, "{name}{} {}", braces(labels), self.get());
    }
}

impl Metric for Gauge {
    const TYPE: &'static str = "gauge";
    fn make(_: &'static [f64]) -> Self {
        Gauge::default()
    }
    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let _ = writeln!(out, "{name}{} {}", braces(labels), fmt_f64(self.get()));
    }
}

impl Metric for Histogram {
    const TYPE: &'static str = "histogram";
    fn make(buckets: &'static [f64]) -> Self {
        Histogram::new(buckets)
    }
    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                fmt_f64(*b)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            fmt_f64(self.sum.get())
        );
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        v.to_string()
    }
}

/// Label values escaped as the exposition format requires.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A metric family: one metric per combination of label values.
pub struct Family<M: Metric> {
    name: String,
    help: String,
    labels: Vec<String>,
    buckets: &'static [f64],
    children: RwLock<BTreeMap<Vec<String>, Arc<M>>>,
}

impl<M: Metric> Family<M> {
    /// The metric for these label values (in the order the family declared its labels).
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: label values do not match the label names",
            self.name
        );
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        if let Some(m) = self.children.read().expect("metrics lock").get(&key) {
            return m.clone();
        }
        self.children
            .write()
            .expect("metrics lock")
            .entry(key)
            .or_insert_with(|| Arc::new(M::make(self.buckets)))
            .clone()
    }

    /// Forgets every labelled metric, e.g. before a scrape hook sets the current gauges of a
    /// set that shrinks (consumers removed).
    pub fn clear(&self) {
        self.children.write().expect("metrics lock").clear();
    }

    /// Forgets the metrics whose labels match `values` where given.
    pub fn remove_matching(&self, values: &[Option<&str>]) {
        self.children.write().expect("metrics lock").retain(|k, _| {
            !k.iter()
                .zip(values)
                .all(|(k, v)| v.is_none_or(|v| v == k.as_str()))
        });
    }
}

trait Render: Send + Sync {
    fn render(&self, out: &mut String);
}

impl<M: Metric> Render for Family<M> {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(&self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, M::TYPE);
        for (values, m) in self.children.read().expect("metrics lock").iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(values)
                .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
                .collect();
            m.render(&self.name, &labels.join(","), out);
        }
    }
}

type ScrapeHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Families in registration order, and the hooks run before each scrape.
#[derive(Default)]
pub struct Registry {
    families: RwLock<Vec<(String, Arc<dyn Render>)>>,
    hooks: RwLock<Vec<ScrapeHook>>,
}

impl Registry {
    fn register<M: Metric>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &'static [f64],
    ) -> Arc<Family<M>> {
        assert!(valid_name(name), "invalid metric name {name:?}");
        assert!(
            labels.iter().all(|l| valid_name(l) && *l != "le"),
            "{name}: invalid label names {labels:?}"
        );
        let family = Arc::new(Family::<M> {
            name: name.into(),
            help: help.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            buckets,
            children: RwLock::new(BTreeMap::new()),
        });
        if labels.is_empty() {
            // Unlabelled metrics are exposed (as 0) from the start.
            family.with(&[]);
        }
        let mut families = self.families.write().expect("metrics lock");
        if families.iter().any(|(n, _)| n == name) {
            // Released first so that the registry stays usable after the panic.
            drop(families);
            panic!("metric {name} registered twice");
        }
        families.push((name.into(), family.clone()));
        family
    }

    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Arc<Family<Counter>> {
        self.register(name, help, labels, &[])
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Arc<Family<Gauge>> {
        self.register(name, help, labels, &[])
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &'static [f64],
    ) -> Arc<Family<Histogram>> {
        self.register(name, help, labels, buckets)
    }

    /// Runs `hook` before every scrape, e.g. to read a queue's backlog into a gauge.
    pub fn on_scrape(&self, hook: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static) {
        self.hooks
            .write()
            .expect("metrics lock")
            .push(Arc::new(hook));
    }

    /// Runs the scrape hooks, then renders every family.
    pub async fn scrape(&self) -> String {
        let hooks: Vec<ScrapeHook> = self.hooks.read().expect("metrics lock").clone();
        for h in hooks {
            h().await;
        }
        self.render()
    }

    /// The text exposition of every family, without running hooks.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (_, f) in self.families.read().expect("metrics lock").iter() {
            f.render(&mut out);
        }
        out
    }
}

/// The content type of [`Registry::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The hub's metrics.
pub struct Metrics {
    registry: Registry,
    http_requests: Arc<Family<Counter>>,
    http_duration: Arc<Family<Histogram>>,
    http_in_flight: Arc<Family<Gauge>>,
    ldap_operations: Arc<Family<Counter>>,
    ldap_duration: Arc<Family<Histogram>>,
    deliveries: Arc<Family<Counter>>,
    delivery_failures: Arc<Family<Counter>>,
    delivery_duration: Arc<Family<Histogram>>,
    delivery_backlog: Arc<Family<Gauge>>,
    db_up: Arc<Family<Gauge>>,
    db_pool: Arc<Family<Gauge>>,
    db_pool_max: Arc<Family<Gauge>>,
    change_feed_seq: Arc<Family<Gauge>>,
    audit_seq: Arc<Family<Gauge>>,
    audit_pruned: Arc<Family<Counter>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::default();
        let info = r.gauge(
            "scimhub_build_info",
            "Version of the running scimhub (value 1).",
            &["version"],
        );
        info.with(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        let started = r.gauge(
            "scimhub_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            &[],
        );
        started.with(&[]).set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        Metrics {
            http_requests: r.counter(
                "scimhub_http_requests_total",
                "HTTP requests served, by method, route pattern and status code.",
                &["method", "route", "status"],
            ),
            http_duration: r.histogram(
                "scimhub_http_request_duration_seconds",
                "Time to produce the HTTP response (to its first byte), by method, route pattern and status code.",
                &["method", "route", "status"],
                DURATION_BUCKETS,
            ),
            http_in_flight: r.gauge(
                "scimhub_http_requests_in_flight",
                "HTTP requests being handled.",
                &[],
            ),
            ldap_operations: r.counter(
                "scimhub_ldap_operations_total",
                "LDAP operations completed, by operation and LDAP result code.",
                &["operation", "result"],
            ),
            ldap_duration: r.histogram(
                "scimhub_ldap_operation_duration_seconds",
                "Time to complete an LDAP operation, by operation.",
                &["operation"],
                DURATION_BUCKETS,
            ),
            deliveries: r.counter(
                "scimhub_outbound_delivery_attempts_total",
                "Outbound SCIM delivery attempts, by consumer and outcome (success, retry, dead, ...).",
                &["consumer", "outcome"],
            ),
            delivery_failures: r.counter(
                "scimhub_outbound_delivery_failures_total",
                "Failed outbound SCIM delivery attempts, by consumer and reason.",
                &["consumer", "reason"],
            ),
            delivery_duration: r.histogram(
                "scimhub_outbound_delivery_duration_seconds",
                "Time of one outbound SCIM delivery attempt, by consumer.",
                &["consumer"],
                DURATION_BUCKETS,
            ),
            delivery_backlog: r.gauge(
                "scimhub_outbound_backlog",
                "Deliveries waiting to be sent, by consumer.",
                &["consumer"],
            ),
            db_up: r.gauge(
                "scimhub_database_up",
                "1 when the database answered the last scrape's queries, else 0.",
                &[],
            ),
            db_pool: r.gauge(
                "scimhub_database_pool_connections",
                "Database pool connections, by state (idle, in_use).",
                &["state"],
            ),
            db_pool_max: r.gauge(
                "scimhub_database_pool_max_connections",
                "Configured size limit of the database pool.",
                &[],
            ),
            change_feed_seq: r.gauge(
                "scimhub_change_feed_last_seq",
                "Sequence number of the newest change-feed row.",
                &[],
            ),
            audit_seq: r.gauge(
                "scimhub_audit_last_seq",
                "Sequence number of the newest audit row.",
                &[],
            ),
            audit_pruned: r.counter(
                "scimhub_audit_pruned_rows_total",
                "Audit rows deleted by the retention policy since start.",
                &[],
            ),
            registry: r,
        }
    }

    /// For registering further families and scrape hooks.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with(&labels).inc();
        self.http_duration.with(&labels).observe_duration(elapsed);
    }

    pub(crate) fn in_flight(&self) -> Arc<Gauge> {
        self.http_in_flight.with(&[])
    }

    /// One completed LDAP operation (`bind`, `search`, `compare`, `extended`, ...) and its
    /// LDAP result code (0 success, 49 invalidCredentials, ...).
    pub fn observe_ldap(&self, operation: &str, result_code: u32, elapsed: Duration) {
        let code = result_code.to_string();
        self.ldap_operations.with(&[operation, &code]).inc();
        self.ldap_duration
            .with(&[operation])
            .observe_duration(elapsed);
    }

    /// One outbound delivery attempt to `consumer`, with its outcome (`success`, `retry`,
    /// `dead`, ...) and how long the consumer took.
    pub fn observe_delivery(&self, consumer: &str, outcome: &str, elapsed: Duration) {
        self.deliveries.with(&[consumer, outcome]).inc();
        self.delivery_duration
            .with(&[consumer])
            .observe_duration(elapsed);
    }

    /// A failed attempt, by reason (`http_5xx`, `http_4xx`, `http_429`, `timeout`,
    /// `connect`, ...).
    pub fn delivery_failed(&self, consumer: &str, reason: &str) {
        self.delivery_failures.with(&[consumer, reason]).inc();
    }

    pub fn set_delivery_backlog(&self, consumer: &str, waiting: u64) {
        self.delivery_backlog.with(&[consumer]).set(waiting as f64);
    }

    /// Forgets every consumer's backlog (before setting the current ones, when consumers may
    /// have been removed).
    pub fn clear_delivery_backlog(&self) {
        self.delivery_backlog.clear();
    }

    pub fn audit_pruned(&self, rows: u64) {
        self.audit_pruned.with(&[]).inc_by(rows);
    }

    /// Reads the database gauges (pool, feed positions); cheap enough for every scrape.
    pub async fn refresh_store(&self, store: &store::Store) {
        let pool = store.pool_stats();
        self.db_pool.with(&["idle"]).set(f64::from(pool.idle));
        self.db_pool
            .with(&["in_use"])
            .set(f64::from(pool.size.saturating_sub(pool.idle)));
        self.db_pool_max.with(&[]).set(f64::from(pool.max));
        match store.feed_positions().await {
            Ok((changes, audit)) => {
                self.change_feed_seq.with(&[]).set(changes as f64);
                self.audit_seq.with(&[]).set(audit as f64);
                self.db_up.with(&[]).set(1.0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: the database did not answer");
                self.db_up.with(&[]).set(0.0);
            }
        }
    }

    /// Scrape hooks, then the text exposition.
    pub async fn scrape(&self, store: &store::Store) -> String {
        self.refresh_store(store).await;
        self.registry.scrape().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let r = Registry::default();
        let c = r.counter("t_requests_total", "Requests.\nSecond line.", &["path"]);
        c.with(&["/a\"b\\c\nd"]).inc_by(3);
        let h = r.histogram("t_seconds", "Latency.", &[], &[0.1, 1.0]);
        h.with(&[]).observe(0.05);
        h.with(&[]).observe(0.5);
        h.with(&[]).observe(5.0);
        let g = r.gauge("t_level", "Level.", &["k"]);
        g.with(&["x"]).set(2.5);
        let text = r.render();
        let want = "# HELP t_requests_total Requests.\\nSecond line.
# TYPE t_requests_total counter
t_requests_total{path=\"/a\\\"b\\\\c\\nd\"} 3
# HELP t_seconds Latency.
# TYPE t_seconds histogram
t_seconds_bucket{le=\"0.1\"} 1
t_seconds_bucket{le=\"1\"} 2
t_seconds_bucket{le=\"+Inf\"} 3
t_seconds_sum 5.55
t_seconds_count 3
# HELP t_level Level.
# TYPE t_level gauge
t_level{k=\"x\"} 2.5
";
        assert_eq!(text, want);
        g.clear();
        assert!(!r.render().contains("t_level{"));
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_name("scimhub_http_requests_total") && valid_name("a:b_1"));
        assert!(!valid_name("bad name") && !valid_name("1x") && !valid_name(""));
        let r = Registry::default();
        r.counter("once", "", &[]);
        let twice = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.counter("once", "", &[]);
        }));
        assert!(twice.is_err());
    }

    #[tokio::test]
    async fn scrape_hooks_run_first() {
        let m = Arc::new(Metrics::new());
        let m2 = m.clone();
        m.registry().on_scrape(move || {
            let m = m2.clone();
            Box::pin(async move {
                m.clear_delivery_backlog();
                m.set_delivery_backlog("hr", 7);
            })
        });
        m.set_delivery_backlog("gone", 1);
        let text = m.registry().scrape().await;
        assert!(
            text.contains("scimhub_outbound_backlog{consumer=\"hr\"} 7"),
            "{text}"
        );
        assert!(!text.contains("gone"));
        m.observe_ldap("bind", 49, Duration::from_millis(3));
        m.observe_delivery("hr", "success", Duration::from_millis(30));
        m.delivery_failed("hr", "http_5xx");
        let text = m.registry().render();
        assert!(text.contains("scimhub_ldap_operations_total{operation=\"bind\",result=\"49\"} 1"));
        assert!(text.contains(
            "scimhub_outbound_delivery_attempts_total{consumer=\"hr\",outcome=\"success\"} 1"
        ));
        assert!(text.contains(
            "scimhub_outbound_delivery_failures_total{consumer=\"hr\",reason=\"http_5xx\"} 1"
        ));
        assert!(
            text.contains("scimhub_outbound_delivery_duration_seconds_count{consumer=\"hr\"} 1")
        );
    }
}
