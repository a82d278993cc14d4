//! `weft inject`, `weft uninject` and `weft install`: the command-line door to the injector and
//! the control plane's manifests. Only YAML goes to stdout; what happened to each object goes to
//! stderr.

mod install;
mod settings_args;
mod streams;

pub use install::{run as install, InstallArgs};
pub use streams::{inject, uninject, InjectArgs, UninjectArgs};
