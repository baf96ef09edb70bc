//! Durations as people write them in the config file: `30s`, `5m`, `1h 30m`.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A duration written the way people write it: `30s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match humantime::parse_duration(s.trim()) {
            // Every duration here is an interval, a timeout or a lease: zero would poll
            // without pause, time out at once, or stop the resync timer.
            Ok(d) if d.is_zero() => Err(de::Error::custom(format!(
                "duration {s:?} must be longer than 0s"
            ))),
            Ok(d) => Ok(HumanDuration(d)),
            Err(e) => Err(de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write it like \"30s\", \"5m\" or \"1h 30m\""
            ))),
        }
    }
}
