//! Exponential back-off: one implementation for upstream retries (resilience.md), the record
//! queue's retries (recorder.md) and MCP reconnections (mcp.md).

use std::time::Duration;

/// How a delay is spread around its exponential base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Jitter {
    /// Exactly the base (MCP reconnections).
    #[cfg_attr(not(feature = "mcp"), allow(dead_code))]
    None,
    /// `base · (1 − j)`, j uniform in [0, 0.25): never longer than the base, so a server's
    /// cap on the wait is never exceeded (upstream retries).
    Down25,
    /// `base · j`, j uniform in [0.75, 1.25): ±25 % (record queue).
    Around25,
}

/// `min(initial · 2ⁿ, max)`, jittered.
pub(crate) fn delay(initial: Duration, max: Duration, n: u32, jitter: Jitter) -> Duration {
    let base = initial.saturating_mul(2u32.saturating_pow(n)).min(max);
    match jitter {
        Jitter::None => base,
        Jitter::Down25 => base.mul_f64(1.0 - rand::random_range(0.0..0.25)),
        Jitter::Around25 => base.mul_f64(rand::random_range(0.75..1.25)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_the_jitter() {
        let (i, m) = (Duration::from_millis(500), Duration::from_secs(8));
        for n in 0..40 {
            let base = i.saturating_mul(2u32.saturating_pow(n)).min(m);
            assert_eq!(delay(i, m, n, Jitter::None), base);
            let d = delay(i, m, n, Jitter::Down25);
            assert!(d <= base && d >= base.mul_f64(0.75), "{n}: {d:?}");
            let d = delay(i, m, n, Jitter::Around25);
            assert!(
                d < base.mul_f64(1.25) && d >= base.mul_f64(0.75),
                "{n}: {d:?}"
            );
        }
        assert_eq!(
            delay(Duration::MAX, Duration::MAX, u32::MAX, Jitter::None),
            Duration::MAX
        );
    }
}
