//! Writes YAML the way `kubectl` reads it: block style, two-space indents, and every string that
//! a YAML 1.1 reader (kubectl's) could take for something else — `yes`, `on`, `8080`, `1:30` —
//! quoted. Ours rather than the serializer's, so the output is byte-stable and safe to apply.

use serde_norway::Value;

/// One YAML document (no `---`), ending with a newline.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Mapping(m) if !m.is_empty() => write_mapping(&mut out, m, 0),
        Value::Sequence(s) if !s.is_empty() => write_sequence(&mut out, s, 0),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_mapping(out: &mut String, m: &serde_norway::Mapping, level: usize) {
    for (k, v) in m {
        indent(out, level);
        out.push_str(&key(k));
        out.push(':');
        write_value_after_key(out, v, level);
    }
}

/// A value after `key:` — inline for scalars and empty collections, else on the next lines.
/// Sequences under a key sit at the key's indent, as kubectl writes them.
fn write_value_after_key(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            write_mapping(out, m, level + 2);
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            write_sequence(out, s, level);
        }
        Value::Tagged(t) => write_value_after_key(out, &t.value, level),
        other => {
            out.push(' ');
            out.push_str(&scalar(other, level + 2));
            out.push('\n');
        }
    }
}

fn write_sequence(out: &mut String, s: &[Value], level: usize) {
    for item in s {
        indent(out, level);
        out.push('-');
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                // The first key shares the dash's line; the rest line up under it.
                let mut first = true;
                for (k, v) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    out.push_str(&key(k));
                    out.push(':');
                    write_value_after_key(out, v, level + 2);
                }
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push('\n');
                write_sequence(out, inner, level + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, level + 2));
                out.push('\n');
            }
        }
    }
}

fn key(k: &Value) -> String {
    match k {
        Value::String(s) => string(s, 0, false),
        other => scalar(other, 0),
    }
}

fn scalar(v: &Value, level: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, level, true),
        Value::Sequence(_) => "[]".into(),
        Value::Mapping(_) => "{}".into(),
        Value::Tagged(t) => scalar(&t.value, level),
    }
}

/// YAML 1.1 words that are not strings to a 1.1 reader (booleans and nulls).
const RESERVED: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on",
    "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
];

/// Whether `s` reads back as this very string, unquoted, in both YAML 1.1 and 1.2.
fn plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else { return false };
    let second = chars.next();
    if RESERVED.contains(&s) || s.ends_with(' ') || s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || " _./:=+-@()$".contains(c)) {
        return false;
    }
    match first {
        // A letter, `_`, `/` or `$` cannot start a number, date, time or indicator.
        c if c.is_ascii_alphabetic() || "_/$".contains(c) => true,
        // `-x`, `--flag`: not a number, not a sequence entry (no space after the dash).
        '-' => second.is_some_and(|c| c.is_ascii_alphabetic() || c == '-') && !s.starts_with("---"),
        // Quantities like `10m` or `64Mi`: digits and letters ending in a letter no number ends
        // with (hexadecimal digits, exponents and radix marks excluded).
        c if c.is_ascii_digit() => {
            s.chars().all(|c| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphabetic() && !"abcdefABCDEFxXoO".contains(c))
        }
        _ => false,
    }
}

fn string(s: &str, level: usize, allow_block: bool) -> String {
    if plain_safe(s) {
        return s.to_string();
    }
    let printable = |c: char| !c.is_control() || c == '\n';
    if allow_block && s.contains('\n') && s.chars().all(printable) && block_safe(s) {
        return block_literal(s, level);
    }
    if s.chars().all(|c| !c.is_control()) && !s.contains('\'') {
        return format!("'{s}'");
    }
    // JSON string syntax is YAML's double-quoted style.
    serde_json::to_string(s).unwrap_or_default()
}

/// A literal block keeps the text exactly when no line starts with a space (the indent would be
/// ambiguous) and no line ends with one (some readers strip it).
fn block_safe(s: &str) -> bool {
    let body = s.trim_end_matches('\n');
    !body.is_empty() && body.lines().all(|l| !l.starts_with(' ') && !l.ends_with(' ') && !l.contains('\t'))
}

fn block_literal(s: &str, level: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let mut out = format!("|{chomp}");
    let body = if trailing > 1 { &s[..s.len() - 1] } else { s.trim_end_matches('\n') };
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(&mut out, level);
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &Value) {
        let text = to_yaml(v);
        let back: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(&back, v, "{text}");
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "yes", "on", "8080", "1:30", "-1", "", " lead", "a: b", "x #y", "0x1f", "1e3", ".5", "~", "'q'", "---x",
            "2E",
        ] {
            let out = to_yaml(&Value::String(s.into()));
            assert!(out.starts_with('\'') || out.starts_with('"'), "{s:?} → {out}");
            roundtrip(&Value::String(s.into()));
        }
        for s in ["weft:playground", "10m", "64Mi", "--proxy-uid", "$(WEFT_POD_NAME)", "/ready"] {
            assert_eq!(to_yaml(&Value::String(s.into())), format!("{s}\n"));
            roundtrip(&Value::String(s.into()));
        }
    }

    #[test]
    fn documents_round_trip() {
        let text = "a: 1\nb:\n- x: '1'\n  'y': |\n    line1\n    line2\n- z\n- []\n- {}\nc:\n  q:\n  -\n    - 1\n    - 2\n  \
                    pem: |\n    -----BEGIN X-----\n    abc\n    -----END X-----\nd: \"tab\\there\"\ne: |-\n  no newline\n  end\n\
                    f: |+\n  two\n\n";
        let v: Value = serde_norway::from_str(text).unwrap();
        roundtrip(&v);
        assert_eq!(to_yaml(&v), text);
    }
}
