//! Identity and PKI shared by both planes: SPIFFE IDs, the CA, CSRs, join tokens, and rustls
//! client/server configs with SPIFFE verifiers.
#![forbid(unsafe_code)]

pub mod ca;
pub mod der;
/// The fuzz targets' checks (`fuzz/`), replayed over their corpora by the ordinary tests.
#[doc(hidden)]
pub mod fuzzing;
pub mod pem;
pub mod provenance;
pub mod revocation;
pub mod service;
pub mod spiffe;
pub mod tls;
pub mod token;
pub mod x509;

pub use ca::{CaError, CertificateAuthority, IssuedCert};
pub use service::ServiceKey;
pub use spiffe::{SpiffeError, SpiffeId};
pub use tls::{IdentityStore, TrustBundle};
