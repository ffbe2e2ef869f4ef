//! Token lifetimes and JWT times in words: the callback page shows them to people checking a deployment.

/// A number of seconds as words, largest unit first: 900 → "15 minutes", 93784 → "1 day 2 hours 3 minutes 4 seconds".
pub fn duration(seconds: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")];
    let mut left = seconds;
    let mut parts = Vec::new();
    for (size, name) in UNITS {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        return "0 seconds".into();
    }
    parts.join(" ")
}

/// A Unix time (JWT `iat`, `exp`, `auth_time`) as "YYYY-MM-DD hh:mm:ss UTC".
pub fn utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", secs / 3_600, secs % 3_600 / 60, secs % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`):
/// a few lines instead of a date library in the WebAssembly.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_words() {
        assert_eq!(duration(0), "0 seconds");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(900), "15 minutes");
        assert_eq!(duration(3_600), "1 hour");
        assert_eq!(duration(5_400), "1 hour 30 minutes");
        assert_eq!(duration(14 * 86_400), "14 days");
        assert_eq!(duration(93_784), "1 day 2 hours 3 minutes 4 seconds");
    }

    #[test]
    fn unix_times_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }
}
