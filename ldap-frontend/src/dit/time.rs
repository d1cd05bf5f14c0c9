//! GeneralizedTime (RFC 4517 §3.3.13) ↔ the store's canonical RFC 3339 timestamps.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `2026-01-31T09:00:00.250000Z` → `20260131090000.25Z`; fractions only when non-zero.
pub fn format_generalized(ts: &str) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    let mut s = t.format("%Y%m%d%H%M%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    Some(s)
}

/// Parses `YYYYMMDDHH[MM[SS]][(.|,)fraction](Z|±HH[MM])` into a canonical RFC 3339 UTC
/// timestamp as the store writes them.
pub fn parse_generalized(s: &str) -> Option<String> {
    let s = s.trim();
    let (body, offset_secs) = if let Some(b) = s.strip_suffix(['Z', 'z']) {
        (b, 0i64)
    } else {
        let pos = s.rfind(['+', '-'])?;
        let (b, off) = s.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let digits = &off[1..];
        if !(digits.len() == 2 || digits.len() == 4) || !digits.chars().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let h: i64 = digits[..2].parse().ok()?;
        let m: i64 = if digits.len() == 4 {
            digits[2..].parse().ok()?
        } else {
            0
        };
        (b, sign * (h * 3600 + m * 60))
    };
    let (main, frac) = match body.find(['.', ',']) {
        Some(p) => (&body[..p], Some(&body[p + 1..])),
        None => (body, None),
    };
    if !main.chars().all(|c| c.is_ascii_digit()) || !matches!(main.len(), 10 | 12 | 14) {
        return None;
    }
    let num = |a: usize, b: usize| main.get(a..b).and_then(|x| x.parse::<u32>().ok());
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(4, 6)?, num(6, 8)?)?;
    let (h, mi, se) = (
        num(8, 10)?,
        num(10, 12).unwrap_or(0),
        num(12, 14).unwrap_or(0),
    );
    let mut nanos = 0u32;
    if let Some(f) = frac {
        if f.is_empty() || !f.chars().all(|c| c.is_ascii_digit()) || main.len() != 14 {
            return None;
        }
        let padded = format!("{:0<9}", &f[..f.len().min(9)]);
        nanos = padded.parse().ok()?;
    }
    let naive: NaiveDateTime = date.and_hms_nano_opt(h, mi, se, nanos)?;
    let utc = naive.and_utc() - chrono::Duration::seconds(offset_secs);
    Some(utc.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(
            format_generalized("2026-01-31T09:00:00.250000Z").unwrap(),
            "20260131090000.25Z"
        );
        assert_eq!(
            format_generalized("2026-01-31T09:00:00.000000Z").unwrap(),
            "20260131090000Z"
        );
        assert_eq!(
            parse_generalized("20260131090000.25Z").unwrap(),
            "2026-01-31T09:00:00.250000Z"
        );
        assert_eq!(
            parse_generalized("202601311000+0100").unwrap(),
            "2026-01-31T09:00:00.000000Z"
        );
        assert!(parse_generalized("yesterday").is_none());
        assert!(parse_generalized("20261331000000Z").is_none());
    }
}
