//! Configuration files the keyserver's policy gives a node (`DATA/files/all/NAME`,
//! `DATA/files/GROUP/NAME`): the names both ends accept, and the size cap.

/// The largest policy file the keyserver sends (bigger ones are skipped with a warning).
pub const MAX_FILE_BYTES: usize = 64 * 1024;

/// Files that belong to the admission protocol itself: a policy file can never replace them,
/// and the node never removes them for being absent from a response.
pub const RESERVED: &[&str] = &["peers", "cgc", "keyserver.json"];

/// A plain file name: ASCII letters, digits, `-`, `_`, `.`, not starting with `.` (so no `..`,
/// no hidden or temporary files, no slashes).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["x.conf", "sup.toml", "peers", "a-b_c.1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "é", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
