//! The control plane client, on its own current-thread runtime: the connection to the controller,
//! certificate issuance and rotation, and the discovery stream.

pub mod connect;
pub mod discovery;
pub mod identity;
