//! The adaptive TTL: exchange hours in the exchange's own time zone (with daylight saving) for
//! session-traded symbols, realised volatility for symbols that trade around the clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use tickmesh_config::std_duration;
use tickmesh_proto::v1::{AdaptiveTtlConfig, MarketSession};

use crate::error::CacheError;

/// One exchange's regular session.
#[derive(Debug, Clone)]
pub struct Session {
    name: String,
    tz: TimeZone,
    open: Time,
    close: Time,
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

/// Whether a session is open at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Trading.
    Open,
    /// Not trading; the next open is this far away.
    Closed {
        /// Time until the next weekday open.
        until_open: Duration,
    },
}

impl Session {
    fn from_proto(path: &str, s: &MarketSession) -> Result<Self, CacheError> {
        let tz = TimeZone::get(&s.time_zone)
            .map_err(|err| CacheError::config(format!("{path}.time_zone"), format!("{err}")))?;
        let open = clock(&format!("{path}.open_time"), &s.open_time)?;
        let close = clock(&format!("{path}.close_time"), &s.close_time)?;
        if open >= close {
            return Err(CacheError::config(
                format!("{path}.close_time"),
                "must be after open_time",
            ));
        }
        let mut exact = HashSet::new();
        let mut prefixes = Vec::new();
        for symbol in &s.symbols {
            match symbol.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_owned()),
                None => {
                    exact.insert(symbol.clone());
                }
            }
        }
        Ok(Self {
            name: s.name.clone(),
            tz,
            open,
            close,
            exact,
            prefixes,
        })
    }

    /// The session's name, e.g. `XNYS`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the symbol trades in this session (an exact name or a `prefix*`).
    pub fn matches(&self, symbol: &str) -> bool {
        self.exact.contains(symbol) || self.prefixes.iter().any(|p| symbol.starts_with(p.as_str()))
    }

    /// Open on weekdays from the open time (inclusive) to the close time (exclusive), local
    /// time of the exchange. Holidays are not modelled.
    pub fn state(&self, now: Timestamp) -> SessionState {
        let local = self.tz.to_datetime(now);
        let (date, time) = (local.date(), local.time());
        if is_weekday(date) && time >= self.open && time < self.close {
            return SessionState::Open;
        }
        let mut day = if is_weekday(date) && time < self.open {
            date
        } else {
            date.tomorrow().unwrap_or(date)
        };
        // At most two weekend days to skip.
        for _ in 0..3 {
            if is_weekday(day) {
                break;
            }
            day = day.tomorrow().unwrap_or(day);
        }
        let until_open = self
            .tz
            .to_timestamp(day.to_datetime(self.open))
            .ok()
            .and_then(|open| Duration::try_from(open.duration_since(now)).ok())
            .unwrap_or_default();
        SessionState::Closed { until_open }
    }
}

fn is_weekday(date: Date) -> bool {
    !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// An "HH:MM" time of day.
fn clock(field: &str, text: &str) -> Result<Time, CacheError> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
        if text.len() != 5 {
            return None;
        }
        Time::new(h, m, 0, 0).ok()
    });
    parsed.ok_or_else(|| CacheError::config(field, format!("must be HH:MM (got {text:?})")))
}

/// The adaptive TTL rules from `adaptive_ttl`.
#[derive(Debug, Clone)]
pub struct AdaptiveTtl {
    sessions: Vec<Session>,
    session_open_ttl: Duration,
    session_closed_ttl: Duration,
    volatile_ttl: Duration,
    calm_ttl: Duration,
    volatility_threshold: f64,
    window_bars: usize,
}

