//! Executes conformance cases over real HTTP and compares responses with expectations.
//!
//! A case file holds one case or an array of cases:
//! ```json
//! {"name": "...", "source": "RFC 7644 §3.4.2.2", "requires": ["readonly_token"],
//!  "steps": [{"request": {"method": "POST", "path": "/Users", "body": {...}},
//!             "expect": {"status": 201, "headers": {"etag": "$any"}, "body": {...}},
//!             "save": {"uid": "/id", "etag": "header:etag"}}]}
//! ```
//! `${name}` in paths, headers and body strings is replaced by a variable: `run` (unique per
//! case run), `token` and any `--var`, plus values saved by earlier steps. Expected bodies
//! match as subsets; the strings `$any`, `$absent`, `$string`, `$number`, `$array`,
//! `$object` and `$contains:TEXT` match by kind; `{"$len": N, "$contains": [...]}` matches
//! arrays by length and by members.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub source: String,
    /// Variables the case needs; without them it is skipped.
    #[serde(default)]
    pub requires: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub request: Request,
    pub expect: Expect,
    #[serde(default)]
    pub save: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default)]
    pub body: Option<Value>,
    /// A body sent verbatim (for malformed-JSON cases).
    #[serde(default)]
    pub raw_body: Option<String>,
    /// Pad the body with this many bytes of JSON whitespace (oversized-body cases).
    #[serde(default)]
    pub pad_bytes: Option<usize>,
    /// The token variable to authenticate with ("token" by default), "none" for no
    /// Authorization header, or a literal header value after "literal:".
    #[serde(default)]
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default)]
    pub body: Option<Value>,
}

/// Where to run.
#[derive(Debug, Clone)]
pub struct Target {
    /// e.g. http://127.0.0.1:8080/scim/v2
    pub base_url: String,
    pub vars: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: String,
    pub name: String,
    pub skipped: Option<String>,
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.skipped.is_none() && self.failures.is_empty()
    }
}

/// Reads every case under `dir` (recursively), in path order.
pub fn load_cases(dir: &Path) -> Result<Vec<(String, Case)>, String> {
    let mut files = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(d)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
        Ok(())
    }
    walk(dir, &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let list = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        let rel = f.strip_prefix(dir).unwrap_or(&f).display().to_string();
        for c in list {
            let case: Case = serde_json::from_value(c).map_err(|e| format!("{rel}: {e}"))?;
            cases.push((rel.clone(), case));
        }
    }
    Ok(cases)
}

