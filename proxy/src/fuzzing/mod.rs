//! The checks the fuzz targets in `fuzz/` run, kept here so that the ordinary test run replays
//! every corpus input through the same code (see `replay` below). Not an API: hidden from docs.
//! Each check panics when an invariant breaks and returns quietly otherwise.

pub mod chunked;
pub mod deadline;
pub mod detect;
pub mod discovery;
pub mod headers;

#[cfg(test)]
mod replay;
