//! Hands memory back to the system after connections close. Each connection holds tens of KB while
//! it lives (hyper's buffers, its task); once a burst of them closes, glibc keeps the freed memory,
//! fragmented between longer-lived allocations, so a proxy that once held 2,000 connections stayed
//! at 70 MB for good. A trim (`weft_telemetry::memory`) returns those free pages; it runs on the
//! control runtime only after enough connections have closed, so a steady proxy never pays for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Connections closed since the process started (counted by the accept loop).
static CLOSED: AtomicU64 = AtomicU64::new(0);

/// How many closed connections make a trim worth its cost (a few milliseconds at most).
const CLOSED_BEFORE_TRIM: u64 = 256;
const CHECK_EVERY: Duration = Duration::from_secs(5);

pub(crate) fn connection_closed() {
    CLOSED.fetch_add(1, Ordering::Relaxed);
}

/// Whether enough connections closed since the last trim.
fn due(closed: u64, at_last_trim: u64) -> bool {
    closed.saturating_sub(at_last_trim) >= CLOSED_BEFORE_TRIM
}

/// Trims the allocator's free memory whenever enough connections have closed; runs for the life
/// of the process.
pub(crate) async fn trim_loop() {
    let mut at_last_trim = 0;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let closed = CLOSED.load(Ordering::Relaxed);
        if due(closed, at_last_trim) {
            at_last_trim = closed;
            weft_telemetry::memory::trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_only_after_enough_closed_connections() {
        assert!(!due(0, 0));
        assert!(!due(255, 0));
        assert!(due(256, 0));
        assert!(!due(400, 256));
        assert!(due(512, 256));
        assert!(!due(3, 10), "never underflows");
    }
}
