//! The checks the fuzz targets in `fuzz/` run, kept here so that the ordinary test run replays
//! every corpus input through the same code. Not an API: hidden from docs. Each check panics
//! when an invariant breaks and returns quietly otherwise.

pub mod mesh;
pub mod session;
pub mod snapshot;

#[cfg(test)]
mod replay;
