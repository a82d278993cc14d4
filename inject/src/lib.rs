//! Kubernetes sidecar injection for Weft: the injector (a pure function from a pod template to
//! the injected template, and back), its two doors — the `weft inject` stream and the mutating
//! admission webhook — and the manifests `weft install` renders.
#![forbid(unsafe_code)]

pub mod decision;
pub mod documents;
pub mod install;
pub mod names;
pub mod probes;
pub mod settings;
pub mod sidecar;
pub mod stream;
pub mod template;
pub mod webhook;
pub mod workloads;
pub mod yaml_emit;

pub use decision::{NamespaceInfo, OptIn};
pub use settings::InjectSettings;
pub use template::{InjectContext, Outcome, Report};
