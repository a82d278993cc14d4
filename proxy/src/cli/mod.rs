//! The command line: the proxy's flags (with their environment twins) and its helper
//! subcommands, each in its own module: `weft-proxy init`, `await`, `probe`.

pub mod args;
pub mod await_cmd;
pub mod init;
pub mod probe;
