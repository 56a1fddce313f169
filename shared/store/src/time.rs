//! Calendar arithmetic on microsecond timestamps (UTC), for monthly partitions.

const US_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month) of the calendar month holding `ts_us`.
pub fn month_of(ts_us: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(ts_us.div_euclid(US_PER_DAY));
    (y, m)
}

/// [start, end) of a calendar month in microseconds.
pub fn month_bounds(year: i64, month: u32) -> (i64, i64) {
    let start = days_from_civil(year, month, 1) * US_PER_DAY;
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    (start, days_from_civil(ny, nm, 1) * US_PER_DAY)
}

/// The month after (year, month).
pub fn next_month(year: i64, month: u32) -> (i64, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_convert_both_ways() {
        // 2000-03-01 is day 11017; 1970-01-01 is day 0; 1969-12-31 is day -1.
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn month_bounds_cover_leap_february() {
        let (start, end) = month_bounds(2024, 2);
        assert_eq!((end - start) / US_PER_DAY, 29);
        assert_eq!(month_of(start), (2024, 2));
        assert_eq!(month_of(end - 1), (2024, 2));
        assert_eq!(month_of(end), (2024, 3));
        assert_eq!(next_month(2024, 12), (2025, 1));
    }
}
