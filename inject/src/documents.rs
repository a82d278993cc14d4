//! A YAML stream as its documents, each with its original text, so that what the injector leaves
//! alone is written back byte for byte and a multi-document file stays one.

use serde_norway::Value;

/// One document of a stream: the `---` line that opened it (if any) and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub marker: Option<String>,
    pub text: String,
}

impl Document {
    /// The parsed document (`Null` for an empty one, e.g. only comments).
    pub fn parse(&self) -> Result<Value, serde_norway::Error> {
        let text = match &self.marker {
            // Content on the marker line (`--- {a: 1}`) belongs to the document.
            Some(m) => format!("{}\n{}", m.trim_start_matches("---"), self.text),
            None => self.text.clone(),
        };
        serde_norway::from_str(&text)
    }
}

/// Whether `line` opens a new document: `---` at the start of a line, then nothing or a space.
/// A line like that cannot occur inside a scalar, so splitting on it is exact.
fn is_marker(line: &str) -> bool {
    let l = line.trim_end_matches(['\r', '\n']);
    l == "---" || l.starts_with("--- ") || l.starts_with("---\t")
}

/// Splits a stream into documents. `...` end markers stay in the text of their document.
pub fn split(input: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = Document { marker: None, text: String::new() };
    for line in input.split_inclusive('\n') {
        if is_marker(line) {
            if current.marker.is_some() || !current.text.is_empty() {
                docs.push(current);
            }
            current = Document { marker: Some(line.trim_end_matches(['\r', '\n']).to_string()), text: String::new() };
        } else {
            current.text.push_str(line);
        }
    }
    if current.marker.is_some() || !current.text.is_empty() {
        docs.push(current);
    }
    docs
}

/// Joins documents back into a stream; a document whose text was replaced gets a plain `---`.
pub fn join(docs: &[(Document, Option<String>)]) -> String {
    let mut out = String::new();
    for (i, (doc, replaced)) in docs.iter().enumerate() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        match replaced {
            Some(text) => {
                if i > 0 || doc.marker.is_some() {
                    out.push_str("---\n");
                }
                out.push_str(text);
            }
            None => {
                if let Some(m) = &doc.marker {
                    out.push_str(m);
                    out.push('\n');
                }
                out.push_str(&doc.text);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_are_exact() {
        for input in [
            "a: 1\n",
            "---\na: 1\n---\nb: 2\n",
            "# head\na: 1\n--- \nb: |\n  ---x\n  y\n---\n# only a comment\n",
            "a: 1\n---\n",
            "a: 1",
        ] {
            let docs = split(input);
            let kept: Vec<_> = docs.into_iter().map(|d| (d, None)).collect();
            assert_eq!(join(&kept), input);
        }
        let docs = split("a: 1\n---\nb: 2\n---\n# c\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].parse().unwrap()["b"], Value::from(2));
        assert_eq!(docs[2].parse().unwrap(), Value::Null);
    }

    #[test]
    fn replaced_documents_get_a_plain_marker() {
        let docs = split("a: 1\n---\nb: 2\n");
        let out = join(&[(docs[0].clone(), Some("x: 1\n".into())), (docs[1].clone(), Some("y: 2\n".into()))]);
        assert_eq!(out, "x: 1\n---\ny: 2\n");
    }
}
