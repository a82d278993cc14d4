//! Rate-limited log lines for events a remote party can cause at will (refused registrations,
//! unauthorized callers, failed handshakes): at most a few lines per kind per window, then one line
//! saying how many were suppressed, so an attacker cannot fill the disk or slow the proxy through
//! its log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind per window, at most.
pub const LINES_PER_WINDOW: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(10);

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

static WINDOWS: Mutex<Option<HashMap<&'static str, Window>>> = Mutex::new(None);

/// Whether a line of `kind` may be written now; when a window closes with lines suppressed, the
/// count is returned too (to be reported with the next line).
fn admit(kind: &'static str, now: Instant) -> (bool, u64) {
    let mut guard = WINDOWS.lock().unwrap_or_else(|e| e.into_inner());
    let windows = guard.get_or_insert_with(HashMap::new);
    let w = windows.entry(kind).or_insert(Window { started: now, logged: 0, suppressed: 0 });
    let mut reported = 0;
    if now.duration_since(w.started) >= WINDOW {
        reported = w.suppressed;
        *w = Window { started: now, logged: 0, suppressed: 0 };
    }
    if w.logged < LINES_PER_WINDOW {
        w.logged += 1;
        (true, reported)
    } else {
        w.suppressed += 1;
        (false, reported)
    }
}

/// A warning of `kind`, rate-limited; `message` is only built when the line is written.
pub fn warn(kind: &'static str, message: impl FnOnce() -> String) {
    let (write, suppressed) = admit(kind, Instant::now());
    if write {
        if suppressed > 0 {
            tracing::warn!(kind, suppressed, "{} (and {suppressed} similar lines suppressed)", message());
        } else {
            tracing::warn!(kind, "{}", message());
        }
    }
}

/// A debug line of `kind`, rate-limited like [`warn`].
pub fn debug(kind: &'static str, message: impl FnOnce() -> String) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let (write, suppressed) = admit(kind, Instant::now());
    if write {
        tracing::debug!(kind, suppressed, "{}", message());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_window_and_the_rest_counted() {
        let t0 = Instant::now();
        let written = (0..1000).filter(|_| admit("test-burst", t0).0).count();
        assert_eq!(written, LINES_PER_WINDOW as usize);
        let (write, suppressed) = admit("test-burst", t0 + WINDOW);
        assert!(write);
        assert_eq!(suppressed, 1000 - u64::from(LINES_PER_WINDOW));
        // Kinds are counted apart.
        assert!(admit("test-other", t0).0);
    }
}
