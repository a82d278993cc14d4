//! A YAML reader that collects every problem instead of stopping at the first: each accessor
//! records an error with the field's path, and unknown keys are reported when a map is finished.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use weft_proto::duration::parse_duration;

/// The problems found so far, each prefixed with the path of the field.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn add(&mut self, path: &str, msg: impl std::fmt::Display) {
        if path.is_empty() {
            self.0.push(msg.to_string());
        } else {
            self.0.push(format!("{path}: {msg}"));
        }
    }
}

/// A YAML mapping being read; remembers which keys were consumed.
pub struct Obj<'a> {
    pub path: String,
    map: &'a Mapping,
    seen: BTreeSet<String>,
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

impl<'a> Obj<'a> {
    /// Reads `v` as a map; records an error and returns None if it is not one.
    pub fn new(path: &str, v: &'a Value, p: &mut Problems) -> Option<Self> {
        match v {
            Value::Mapping(map) => Some(Self { path: path.to_string(), map, seen: BTreeSet::new() }),
            other => {
                p.add(path, format!("expected a map, found {}", type_name(other)));
                None
            }
        }
    }

    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value at `key` (null counts as absent).
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn str(&mut self, key: &str, p: &mut Problems) -> Option<String> {
        let path = self.child_path(key);
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                p.add(&path, format!("expected a string, found {}", type_name(other)));
                None
            }
        }
    }

    pub fn u64(&mut self, key: &str, p: &mut Problems) -> Option<u64> {
        let path = self.child_path(key);
        match self.get(key)? {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            other => {
                p.add(&path, format!("expected a non-negative integer, found {}", describe(other)));
                None
            }
        }
    }

    /// An integer within `range`.
    pub fn int_in(&mut self, key: &str, range: std::ops::RangeInclusive<u64>, p: &mut Problems) -> Option<u64> {
        let path = self.child_path(key);
        let v = self.u64(key, p)?;
        if !range.contains(&v) {
            p.add(&path, format!("{v} is out of range {}..={}", range.start(), range.end()));
            return None;
        }
        Some(v)
    }

    pub fn f64(&mut self, key: &str, p: &mut Problems) -> Option<f64> {
        let path = self.child_path(key);
        match self.get(key)? {
            Value::Number(n) if n.as_f64().is_some() => n.as_f64(),
            other => {
                p.add(&path, format!("expected a number, found {}", describe(other)));
                None
            }
        }
    }

    pub fn bool(&mut self, key: &str, p: &mut Problems) -> Option<bool> {
        let path = self.child_path(key);
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                p.add(&path, format!("expected true or false, found {}", describe(other)));
                None
            }
        }
    }

    pub fn duration(&mut self, key: &str, p: &mut Problems) -> Option<Duration> {
        let path = self.child_path(key);
        let s = self.str(key, p)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                p.add(&path, e);
                None
            }
        }
    }

    /// One of `allowed` (compared as written).
    pub fn choice(&mut self, key: &str, allowed: &[&str], p: &mut Problems) -> Option<String> {
        let path = self.child_path(key);
        let s = self.str(key, p)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            p.add(&path, format!("{s:?} is not one of {}", allowed.join(", ")));
            None
        }
    }

    pub fn obj(&mut self, key: &str, p: &mut Problems) -> Option<Obj<'a>> {
        let path = self.child_path(key);
        let v = self.get(key)?;
        Obj::new(&path, v, p)
    }

    pub fn list(&mut self, key: &str, p: &mut Problems) -> Option<&'a Vec<Value>> {
        let path = self.child_path(key);
        match self.get(key)? {
            Value::Sequence(s) => Some(s),
            other => {
                p.add(&path, format!("expected a list, found {}", type_name(other)));
                None
            }
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, key: &str, p: &mut Problems) -> Option<Vec<String>> {
        let path = self.child_path(key);
        let list = self.list(key, p)?;
        let mut out = Vec::new();
        for (i, v) in list.iter().enumerate() {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                other => p.add(&format!("{path}[{i}]"), format!("expected a string, found {}", type_name(other))),
            }
        }
        Some(out)
    }

    /// The map's entries as (key, value), for maps keyed by name.
    pub fn entries(&self) -> impl Iterator<Item = (String, &'a Value)> + 'a {
        self.map.iter().map(|(k, v)| (key_string(k), v))
    }

    /// Reports every key that no accessor asked for.
    pub fn finish(self, p: &mut Problems) {
        for k in self.map.keys() {
            let k = key_string(k);
            if !self.seen.contains(&k) {
                p.add(&self.child_path(&k), "unknown field");
            }
        }
    }
}

fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("<{}>", type_name(other)),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}
