//! Service names: a service is always (namespace, name), written `NS/NAME`. `default/bar` and
//! `evil/bar` are two services; a bare `NAME` is read in a namespace the caller supplies (the mesh
//! file's `default`, a proxy's own namespace for its `--upstream`s).

use std::fmt;

use crate::spiffe::{validate_segment, SpiffeError};

/// A service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    namespace: String,
    name: String,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> Result<Self, SpiffeError> {
        validate_segment("namespace", namespace)?;
        validate_segment("service name", name)?;
        Ok(Self { namespace: namespace.to_string(), name: name.to_string() })
    }

    /// `NS/NAME`, or a bare `NAME` in `default_namespace`.
    pub fn parse(s: &str, default_namespace: &str) -> Result<Self, SpiffeError> {
        match s.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Self::new(default_namespace, s),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_take_the_default_namespace() {
        let k = ServiceKey::parse("bar", "shop").unwrap();
        assert_eq!((k.namespace(), k.name()), ("shop", "bar"));
        assert_eq!(k.to_string(), "shop/bar");
        let k = ServiceKey::parse("evil/bar", "default").unwrap();
        assert_eq!(k.to_string(), "evil/bar");
        assert_ne!(k, ServiceKey::parse("bar", "default").unwrap());
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in ["", "/bar", "ns/", "a/b/c", "b ar", "ns/..", "Ünï"] {
            assert!(ServiceKey::parse(bad, "default").is_err(), "{bad:?}");
        }
    }
}
