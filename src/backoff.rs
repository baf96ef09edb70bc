//! Capped exponential backoff with jitter, for everything that retries: the scheduler's
//! failed units and the commit-status poster. No I/O; the clock only feeds the jitter.

use std::time::Duration;

/// Capped exponential backoff with ±20% jitter; `failures` counts from 1.
pub fn backoff(base: Duration, cap: Duration, failures: u32) -> Duration {
    let exp = base.saturating_mul(
        1u32.checked_shl(failures.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX),
    );
    let d = exp.min(cap);
    // Cheap jitter without a random number generator: the clock's nanoseconds.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0;
    d.mul_f64(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        let b1 = backoff(base, cap, 1);
        assert!(
            b1 >= Duration::from_millis(1600) && b1 <= Duration::from_millis(2400),
            "{b1:?}"
        );
        let b3 = backoff(base, cap, 3);
        assert!(
            b3 >= Duration::from_millis(6400) && b3 <= Duration::from_millis(9600),
            "{b3:?}"
        );
        assert!(backoff(base, cap, 30) <= cap);
        assert!(backoff(base, cap, 30) >= Duration::from_secs(48));
    }
}
