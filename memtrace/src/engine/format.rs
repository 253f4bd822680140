//! Formatting shared by every family's text and records: RFC 3339 times, human sizes.

use crate::kernel;

/// RFC 3339 UTC of a `bpf_ktime_get_boot_ns()` timestamp.
pub fn boot_time(boot_ns: u64) -> String {
    rfc3339(kernel::boot_to_wall_ns(boot_ns))
}

/// RFC 3339 UTC now.
pub fn now() -> String {
    rfc3339(kernel::wall_ns())
}

/// RFC 3339 UTC with milliseconds: 2026-11-22T01:02:03.456Z.
pub fn rfc3339(wall_ns: i128) -> String {
    let secs = wall_ns.div_euclid(1_000_000_000) as i64;
    let ms = (wall_ns.rem_euclid(1_000_000_000) / 1_000_000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Human size from KiB: "512 KiB", "48.0 MiB", "1.25 GiB".
pub fn kib(k: i64) -> String {
    let a = k.unsigned_abs() as f64;
    let sign = if k < 0 { "-" } else { "" };
    if a < 1024.0 {
        format!("{sign}{a} KiB")
    } else if a < 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", a / 1024.0)
    } else {
        format!("{sign}{:.2} GiB", a / 1024.0 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z, a leap day.
        assert_eq!(rfc3339(1_709_210_096_789_000_000), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(kib(512), "512 KiB");
        assert_eq!(kib(49_152), "48.0 MiB");
        assert_eq!(kib(-2048), "-2.0 MiB");
        assert_eq!(kib(1_572_864), "1.50 GiB");
    }
}
