//! `weft inject`, `weft uninject` and `weft install`: the command-line door to the injector and
//! the control plane's manifests; and the cluster half of `weft check`. Only YAML goes to stdout; what happened to each object goes to
//! stderr.

pub mod cluster_check;
mod install;
mod settings_args;
mod streams;

pub use install::{run as install, InstallArgs};
pub use streams::{inject, uninject, InjectArgs, UninjectArgs};
