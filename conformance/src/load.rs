//! The load generator behind `conformance load`: creates/s with concurrent clients,
//! `userName eq` latency at a given population, and the cost of adding one member to groups
//! of different sizes. It speaks plain SCIM, so it measures any server by base URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

/// A SCIM endpoint under test.
#[derive(Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub token: String,
    pub client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{what}: status {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

/// Latency statistics of one measured operation.
#[derive(Debug, Clone)]
pub struct Stats {
    pub count: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn from(mut samples: Vec<Duration>, elapsed: Duration) -> Stats {
        samples.sort();
        let at = |q: f64| {
            if samples.is_empty() {
                Duration::ZERO
            } else {
                samples[((samples.len() as f64 - 1.0) * q).round() as usize]
            }
        };
        Stats {
            count: samples.len(),
            elapsed,
            p50: at(0.5),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn line(&self, what: &str) -> String {
        format!(
            "{what}: {} in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.count,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0,
            self.max.as_secs_f64() * 1000.0
        )
    }
}

impl Endpoint {
    pub fn new(base_url: &str, token: &str) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("HTTP client builds");
        Endpoint {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, LoadError> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base_url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/scim+json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        if status >= 300 {
            return Err(LoadError::Status {
                what: format!("{method} {path}"),
                status,
                body: text.chars().take(300).collect(),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Result<Value, LoadError> {
        self.send(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, LoadError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, LoadError> {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// The server's /Bulk maxOperations, if it supports Bulk.
    pub async fn bulk_max_operations(&self) -> Option<usize> {
        let spc = self.get("/ServiceProviderConfig").await.ok()?;
        (spc["bulk"]["supported"] == true)
            .then(|| spc["bulk"]["maxOperations"].as_u64().unwrap_or(0) as usize)
            .filter(|n| *n > 0)
    }
}

/// The userName of seeded user `i`.
pub(crate) fn user_name(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:07}")
}

/// The SCIM resource of seeded user `i`.
pub(crate) fn user_body(prefix: &str, i: u64) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name(prefix, i),
        "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{}", i % 1000)},
        "emails": [{"value": format!("{}@load.example", user_name(prefix, i)), "type": "work", "primary": true}],
        "active": true
    })
}

/// Creates users `from..to` with `concurrency` clients, one POST each; returns the stats.
pub async fn creates(
    ep: &Endpoint,
    prefix: &str,
    from: u64,
    to: u64,
    concurrency: usize,
) -> Result<Stats, LoadError> {
    let started = Instant::now();
    let results: Vec<Result<Duration, LoadError>> = stream::iter(from..to)
        .map(|i| {
            let ep = ep.clone();
            let body = user_body(prefix, i);
            async move {
                let t = Instant::now();
                ep.post("/Users", &body).await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let samples = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Stats::from(samples, started.elapsed()))
}

/// How many users with the prefix exist.
pub async fn population(ep: &Endpoint, prefix: &str) -> Result<u64, LoadError> {
    let v = ep
        .get(&format!(
            "/Users?filter=userName%20sw%20%22{prefix}%22&count=0"
        ))
        .await?;
    Ok(v["totalResults"].as_u64().unwrap_or(0))
}

/// Ensures users `0..n` exist (fast path through /Bulk when offered); prints progress.
pub async fn seed(
    ep: &Endpoint,
    prefix: &str,
    n: u64,
    concurrency: usize,
) -> Result<(), LoadError> {
    let have = population(ep, prefix).await?;
    if have >= n {
        return Ok(());
    }
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(have));
    match ep.bulk_max_operations().await {
        Some(max_ops) => {
            let chunk = max_ops.min(1000) as u64;
            let starts: Vec<u64> = (have..n).step_by(chunk as usize).collect();
            let results: Vec<Result<(), LoadError>> = stream::iter(starts)
                .map(|s| {
                    let ep = ep.clone();
                    let done = done.clone();
                    async move {
                        let ops: Vec<Value> = (s..(s + chunk).min(n))
                            .map(|i| json!({"method": "POST", "path": "/Users", "bulkId": format!("u{i}"), "data": user_body(prefix, i)}))
                            .collect();
                        let count = ops.len() as u64;
                        let resp = ep
                            .post("/Bulk", &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}))
                            .await?;
                        if let Some(bad) = resp["Operations"].as_array().and_then(|a| a.iter().find(|o| o["status"] != "201")) {
                            return Err(LoadError::Status { what: "bulk create".into(), status: 207, body: bad.to_string() });
                        }
                        let total = done.fetch_add(count, Ordering::Relaxed) + count;
                        if total % 50_000 < count {
                            eprintln!("  seeded {total} users ({:.0}/s)", (total - have) as f64 / started.elapsed().as_secs_f64());
                        }
                        Ok(())
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<_>, _>>()?;
        }
        None => {
            creates(ep, prefix, have, n, concurrency).await?;
        }
    }
    eprintln!(
        "  seeded {} users in {:.1} s",
        n - have,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `userName eq` lookups of random existing users.
pub async fn lookups(
    ep: &Endpoint,
    prefix: &str,
    population: u64,
    queries: usize,
    concurrency: usize,
) -> Result<Stats, LoadError> {
    let started = Instant::now();
    let mut seedv: u64 = 0x9E37_79B9_7F4A_7C15;
    let picks: Vec<u64> = (0..queries)
        .map(|_| {
            seedv ^= seedv << 13;
            seedv ^= seedv >> 7;
            seedv ^= seedv << 17;
            seedv % population.max(1)
        })
        .collect();
    let results: Vec<Result<Duration, LoadError>> = stream::iter(picks)
        .map(|i| {
            let ep = ep.clone();
            let path = format!(
                "/Users?filter=userName%20eq%20%22{}%22",
                user_name(prefix, i)
            );
            async move {
                let t = Instant::now();
                let v = ep.get(&path).await?;
                if v["totalResults"] != 1 {
                    return Err(LoadError::Status {
                        what: path,
                        status: 200,
                        body: "expected exactly one result".into(),
                    });
                }
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let samples = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Stats::from(samples, started.elapsed()))
}

async fn user_ids(ep: &Endpoint, prefix: &str, n: u64) -> Result<Vec<String>, LoadError> {
    let mut ids = Vec::with_capacity(n as usize);
    let mut cursor = String::new();
    while (ids.len() as u64) < n {
        let page = ep
            .get(&format!("/Users?filter=userName%20sw%20%22{prefix}%22&attributes=id&count=1000&cursor={cursor}"))
            .await?;
        for r in page["Resources"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                ids.push(id.to_string());
            }
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    ids.truncate(n as usize);
    Ok(ids)
}

/// Creates a group of `size` members (from the seeded users) and measures adding and then
/// removing one more member, `samples` times.
pub async fn member_add(
    ep: &Endpoint,
    prefix: &str,
    size: u64,
    samples: usize,
) -> Result<Stats, LoadError> {
    let ids = user_ids(ep, prefix, size + samples as u64).await?;
    if (ids.len() as u64) < size + samples as u64 {
        return Err(LoadError::Status {
            what: "member benchmark".into(),
            status: 0,
            body: format!("needs {} seeded users", size + samples as u64),
        });
    }
    let name = format!("{prefix}group-{size}-{}", uuid::Uuid::new_v4().simple());
    let g = ep.post("/Groups", &json!({"displayName": name})).await?;
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    for chunk in ids[..size as usize].chunks(10_000) {
        let members: Vec<Value> = chunk.iter().map(|id| json!({"value": id})).collect();
        ep.patch(
            &format!("/Groups/{gid}?excludedAttributes=members"),
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": members}]}),
        )
        .await?;
    }
    let started = Instant::now();
    let mut times = Vec::with_capacity(samples);
    for id in &ids[size as usize..] {
        let t = Instant::now();
        ep.patch(
            &format!("/Groups/{gid}?excludedAttributes=members"),
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]}),
        )
        .await?;
        times.push(t.elapsed());
    }
    Ok(Stats::from(times, started.elapsed()))
}

/// Parses an RFC 3339 timestamp into a system time.
fn parse_time(s: &str) -> Option<std::time::SystemTime> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let rest = rest.trim_end_matches('Z');
    let (hms, frac) = match rest.split_once('.') {
        Some((a, b)) => (a, b),
        None => (rest, "0"),
    };
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + hh * 3600 + mm * 60 + ss;
    let nanos: u32 = format!("{:0<9}", &frac[..frac.len().min(9)]).parse().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

/// Steady load on the hub while a downstream SCIM server is its consumer: the time from
/// the hub acknowledging a create to the downstream server creating the account (its
/// `meta.created`), for `count` users sent at `rate` per second.
pub async fn delivery_latency(
    hub: &Endpoint,
    downstream: &Endpoint,
    count: usize,
    rate: f64,
) -> Result<Stats, LoadError> {
    let prefix = format!("lat-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let started = Instant::now();
    let mut sent: Vec<(String, std::time::SystemTime)> = Vec::with_capacity(count);
    let mut ticker = tokio::time::interval(interval);
    let mut inflight = Vec::new();
    for i in 0..count as u64 {
        ticker.tick().await;
        let hub = hub.clone();
        let body = user_body(&prefix, i);
        inflight.push(tokio::spawn(async move {
            let v = hub.post("/Users", &body).await?;
            Ok::<_, LoadError>((
                v["id"].as_str().unwrap_or_default().to_string(),
                std::time::SystemTime::now(),
            ))
        }));
    }
    for h in inflight {
        sent.push(h.await.expect("task")?);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = Vec::with_capacity(count);
    for (id, acked) in &sent {
        loop {
            let v = downstream
                .get(&format!(
                    "/Users?filter=externalId%20eq%20%22{id}%22&attributes=meta"
                ))
                .await?;
            if let Some(created) = v["Resources"][0]["meta"]["created"]
                .as_str()
                .and_then(parse_time)
            {
                samples.push(created.duration_since(*acked).unwrap_or(Duration::ZERO));
                break;
            }
            if Instant::now() > deadline {
                return Err(LoadError::Status {
                    what: "delivery latency".into(),
                    status: 0,
                    body: format!("{id} never reached the consumer"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Stats::from(samples, started.elapsed()))
}

/// Waits until the downstream server holds `n` Users; returns how long that took.
pub async fn wait_for_population(
    downstream: &Endpoint,
    n: u64,
    timeout: Duration,
) -> Result<Duration, LoadError> {
    let started = Instant::now();
    loop {
        let v = downstream.get("/Users?count=0").await?;
        if v["totalResults"].as_u64().unwrap_or(0) >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(LoadError::Status {
                what: "provisioning".into(),
                status: 0,
                body: format!("only {} of {n} after {timeout:?}", v["totalResults"]),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
