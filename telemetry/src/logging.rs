//! Logging setup: `tracing` to stderr (text or JSON), with a level that can be changed at run time
//! from the admin port.

use std::sync::Arc;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, Registry};

type Handle = reload::Handle<Targets, Registry>;

/// Changes the log filter of a running process.
#[derive(Clone)]
pub struct LogLevel {
    handle: Option<Arc<Handle>>,
    current: Arc<std::sync::Mutex<String>>,
}

impl LogLevel {
    /// A handle that changes nothing (when logging was set up elsewhere, e.g. in tests).
    pub fn detached(level: &str) -> Self {
        Self { handle: None, current: Arc::new(std::sync::Mutex::new(level.to_string())) }
    }

    pub fn get(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets a new filter (`info`, `weft_proxy=debug,info`, ...); an invalid one is refused.
    pub fn set(&self, filter: &str) -> Result<(), String> {
        let parsed = parse(filter)?;
        if let Some(h) = &self.handle {
            h.reload(parsed).map_err(|e| e.to_string())?;
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = filter.trim().to_string();
        Ok(())
    }
}

/// A filter like `info` or `weft_proxy=debug,info` (targets and levels; no regex engine needed).
fn parse(filter: &str) -> Result<Targets, String> {
    filter.trim().parse::<Targets>().map_err(|e| format!("invalid log level {filter:?}: {e}"))
}

/// Installs the global subscriber. `level` is a filter such as `info` or `weft_proxy=debug,info`;
/// `json` selects JSON lines.
pub fn init(level: &str, json: bool) -> Result<LogLevel, String> {
    let filter = parse(level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // Colour only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = if json {
        registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init()
    } else {
        registry.with(fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi)).try_init()
    };
    result.map_err(|e| e.to_string())?;
    Ok(LogLevel { handle: Some(Arc::new(handle)), current: Arc::new(std::sync::Mutex::new(level.to_string())) })
}
