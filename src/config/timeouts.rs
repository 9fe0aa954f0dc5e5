//! Deadlines from configured waits.

use std::time::{Duration, Instant};

/// Where a wait too long to represent ends: about 30 years from now, as
/// tokio does for its own far-future deadlines.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + wait`, or [`FAR_FUTURE`] from now when that cannot be represented:
/// a configured wait of `Duration::MAX` means no limit, never a panic.
pub(crate) fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait).unwrap_or(now + FAR_FUTURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_too_long_to_represent_ends_in_the_far_future() {
        let before = Instant::now();
        let d = deadline_after(Duration::MAX);
        assert!(d >= before + FAR_FUTURE);
        let d = deadline_after(Duration::from_secs(5));
        assert!(d >= before + Duration::from_secs(5) && d < before + Duration::from_secs(60));
    }
}