impl AdaptiveTtl {
    /// Reads and checks the configuration (time zones must exist in the tz database).
    pub fn from_config(config: &AdaptiveTtlConfig) -> Result<Self, CacheError> {
        let sessions = config
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| Session::from_proto(&format!("adaptive_ttl.sessions[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let or = |d: Option<&prost_types::Duration>, fallback: u64| {
            let d = std_duration(d);
            if d.is_zero() {
                Duration::from_secs(fallback)
            } else {
                d
            }
        };
        Ok(Self {
            sessions,
            session_open_ttl: or(config.session_open_ttl.as_ref(), 5),
            session_closed_ttl: or(config.session_closed_ttl.as_ref(), 3600),
            volatile_ttl: or(config.volatile_ttl.as_ref(), 2),
            calm_ttl: or(config.calm_ttl.as_ref(), 30),
            volatility_threshold: config.volatility_threshold,
            window_bars: usize::try_from(config.volatility_window_bars)
                .unwrap_or(20)
                .max(2),
        })
    }

    /// The session the symbol trades in, if any.
    pub fn session_of(&self, symbol: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.matches(symbol))
    }

    /// Bars the realised volatility is measured over.
    pub fn window_bars(&self) -> usize {
        self.window_bars
    }

    /// The TTL of a value about `symbol` written at `now`.
    ///
    /// A session-traded symbol gets `session_open_ttl` while its session is open, and
    /// `session_closed_ttl` while it is closed, cut to the time left until the next open (but
    /// never below `session_open_ttl`), so a value cached late at night does not outlive the
    /// opening bell. Any other symbol trades around the clock: `volatile_ttl` when its realised
    /// volatility is above the threshold or unknown, `calm_ttl` otherwise.
    pub fn ttl(&self, symbol: &str, volatility: Option<f64>, now: Timestamp) -> Duration {
        if let Some(session) = self.session_of(symbol) {
            return match session.state(now) {
                SessionState::Open => self.session_open_ttl,
                SessionState::Closed { until_open } => self
                    .session_closed_ttl
                    .min(until_open.max(self.session_open_ttl)),
            };
        }
        match volatility {
            Some(v) if v.is_finite() && v <= self.volatility_threshold => self.calm_ttl,
            _ => self.volatile_ttl,
        }
    }
}

/// Realised volatility per symbol from the prices the cache is told about.
#[derive(Debug)]
pub(crate) struct VolatilityTracker {
    window: usize,
    prices: Mutex<HashMap<String, VecDeque<f64>>>,
}

impl VolatilityTracker {
    /// Keeps `window + 1` prices per symbol, so `window` log returns.
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(2),
            prices: Mutex::new(HashMap::new()),
        }
    }

    /// Records a price (a close or a trade); non-positive and non-finite prices are ignored.
    pub fn record(&self, symbol: &str, price: f64) {
        if !(price.is_finite() && price > 0.0) {
            return;
        }
        let mut prices = self.prices.lock().unwrap_or_else(|e| e.into_inner());
        let series = prices.entry(symbol.to_owned()).or_default();
        series.push_back(price);
        while series.len() > self.window + 1 {
            series.pop_front();
        }
    }

    /// The sample standard deviation of the recorded log returns (at least two returns needed).
    pub fn volatility(&self, symbol: &str) -> Option<f64> {
        let prices = self.prices.lock().unwrap_or_else(|e| e.into_inner());
        realized_volatility(prices.get(symbol)?.iter().copied())
    }
}

