//! Bounds checked on mesh-file text before the YAML parser sees it: its size and how deeply it
//! nests. The parser's cost grows faster than linearly with deep indentation (a few hundred KB of
//! nesting took seconds and hundreds of MB), and a real mesh file is a few KB, 10 levels deep.

/// The largest mesh file accepted.
pub const MAX_BYTES: usize = 1024 * 1024;
/// The deepest indentation (columns) accepted; a real file stays under 20.
pub const MAX_INDENT: usize = 256;
/// The deepest `[`/`{` nesting accepted.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Checks the text's shape; the error says which bound it broke.
pub fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_BYTES {
        return Err(format!("the mesh file is {} bytes; at most {MAX_BYTES} are accepted", text.len()));
    }
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if indent > MAX_INDENT {
            return Err(format!("line {}: indented {indent} columns; at most {MAX_INDENT} are accepted", n + 1));
        }
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (None, '#') => break,
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!("line {}: nested more than {MAX_FLOW_DEPTH} levels deep", n + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_files_pass() {
        check(
            "trust_domain: weft.local\nservices:\n  bar: {split: [{version: v1, weight: 1}]}  # [[[\n  x: \"[[[[\"\n",
        )
        .unwrap();
    }

    #[test]
    fn size_indentation_and_flow_depth_are_bounded() {
        assert!(check(&"#".repeat(MAX_BYTES + 1)).unwrap_err().contains("bytes"));
        let deep: String = (1..300).map(|i| format!("{}- \n", " ".repeat(i))).collect();
        assert!(check(&deep).unwrap_err().contains("indented"));
        let flow = format!("x: {}{}", "[".repeat(65), "]".repeat(65));
        assert!(check(&flow).unwrap_err().contains("nested"));
    }
}
