//! The list of revoked join-token ids, a text file in the CA folder (`revoked-tokens`): one id per
//! line, then an optional `#` comment. `weft ca revoke` appends to it; controllers watch it (it
//! survives restarts, and several controllers can share it) and refuse first certificates,
//! renewals and registrations whose token id is listed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// The file's name inside the CA folder.
pub const REVOCATION_FILE: &str = "revoked-tokens";

/// Revoked token ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationList {
    ids: BTreeSet<String>,
}

impl RevocationList {
    /// Parses the file's text; a line that is neither an id nor a comment is an error (a typo must
    /// not silently revoke nothing).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ids = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if !crate::token::is_id(entry) {
                return Err(format!("line {}: {entry:?} is not a token id (16 lowercase hex digits)", n + 1));
            }
            ids.insert(entry.to_string());
        }
        Ok(Self { ids })
    }

    /// Reads `DIR/revoked-tokens`; a missing file is an empty list.
    pub fn load(ca_dir: &Path) -> Result<Self, String> {
        let path = ca_dir.join(REVOCATION_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Appends `id` to `DIR/revoked-tokens` (creating it), with `note` as the line's comment.
pub fn revoke(ca_dir: &Path, id: &str, note: &str) -> Result<(), String> {
    if !crate::token::is_id(id) {
        return Err(format!("{id:?} is not a token id (16 lowercase hex digits)"));
    }
    let path = ca_dir.join(REVOCATION_FILE);
    let note: String = note.chars().filter(|c| !c.is_control()).collect();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{id}  # {note}").and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_comments_and_refuses_typos() {
        let l = RevocationList::parse("# revoked\n0123456789abcdef  # foo's token\n\nfedcba9876543210\n").unwrap();
        assert!(l.contains("0123456789abcdef") && l.contains("fedcba9876543210"));
        assert_eq!(l.len(), 2);
        assert!(RevocationList::parse("0123456789abcdeg\n").is_err());
        assert!(RevocationList::parse("0123456789ABCDEF\n").is_err());
    }

    #[test]
    fn revoke_appends_and_survives_reloads() {
        let dir = std::env::temp_dir().join(format!("weft-revoke-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(RevocationList::load(&dir).unwrap().is_empty());
        revoke(&dir, "0123456789abcdef", "test\nline").unwrap();
        revoke(&dir, "1123456789abcdef", "second").unwrap();
        let l = RevocationList::load(&dir).unwrap();
        assert!(l.contains("0123456789abcdef") && l.contains("1123456789abcdef"));
        assert!(revoke(&dir, "nope", "").is_err());
    }
}
