//! Wall-clock time for tickets and logs, in the machine's local time zone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

pub fn unix_now() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(_) => (0, 0),
    }
}

/// Local time through localtime_r(3); UTC if the C library cannot say.
pub fn local(secs: i64, millis: u32) -> Civil {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we own and reads only t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return utc(secs, millis);
    }
    Civil {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        millis,
    }
}

/// Days since 1970-01-01 to a civil date (proleptic Gregorian).
pub fn utc(secs: i64, millis: u32) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        millis,
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The days of a month (proleptic Gregorian); `None` for a month that is
/// not 1 to 12.
pub fn days_in_month(year: i32, month: u32) -> Option<u32> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => Some(31),
        4 | 6 | 9 | 11 => Some(30),
        2 if leap => Some(29),
        2 => Some(28),
        _ => None,
    }
}

pub fn now() -> Civil {
    let (s, ms) = unix_now();
    local(s, ms)
}

impl Civil {
    /// `2026-11-26 15:58:32.123`
    pub fn stamp(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }
    /// `26/11/2026 15:58:32`, as French tickets print it.
    pub fn ticket(&self) -> String {
        format!(
            "{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
            self.day, self.month, self.year, self.hour, self.minute, self.second
        )
    }
}

/// `100ms`, `2s`, `1m`, `24h`, `5` (seconds), `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    // Said as such: the unit check below would call `-1s` a bad unit.
    if s.starts_with('-') {
        return Err(format!("{s:?}: a duration must not be negative"));
    }
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    match num.parse::<f64>() {
        // Whole milliseconds: the finest any timer needs, and what `-n`
        // prints back exactly.
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e9 => {
            Ok(Duration::from_millis((v * scale * 1000.0).round() as u64))
        }
        _ => Err(format!("{s:?} is not a duration")),
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc(0, 0).stamp(), "1970-01-01 00:00:00.000");
        assert_eq!(utc(951_782_400, 5).stamp(), "2000-02-29 00:00:00.005");
        assert_eq!(utc(1_795_708_712, 0).stamp(), "2026-11-26 15:58:32.000");
        assert_eq!(utc(1_795_708_712, 0).ticket(), "26/11/2026 15:58:32");
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29) * 86_400, 951_782_400);
    }

    /// The months' lengths are those of the calendar `days_from_civil` and
    /// `utc` count in: a month ends where the next one begins.
    #[test]
    fn months_have_the_days_of_the_calendar() {
        assert_eq!(days_in_month(2024, 2), Some(29));
        assert_eq!(days_in_month(2023, 2), Some(28));
        assert_eq!(days_in_month(2000, 2), Some(29));
        assert_eq!(days_in_month(1900, 2), Some(28));
        assert_eq!(days_in_month(2026, 4), Some(30));
        assert_eq!(days_in_month(2026, 0), None);
        assert_eq!(days_in_month(2026, 13), None);
        for year in [1900, 1970, 1999, 2000, 2023, 2024, 2100, 9999] {
            for month in 1..=12u32 {
                let start = days_from_civil(i64::from(year), i64::from(month), 1);
                let (y, m) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                let next = days_from_civil(i64::from(y), i64::from(m), 1);
                let days = days_in_month(year, month).unwrap();
                assert_eq!(next - start, i64::from(days), "{year}-{month}");
                let last = utc((next - 1) * 86_400, 0);
                assert_eq!((last.year, last.month, last.day), (year, month, days));
            }
        }
    }
}
