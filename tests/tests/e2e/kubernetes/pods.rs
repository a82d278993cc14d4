//! Injected pods run in Docker (filled in below).
