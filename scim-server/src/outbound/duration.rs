//! Durations in stored settings: written as a number with a unit ("1500ms", "30s", "2m", "1h",
//! "1d"), read from that form or from a bare number of seconds, so hand-written TOML/JSON and
//! `SCIMHUB_*` environment strings both work. Use with `#[serde(with = "duration")]`.

use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// The shortest exact form: the largest unit that divides the duration.
pub fn format(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}s", d.as_secs_f64());
    }
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. \"30s\", \"500ms\", \"1h\""))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}: out of range"))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as \"30s\" or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v).map_err(|_| E::custom(format!("invalid duration {v}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_secs(172_800)), "2d");
        assert_eq!(format(Duration::ZERO), "0ms");
        assert_eq!(format(Duration::from_micros(1500)), "0.0015s");
    }

    #[test]
    fn parses_units_and_bare_seconds() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse("").is_err());
        assert!(parse("5 fortnights").is_err());
        assert!(parse("-1s").is_err());
    }

    #[test]
    fn round_trips_through_json() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "super")]
            d: Duration,
        }
        for d in [1, 1500, 60_000, 3_600_000, 7_777] {
            let t = T {
                d: Duration::from_millis(d),
            };
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        }
        let t: T = serde_json::from_str(r#"{"d": 12}"#).unwrap();
        assert_eq!(t.d, Duration::from_secs(12));
        let t: T = serde_json::from_str(r#"{"d": 0.5}"#).unwrap();
        assert_eq!(t.d, Duration::from_millis(500));
        assert!(serde_json::from_str::<T>(r#"{"d": -3}"#).is_err());
    }
}
