//! `weft inject` and `weft uninject` on a YAML stream: every document in order, the ones without
//! a pod template byte for byte as they came, the changed ones rewritten.

use crate::documents::{self, Document};
use crate::workloads::{self, Action, Line};
use crate::yaml_emit::to_yaml;

/// The new stream and what happened to each object.
#[derive(Debug)]
pub struct StreamResult {
    pub output: String,
    pub report: Vec<Line>,
}

/// Runs `action` over every document of `input`. A document that is not YAML fails the whole
/// stream: half an answer is worse than none in a pipeline.
pub fn run(input: &str, action: Action<'_>) -> Result<StreamResult, String> {
    let mut out: Vec<(Document, Option<String>)> = Vec::new();
    let mut report = Vec::new();
    for (i, doc) in documents::split(input).into_iter().enumerate() {
        let mut value = doc.parse().map_err(|e| format!("document {}: {e}", i + 1))?;
        let replaced = workloads::process(&mut value, action, &mut report)
            .then(|| format!("{}{}", leading_comments(&doc.text), to_yaml(&value)));
        out.push((doc, replaced));
    }
    Ok(StreamResult { output: documents::join(&out), report })
}

/// The comment lines a document starts with: kept when the document is rewritten (comments
/// further in are lost with the rewrite).
fn leading_comments(text: &str) -> String {
    text.split_inclusive('\n').take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#')).collect()
}
