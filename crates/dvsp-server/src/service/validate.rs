//! Checks of the strings a request brings (ids, names, cursors) before they reach the store:
//! 422 (gRPC INVALID_ARGUMENT) the same on SQLite and PostgreSQL.
use crate::error::ApiError;

/// Longest subject name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// Subject and template ids: 1-128 characters of `A-Z a-z 0-9 - _ . @`, not `.` or `..`
/// (they would be path segments of their own in a URL).
pub fn valid_id(what: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "{what}: 1-128 characters of A-Z a-z 0-9 - _ . @ (not `.` or `..`)"
        )))
    }
}

/// The `after` cursor of a listing: a subject id, or nothing.
pub fn valid_after(after: Option<&str>) -> Result<(), ApiError> {
    after.map_or(Ok(()), |a| valid_id("after", a))
}

/// A subject-id prefix to search by: at most 128 characters of the id alphabet (empty: all).
pub fn valid_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.len() <= 128
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(
            "prefix: at most 128 characters of A-Z a-z 0-9 - _ . @".into(),
        ))
    }
}

/// Characters a name may not hold: control characters (NUL, newlines, escapes: Unicode Cc)
/// and the bidirectional overrides and isolates that reorder how text around them is shown
/// (U+202A-U+202E, U+2066-U+2069).
fn forbidden_in_name(c: char) -> bool {
    c.is_control()
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// A subject name: at most 256 characters, none of them control or bidi-override characters.
pub fn valid_name(name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "name: {n} characters; at most {MAX_NAME_CHARS}"
        )));
    }
    if let Some(c) = name.chars().find(|c| forbidden_in_name(*c)) {
        return Err(ApiError::Unprocessable(format!(
            "name: U+{:04X} is not allowed (control and bidirectional-override characters)",
            c as u32
        )));
    }
    Ok(())
}