fn substitute_str(s: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?
            + start;
        let name = &rest[start + 2..end];
        let v = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable ${{{name}}}"))?;
        out.push_str(v);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute_json(v: &Value, vars: &HashMap<String, String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(substitute_str(s, vars)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute_json(x, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, x) in o {
                m.insert(substitute_str(k, vars)?, substitute_json(x, vars)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

/// Compares `actual` with the expectation `want`; failures name the JSON path.
pub fn compare(want: &Value, actual: Option<&Value>, path: &str, out: &mut Vec<String>) {
    let show = |v: Option<&Value>| {
        v.map(|v| v.to_string())
            .unwrap_or_else(|| "(absent)".into())
    };
    match want {
        Value::String(s) if s.starts_with('$') => {
            let ok = match s.as_str() {
                "$any" => actual.is_some(),
                "$absent" => actual.is_none(),
                "$string" => actual.is_some_and(Value::is_string),
                "$number" => actual.is_some_and(Value::is_number),
                "$array" => actual.is_some_and(Value::is_array),
                "$object" => actual.is_some_and(Value::is_object),
                _ => match s.strip_prefix("$contains:") {
                    Some(t) => actual
                        .and_then(Value::as_str)
                        .is_some_and(|a| a.contains(t)),
                    None => actual == Some(want),
                },
            };
            if !ok {
                out.push(format!("{path}: expected {s}, got {}", show(actual)));
            }
        }
        Value::Object(w) if w.contains_key("$len") || w.contains_key("$contains") => {
            let Some(Value::Array(a)) = actual else {
                out.push(format!("{path}: expected an array, got {}", show(actual)));
                return;
            };
            if let Some(n) = w.get("$len").and_then(Value::as_u64)
                && a.len() as u64 != n
            {
                out.push(format!("{path}: expected {n} elements, got {}", a.len()));
            }
            for (i, item) in w
                .get("$contains")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let found = a.iter().any(|x| {
                    let mut f = Vec::new();
                    compare(item, Some(x), path, &mut f);
                    f.is_empty()
                });
                if !found {
                    out.push(format!(
                        "{path}: no element matches $contains[{i}] = {item}"
                    ));
                }
            }
        }
        Value::Object(w) => {
            let Some(Value::Object(a)) = actual else {
                out.push(format!("{path}: expected an object, got {}", show(actual)));
                return;
            };
            for (k, wv) in w {
                compare(wv, a.get(k), &format!("{path}/{k}"), out);
            }
        }
        Value::Array(w) => {
            let Some(Value::Array(a)) = actual else {
                out.push(format!("{path}: expected an array, got {}", show(actual)));
                return;
            };
            if a.len() != w.len() {
                out.push(format!(
                    "{path}: expected {} elements, got {}: {}",
                    w.len(),
                    a.len(),
                    show(actual)
                ));
                return;
            }
            for (i, (wv, av)) in w.iter().zip(a).enumerate() {
                compare(wv, Some(av), &format!("{path}/{i}"), out);
            }
        }
        Value::Number(n) => {
            let ok = actual
                .and_then(Value::as_f64)
                .is_some_and(|a| Some(a) == n.as_f64());
            if !ok {
                out.push(format!("{path}: expected {n}, got {}", show(actual)));
            }
        }
        other => {
            if actual != Some(other) {
                out.push(format!("{path}: expected {other}, got {}", show(actual)));
            }
        }
    }
}

/// Runs one case; a step failure stops the case.
pub async fn run_case(
    client: &reqwest::Client,
    target: &Target,
    file: &str,
    case: &Case,
) -> Outcome {
    let mut outcome = Outcome {
        file: file.to_string(),
        name: case.name.clone(),
        skipped: None,
        failures: Vec::new(),
    };
    if let Some(missing) = case.requires.iter().find(|r| !target.vars.contains_key(*r)) {
        outcome.skipped = Some(format!("needs variable {missing}"));
        return outcome;
    }
    let mut vars = target.vars.clone();
    vars.insert(
        "run".into(),
        uuid::Uuid::new_v4().simple().to_string()[..10].to_string(),
    );
    for (i, step) in case.steps.iter().enumerate() {
        if let Err(e) = run_step(client, target, &mut vars, step).await {
            outcome.failures.push(format!(
                "step {} ({} {}): {e}",
                i + 1,
                step.request.method,
                step.request.path
            ));
            break;
        }
    }
    outcome
}

async fn run_step(
    client: &reqwest::Client,
    target: &Target,
    vars: &mut HashMap<String, String>,
    step: &Step,
) -> Result<(), String> {
    let r = &step.request;
    let path = substitute_str(&r.path, vars)?;
    let url = format!("{}{}", target.base_url.trim_end_matches('/'), path);
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client.request(method, &url);
    match r.auth.as_deref() {
        Some("none") => {}
        Some(a) if a.starts_with("literal:") => {
            req = req.header("Authorization", &a["literal:".len()..])
        }
        other => {
            let var = other.unwrap_or("token");
            let t = vars
                .get(var)
                .ok_or_else(|| format!("no token variable {var}"))?;
            req = req.header("Authorization", format!("Bearer {t}"));
        }
    }
    let mut has_ct = false;
    for (k, v) in &r.headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.header(k, substitute_str(v, vars)?);
    }
    let body = match (&r.body, &r.raw_body) {
        (Some(b), _) => {
            let mut text = substitute_json(b, vars)?.to_string();
            if let Some(n) = r.pad_bytes {
                text.push_str(&" ".repeat(n));
            }
            Some(text)
        }
        (None, Some(raw)) => Some(substitute_str(raw, vars)?),
        (None, None) => None,
    };
    if let Some(b) = body {
        if !has_ct {
            req = req.header("Content-Type", "application/scim+json");
        }
        req = req.body(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    let json: Option<Value> = serde_json::from_str(&text).ok();
    let mut failures = Vec::new();
    if status != step.expect.status {
        failures.push(format!(
            "status {status}, expected {}; body: {}",
            step.expect.status,
            truncate(&text)
        ));
    }
    for (k, want) in &step.expect.headers {
        let got = headers.get(k.as_str()).and_then(|v| v.to_str().ok());
        let want = substitute_str(want, vars)?;
        let ok = match want.as_str() {
            "$any" => got.is_some(),
            "$absent" => got.is_none(),
            w => match w.strip_prefix("$contains:") {
                Some(t) => got.is_some_and(|g| g.contains(t)),
                None => got == Some(w),
            },
        };
        if !ok {
            failures.push(format!("header {k}: expected {want}, got {got:?}"));
        }
    }
    if let Some(want) = &step.expect.body {
        let want = substitute_json(want, vars)?;
        match &json {
            Some(actual) => compare(&want, Some(actual), "", &mut failures),
            None => failures.push(format!("expected a JSON body, got {:?}", truncate(&text))),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    for (name, from) in &step.save {
        let value = match from.strip_prefix("header:") {
            Some(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            None => json
                .as_ref()
                .and_then(|j| j.pointer(from))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
        };
        let value = value.ok_or_else(|| format!("cannot save {name}: nothing at {from}"))?;
        vars.insert(name.clone(), value);
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.len() > 400 {
        let mut cut = 400;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let mut f = Vec::new();
        compare(
            &json!({"a": 1, "b": "$absent", "c": {"$len": 2, "$contains": [{"x": "y"}]}, "d": "$contains:ell"}),
            Some(&json!({"a": 1.0, "c": [{"x": "y", "z": 1}, {"x": "q"}], "d": "hello"})),
            "",
            &mut f,
        );
        assert!(f.is_empty(), "{f:?}");
        compare(&json!({"a": [1, 2]}), Some(&json!({"a": [1]})), "", &mut f);
        compare(
            &json!({"b": "$absent"}),
            Some(&json!({"b": null})),
            "",
            &mut f,
        );
        assert_eq!(f.len(), 2, "{f:?}");
    }

    #[test]
    fn variables_substitute_everywhere() {
        let vars = HashMap::from([("run".to_string(), "r1".to_string())]);
        assert_eq!(
            substitute_str("/Users?filter=userName eq \"${run}-a\"", &vars).unwrap(),
            "/Users?filter=userName eq \"r1-a\""
        );
        assert!(substitute_str("${nope}", &vars).is_err());
        assert_eq!(
            substitute_json(&json!({"${run}": ["${run}"]}), &vars).unwrap(),
            json!({"r1": ["r1"]})
        );
    }

    #[test]
    fn shipped_cases_parse() {
        let cases = load_cases(&crate::default_cases_dir()).unwrap();
        assert!(cases.len() > 30, "{} cases", cases.len());
    }
}