/// Sample standard deviation (n - 1) of the log returns of a price series.
pub fn realized_volatility(prices: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut previous: Option<f64> = None;
    let mut returns = Vec::new();
    for price in prices {
        if let Some(p) = previous {
            returns.push((price / p).ln());
        }
        previous = Some(price);
    }
    if returns.len() < 2 {
        return None;
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some(var.sqrt())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    fn rules() -> AdaptiveTtl {
        AdaptiveTtl::from_config(&AdaptiveTtlConfig {
            sessions: vec![MarketSession {
                name: "XNYS".into(),
                time_zone: "America/New_York".into(),
                open_time: "09:30".into(),
                close_time: "16:00".into(),
                symbols: vec!["AAPL".into(), "NYSE:*".into()],
            }],
            session_open_ttl: secs(5),
            session_closed_ttl: secs(3600),
            volatile_ttl: secs(2),
            calm_ttl: secs(30),
            volatility_threshold: 0.01,
            volatility_window_bars: 20,
        })
        .unwrap()
    }

    fn at(utc: &str) -> Timestamp {
        utc.parse().unwrap()
    }

    const OPEN: Duration = Duration::from_secs(5);

    fn closed_for(ttl: &AdaptiveTtl, utc: &str) -> Duration {
        match ttl.session_of("AAPL").unwrap().state(at(utc)) {
            SessionState::Closed { until_open } => until_open,
            SessionState::Open => panic!("{utc} should be outside the session"),
        }
    }

    #[test]
    fn symbols_match_exactly_or_by_prefix() {
        let ttl = rules();
        assert!(ttl.session_of("AAPL").is_some());
        assert!(ttl.session_of("NYSE:IBM").is_some());
        assert!(ttl.session_of("AAPLX").is_none());
        assert!(ttl.session_of("BTC-USD").is_none());
    }

    // 2026-03-08 (a Sunday) New York moves from EST (UTC-5) to EDT (UTC-4).
    #[test]
    fn the_week_before_the_spring_change_follows_est() {
        let ttl = rules();
        // Friday 2026-03-06, EST: 09:30 local is 14:30 UTC.
        assert_eq!(
            closed_for(&ttl, "2026-03-06T14:29:00Z"),
            Duration::from_secs(60)
        );
        assert_eq!(
            ttl.ttl("AAPL", None, at("2026-03-06T14:29:00Z")),
            Duration::from_secs(60)
        );
        assert_eq!(ttl.ttl("AAPL", None, at("2026-03-06T14:31:00Z")), OPEN);
        // 15:59 and 16:01 local are 20:59 and 21:01 UTC.
        assert_eq!(ttl.ttl("AAPL", None, at("2026-03-06T20:59:00Z")), OPEN);
        assert_eq!(
            ttl.ttl("AAPL", None, at("2026-03-06T21:01:00Z")),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn the_week_after_the_spring_change_follows_edt() {
        let ttl = rules();
        // Monday 2026-03-09, EDT: 09:29 local is 13:29 UTC, an hour earlier than the week before.
        assert_eq!(
            closed_for(&ttl, "2026-03-09T13:29:00Z"),
            Duration::from_secs(60)
        );
        assert_eq!(ttl.ttl("AAPL", None, at("2026-03-09T13:31:00Z")), OPEN);
        // 14:29 UTC was before the open on Friday; now it is 10:29 local, mid-session.
        assert_eq!(ttl.ttl("AAPL", None, at("2026-03-09T14:29:00Z")), OPEN);
        assert_eq!(ttl.ttl("AAPL", None, at("2026-03-09T19:59:00Z")), OPEN);
        assert!(closed_for(&ttl, "2026-03-09T20:01:00Z") > Duration::from_secs(17 * 3600));
        // 20:59 UTC was inside Friday's session; now it is 16:59 local, closed.
        assert_eq!(
            ttl.ttl("AAPL", None, at("2026-03-09T20:59:00Z")),
            Duration::from_secs(3600)
        );
    }

    // 2026-11-01 (a Sunday) New York moves back from EDT (UTC-4) to EST (UTC-5).
    #[test]
    fn the_autumn_change_moves_the_session_an_hour_later_in_utc() {
        let ttl = rules();
        // Friday 2026-10-30, EDT.
        assert_eq!(
            closed_for(&ttl, "2026-10-30T13:29:00Z"),
            Duration::from_secs(60)
        );
        assert_eq!(ttl.ttl("AAPL", None, at("2026-10-30T13:31:00Z")), OPEN);
        assert_eq!(ttl.ttl("AAPL", None, at("2026-10-30T19:59:00Z")), OPEN);
        assert_eq!(
            ttl.ttl("AAPL", None, at("2026-10-30T20:01:00Z")),
            Duration::from_secs(3600)
        );
        // Monday 2026-11-02, EST.
        assert_eq!(
            closed_for(&ttl, "2026-11-02T14:29:00Z"),
            Duration::from_secs(60)
        );
        assert_eq!(
            closed_for(&ttl, "2026-11-02T13:31:00Z"),
            Duration::from_secs(3540)
        );
        assert_eq!(ttl.ttl("AAPL", None, at("2026-11-02T14:31:00Z")), OPEN);
        assert_eq!(ttl.ttl("AAPL", None, at("2026-11-02T20:59:00Z")), OPEN);
        assert!(closed_for(&ttl, "2026-11-02T21:01:00Z") > Duration::from_secs(17 * 3600));
    }

    #[test]
    fn the_weekend_is_closed_until_monday_morning_across_the_change() {
        let ttl = rules();
        // Saturday noon EST → Monday 09:30 EDT: 45.5 hours minus the hour the clocks skip.
        assert_eq!(
            closed_for(&ttl, "2026-03-07T17:00:00Z"),
            Duration::from_secs(44 * 3600 + 30 * 60)
        );
        // Sunday 2026-03-08 mid-morning local (the change day) is closed as well.
        assert_eq!(
            ttl.ttl("AAPL", None, at("2026-03-08T14:31:00Z")),
            Duration::from_secs(3600)
        );
        // Friday after the close, the next open is Monday, not Saturday: 64.5 local hours plus
        // the hour the clocks repeat on Sunday.
        assert_eq!(
            closed_for(&ttl, "2026-10-30T21:00:00Z"),
            Duration::from_secs(2 * 86_400 + 17 * 3600 + 30 * 60)
        );
    }

    #[test]
    fn crypto_follows_volatility() {
        let ttl = rules();
        let now = at("2026-03-07T12:00:00Z");
        assert_eq!(ttl.ttl("BTC-USD", Some(0.02), now), Duration::from_secs(2));
        assert_eq!(ttl.ttl("BTC-USD", Some(0.01), now), Duration::from_secs(30));
        assert_eq!(
            ttl.ttl("BTC-USD", Some(0.001), now),
            Duration::from_secs(30)
        );
        assert_eq!(ttl.ttl("BTC-USD", None, now), Duration::from_secs(2));
        assert_eq!(
            ttl.ttl("BTC-USD", Some(f64::NAN), now),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn the_tracker_measures_the_sample_deviation_of_log_returns() {
        let tracker = VolatilityTracker::new(3);
        tracker.record("BTC", 100.0);
        tracker.record("BTC", 101.0);
        assert_eq!(tracker.volatility("BTC"), None, "one return is not enough");
        for p in [100.0, 102.0, 99.0] {
            tracker.record("BTC", p);
        }
        // The window keeps the last 4 prices: 101, 100, 102, 99.
        let expected = realized_volatility([101.0, 100.0, 102.0, 99.0]).unwrap();
        let got = tracker.volatility("BTC").unwrap();
        assert!((got - expected).abs() < 1e-15);
        let r = [
            (100.0f64 / 101.0).ln(),
            (102.0f64 / 100.0).ln(),
            (99.0f64 / 102.0).ln(),
        ];
        let mean = r.iter().sum::<f64>() / 3.0;
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!((got - sd).abs() < 1e-15);
    }

    #[test]
    fn an_unknown_time_zone_is_a_config_error() {
        let err = AdaptiveTtl::from_config(&AdaptiveTtlConfig {
            sessions: vec![MarketSession {
                name: "X".into(),
                time_zone: "Mars/Olympus_Mons".into(),
                open_time: "09:30".into(),
                close_time: "16:00".into(),
                symbols: vec!["X".into()],
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("adaptive_ttl.sessions[0].time_zone")
        );
    }
}
