//! Values the always-on options take: spans (`7d`, `90m`), sizes (`1G`, `200K`), and
//! times (RFC 3339 as memtrace prints them, or a span before now: `-2h`).

use std::time::Duration;

use crate::kernel;

/// A span: a number with a unit s, m, h or d (seconds without one), positive.
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("`{s}`: a span is a number with s, m, h or d (e.g. 7d, 90m)")),
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * mult <= 1e10 => Ok(Duration::from_secs_f64(n * mult)),
        _ => Err(format!("`{s}`: a span is a positive number with s, m, h or d (e.g. 7d, 90m)")),
    }
}

/// A size in bytes: a number with K, M, G or T (powers of 1024; an optional trailing B or
/// iB), at least 1 KiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let i = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(i);
    let unit = unit.trim_end_matches("iB").trim_end_matches('B');
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("`{s}`: a size is a number with K, M, G or T (e.g. 1G, 200M)")),
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n * mult as f64 >= 1024.0 && n * (mult as f64) < 1e18 => {
            Ok((n * mult as f64) as u64)
        }
        _ => Err(format!("`{s}`: a size is a number of at least 1K with K, M, G or T (e.g. 1G, 200M)")),
    }
}

/// A point in time, in ns since the epoch: RFC 3339 (`2026-11-22T02:19:37Z`, a fraction
/// and an offset allowed), or `-SPAN` before now (`-2h`).
pub fn parse_time(s: &str) -> Result<i128, String> {
    if let Some(span) = s.trim().strip_prefix('-') {
        let d = parse_span(span)?;
        return Ok(kernel::wall_ns() - d.as_nanos() as i128);
    }
    rfc3339_ns(s).ok_or_else(|| {
        format!("`{s}`: a time is RFC 3339 (2026-11-22T02:19:37Z) or a span before now (-2h)")
    })
}

/// RFC 3339 to ns since the epoch: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn rfc3339_ns(s: &str) -> Option<i128> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().all(u8::is_ascii_digit).then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = std::str::from_utf8(&b[start..i.min(start + 9)]).ok()?;
        if digits.is_empty() {
            return None;
        }
        frac_ns = digits.parse::<i128>().ok()? * 10i128.pow(9 - digits.len() as u32);
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil (the inverse of engine::format::rfc3339's).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs as i128 * 1_000_000_000 + frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::rfc3339;

    #[test]
    fn spans_and_sizes() {
        assert_eq!(parse_span("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_span("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_span("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_span("10").unwrap(), Duration::from_secs(10));
        for bad in ["0", "-1d", "7y", "d", "", "soon"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("200K").unwrap(), 200 << 10);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["0", "10", "1X", "-1G", "G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_round_trip_with_the_printed_form() {
        for ns in [0i128, 1_709_210_096_789_000_000, 1_795_400_377_449_000_000] {
            assert_eq!(rfc3339_ns(&rfc3339(ns)), Some(ns), "{}", rfc3339(ns));
        }
        assert_eq!(rfc3339_ns("2024-02-29T12:34:56Z"), Some(1_709_210_096_000_000_000));
        assert_eq!(rfc3339_ns("2024-02-29T13:34:56.5+01:00"), Some(1_709_210_096_500_000_000));
        for bad in ["2024-02-29", "2024-13-01T00:00:00Z", "2024-02-29T12:34:56", "x024-02-29T12:34:56Z"] {
            assert_eq!(rfc3339_ns(bad), None, "{bad}");
        }
        let ago = parse_time("-1h").unwrap();
        assert!((kernel::wall_ns() - ago - 3_600_000_000_000).abs() < 1_000_000_000);
        assert!(parse_time("yesterday").is_err());
    }
}
