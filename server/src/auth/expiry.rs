//! When a new token expires, as typed after `maelab token create --expires`:
//! a lifetime (`12h`, `30d`, `8w`) or a moment (`2027-01-31` for midnight
//! UTC, or RFC 3339 like `2027-01-31T18:00:00Z`). Three units are all CI
//! tokens need, so this stays a few lines instead of a dependency.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// The longest lifetime accepted; beyond it, a token should simply not expire.
const MAX_DAYS: i64 = 100 * 366;

/// Why an expiry is refused. Messages name the option and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error(
        "`{0}` is neither a lifetime (a whole number and h, d or w: 12h, 30d, 8w) \
         nor a date (2027-01-31, or RFC 3339 like 2027-01-31T18:00:00Z)"
    )]
    Malformed(String),
    #[error(
        "`{0}` is a lifetime of zero: the token would expire at once; give a positive one, \
         or leave --expires out for a token that never expires"
    )]
    Zero(String),
    #[error(
        "`{0}` is more than 100 years away; leave --expires out for a token that never expires"
    )]
    TooFar(String),
    #[error("{} is in the past; a new token must expire later than now", .0.format("%Y-%m-%d %H:%M:%S UTC"))]
    Past(DateTime<Utc>),
}

/// A parsed `--expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    /// This long after creation.
    After(TimeDelta),
    /// At this moment.
    At(DateTime<Utc>),
}

impl Expires {
    /// The moment, counted from `now`; refused if it is not after `now`.
    pub fn at(self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ExpiryError> {
        let at = match self {
            Self::After(d) => now
                .checked_add_signed(d)
                .ok_or_else(|| ExpiryError::TooFar(format!("{}d", d.num_days())))?,
            Self::At(t) => t,
        };
        check_future(at, now)
    }
}

/// Refuse a moment that is not after `now`.
pub fn check_future(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ExpiryError> {
    if at <= now {
        return Err(ExpiryError::Past(at));
    }
    if at - now > TimeDelta::days(MAX_DAYS) {
        return Err(ExpiryError::TooFar(at.to_rfc3339()));
    }
    Ok(at)
}

impl FromStr for Expires {
    type Err = ExpiryError;

    fn from_str(raw: &str) -> Result<Self, ExpiryError> {
        let s = raw.trim();
        if let Some(lifetime) = lifetime(s) {
            let (n, unit_hours) = lifetime?;
            let days = n
                .checked_mul(unit_hours)
                .map(|h| h / 24)
                .unwrap_or(i64::MAX);
            if days > MAX_DAYS {
                return Err(ExpiryError::TooFar(raw.to_string()));
            }
            if n == 0 {
                return Err(ExpiryError::Zero(raw.to_string()));
            }
            return Ok(Self::After(TimeDelta::hours(n * unit_hours)));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self::At(t.with_timezone(&Utc)));
        }
        if let Some(midnight) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
        {
            return Ok(Self::At(midnight.and_utc()));
        }
        Err(ExpiryError::Malformed(raw.to_string()))
    }
}

/// `<digits><h|d|w>` as (number, hours per unit); None when `s` does not
/// look like a lifetime at all (it may be a date).
fn lifetime(s: &str) -> Option<Result<(i64, i64), ExpiryError>> {
    let unit_hours = match s.chars().last()? {
        'h' => 1,
        'd' => 24,
        'w' => 7 * 24,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Some(Err(ExpiryError::Malformed(s.to_string())));
    }
    // Digits only, so a parse failure is an overflow: far too far.
    Some(
        digits
            .parse::<i64>()
            .map(|n| (n, unit_hours))
            .map_err(|_| ExpiryError::TooFar(s.to_string())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn lifetimes_count_from_now() {
        let at = |s: &str| s.parse::<Expires>().unwrap().at(now()).unwrap();
        assert_eq!(at("12h"), now() + TimeDelta::hours(12));
        assert_eq!(at("30d"), now() + TimeDelta::days(30));
        assert_eq!(at("8w"), now() + TimeDelta::weeks(8));
        assert_eq!(at(" 1d "), now() + TimeDelta::days(1));
    }

    #[test]
    fn dates_are_moments() {
        let at = |s: &str| s.parse::<Expires>().unwrap().at(now()).unwrap();
        assert_eq!(
            at("2027-01-31"),
            "2027-01-31T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            at("2027-01-31T18:00:00+01:00"),
            "2027-01-31T17:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn zero_past_malformed_and_huge_are_refused() {
        for s in ["0h", "0d", "00w"] {
            assert!(
                matches!(s.parse::<Expires>(), Err(ExpiryError::Zero(_))),
                "{s}"
            );
        }
        for s in [
            "",
            "d",
            "30",
            "30s",
            "30m",
            "-3d",
            "3.5d",
            "1d2h",
            "tomorrow",
            "2027-13-01",
        ] {
            assert!(
                matches!(s.parse::<Expires>(), Err(ExpiryError::Malformed(_))),
                "{s}"
            );
        }
        for s in ["99999999999999999999d", "9223372036854775807w", "5300w"] {
            assert!(
                matches!(s.parse::<Expires>(), Err(ExpiryError::TooFar(_))),
                "{s}"
            );
        }
        let past = "2020-01-01".parse::<Expires>().unwrap();
        assert!(matches!(past.at(now()), Err(ExpiryError::Past(_))));
        let exactly_now = Expires::At(now());
        assert!(matches!(exactly_now.at(now()), Err(ExpiryError::Past(_))));
        let far = "2999-01-01".parse::<Expires>().unwrap();
        assert!(matches!(far.at(now()), Err(ExpiryError::TooFar(_))));
    }
}
