//! Parsing TTLs and intervals: plain seconds as the prototype took them (`3600`, `0.5`)
//! or human forms (`90s`, `1h`, `7d`, `1h 30m`). Zero, negative and non-finite values are
//! refused, since a zero TTL would expire everything up to "now". A daemon interval must
//! also be at least [`MIN_INTERVAL`] ([`parse_interval`]).

use std::time::Duration;

use crate::daemon::MIN_INTERVAL;

/// A duration that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Neither a number of seconds nor a human duration.
    #[error(
        "{input:?} is not a duration: use seconds (3600, 0.5) or a unit (90s, 15m, 1h, 7d): {reason}"
    )]
    Unparsable {
        /// What was given.
        input: String,
        /// Why it failed.
        reason: String,
    },
    /// Zero or negative.
    #[error("{input:?}: the duration must be greater than zero")]
    NotPositive {
        /// What was given.
        input: String,
    },
    /// Too large or not finite.
    #[error("{input:?}: the duration is out of range")]
    OutOfRange {
        /// What was given.
        input: String,
    },
    /// Positive, but shorter than the daemon allows between passes.
    #[error(
        "{input:?}: the interval must be at least {}, so the daemon does not run pass after pass",
        humantime::format_duration(*min)
    )]
    TooShort {
        /// What was given.
        input: String,
        /// The shortest interval allowed.
        min: Duration,
    },
}

/// Parses a positive duration: plain (possibly fractional) seconds, or a human form
/// understood by `humantime` (`90s`, `15m`, `1h`, `7d`, `2w`, `1h 30m`).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    let d = if let Ok(secs) = s.parse::<f64>() {
        if secs.is_nan() || secs.is_infinite() {
            return Err(DurationError::OutOfRange {
                input: input.into(),
            });
        }
        if secs <= 0.0 {
            return Err(DurationError::NotPositive {
                input: input.into(),
            });
        }
        Duration::try_from_secs_f64(secs).map_err(|_| DurationError::OutOfRange {
            input: input.into(),
        })?
    } else if s.starts_with('-') {
        return Err(DurationError::NotPositive {
            input: input.into(),
        });
    } else {
        humantime::parse_duration(s).map_err(|e| DurationError::Unparsable {
            input: input.into(),
            reason: e.to_string(),
        })?
    };
    if d.is_zero() {
        return Err(DurationError::NotPositive {
            input: input.into(),
        });
    }
    Ok(d)
}

/// Parses a daemon interval: a duration as for [`parse_duration`], at least
/// [`MIN_INTERVAL`] (10 ms).
pub fn parse_interval(input: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(input)?;
    if d < MIN_INTERVAL {
        return Err(DurationError::TooShort {
            input: input.into(),
            min: MIN_INTERVAL,
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_fractional_seconds() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 42 "), Ok(Duration::from_secs(42)));
    }

    #[test]
    fn human_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn zero_and_negative_are_refused() {
        for s in ["0", "0.0", "-1", "-0.5", "0s", "-1h", "0ms"] {
            assert!(
                matches!(parse_duration(s), Err(DurationError::NotPositive { .. })),
                "{s}: {:?}",
                parse_duration(s)
            );
        }
    }

    #[test]
    fn garbage_and_non_finite_are_refused() {
        assert!(matches!(
            parse_duration("soon"),
            Err(DurationError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_duration(""),
            Err(DurationError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_duration("1 fortnight"),
            Err(DurationError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_duration("inf"),
            Err(DurationError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("NaN"),
            Err(DurationError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("1e300"),
            Err(DurationError::OutOfRange { .. })
        ));
    }

    #[test]
    fn intervals_under_10ms_are_refused() {
        for s in ["1e-9", "0.001", "0.0099999", "9ms", "1ns", "9999us"] {
            let e = parse_interval(s).unwrap_err();
            assert!(matches!(e, DurationError::TooShort { .. }), "{s}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(s) && msg.contains("at least 10ms"), "{msg}");
        }
        assert_eq!(parse_interval("0.01"), Ok(MIN_INTERVAL));
        assert_eq!(parse_interval("10ms"), Ok(MIN_INTERVAL));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert!(matches!(
            parse_interval("0"),
            Err(DurationError::NotPositive { .. })
        ));
    }

    #[test]
    fn message_names_the_input_and_the_forms() {
        let msg = parse_duration("soon").unwrap_err().to_string();
        assert!(msg.contains("\"soon\"") && msg.contains("1h"), "{msg}");
        let msg = parse_duration("0").unwrap_err().to_string();
        assert!(msg.contains("greater than zero"), "{msg}");
    }
}
