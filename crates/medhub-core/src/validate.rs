//! Input validation rules shared by every entry point (REST, WebSocket, CLI).

use crate::error::DomainError;

/// Longest conversation title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// Longest username, in bytes (usernames are ASCII).
pub const MAX_USERNAME_LEN: usize = 64;

/// Checks a message body: not blank, at most `max_bytes` of UTF-8, and no control characters
/// other than tab, line feed and carriage return. The body is plain text with the Markdown
/// subset described in `docs/protocol.md`; the server stores it verbatim and never renders it.
pub fn message_body(body: &str, max_bytes: usize) -> Result<(), DomainError> {
    if body.len() > max_bytes {
        return Err(DomainError::BodyTooLarge { max: max_bytes });
    }
    if body.trim().is_empty() {
        return Err(DomainError::EmptyBody);
    }
    if body.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(DomainError::BodyControlCharacter);
    }
    Ok(())
}

/// Normalizes an optional title: trimmed, empty becomes `None`, bounded, no control characters.
pub fn title(raw: Option<&str>) -> Result<Option<String>, DomainError> {
    let Some(raw) = raw else { return Ok(None) };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > MAX_TITLE_CHARS || trimmed.chars().any(char::is_control) {
        return Err(DomainError::InvalidTitle { max: MAX_TITLE_CHARS });
    }
    Ok(Some(trimmed.to_owned()))
}

/// Normalizes a username to lower case and checks it is 1-64 characters of `[a-z0-9._-]`.
pub fn username(raw: &str) -> Result<String, DomainError> {
    let lower = raw.trim().to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= MAX_USERNAME_LEN
        && lower.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(lower) } else { Err(DomainError::InvalidUsername) }
}

/// Checks a display name: trimmed, 1-128 characters, no control characters.
pub fn display_name(raw: &str) -> Result<String, DomainError> {
    let trimmed = raw.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > MAX_DISPLAY_NAME_CHARS || trimmed.chars().any(char::is_control) {
        return Err(DomainError::InvalidDisplayName);
    }
    Ok(trimmed.to_owned())
}

/// Checks a password's length in characters, following NIST SP 800-63B: a minimum and a
/// generous maximum, no composition rules.
pub fn password(raw: &str, min: usize, max: usize) -> Result<(), DomainError> {
    let count = raw.chars().count();
    if count < min || count > max {
        return Err(DomainError::PasswordLength { min, max });
    }
    Ok(())
}

/// Minutes accepted in a `call_back` acknowledgement.
pub fn call_back_minutes(minutes: u16) -> Result<(), DomainError> {
    if (1..=1440).contains(&minutes) { Ok(()) } else { Err(DomainError::InvalidCallBackMinutes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_rules() {
        assert_eq!(message_body("hello", 16), Ok(()));
        assert_eq!(message_body("line one\nline two\ttab\r\n", 64), Ok(()));
        assert_eq!(message_body("", 16), Err(DomainError::EmptyBody));
        assert_eq!(message_body(" \n\t ", 16), Err(DomainError::EmptyBody));
        assert_eq!(message_body("x".repeat(17).as_str(), 16), Err(DomainError::BodyTooLarge { max: 16 }));
        // The limit counts bytes, not characters: 6 two-byte characters are 12 bytes.
        assert_eq!(message_body("éééééé", 11), Err(DomainError::BodyTooLarge { max: 11 }));
        assert_eq!(message_body("éééééé", 12), Ok(()));
        assert_eq!(message_body("a\u{0}b", 16), Err(DomainError::BodyControlCharacter));
        assert_eq!(message_body("a\u{1b}[31m", 16), Err(DomainError::BodyControlCharacter));
        assert_eq!(message_body("a\u{85}", 16), Err(DomainError::BodyControlCharacter));
    }

    #[test]
    fn title_rules() {
        assert_eq!(title(None), Ok(None));
        assert_eq!(title(Some("  ")), Ok(None));
        assert_eq!(title(Some(" Ward 7 ")), Ok(Some("Ward 7".into())));
        assert!(title(Some(&"t".repeat(201))).is_err());
        assert!(title(Some("a\u{7}")).is_err());
    }

    #[test]
    fn username_rules() {
        assert_eq!(username(" Dr.House "), Ok("dr.house".into()));
        assert_eq!(username("nurse_7-b"), Ok("nurse_7-b".into()));
        assert_eq!(username(""), Err(DomainError::InvalidUsername));
        assert_eq!(username("a b"), Err(DomainError::InvalidUsername));
        assert_eq!(username("ü"), Err(DomainError::InvalidUsername));
        assert_eq!(username(&"a".repeat(65)), Err(DomainError::InvalidUsername));
    }

    #[test]
    fn password_counts_characters() {
        assert!(password("ünïcödé-pässwörd", 12, 256).is_ok());
        assert_eq!(password("short", 12, 256), Err(DomainError::PasswordLength { min: 12, max: 256 }));
    }

    #[test]
    fn call_back_bounds() {
        assert!(call_back_minutes(0).is_err());
        assert!(call_back_minutes(1).is_ok());
        assert!(call_back_minutes(1440).is_ok());
        assert!(call_back_minutes(1441).is_err());
    }
}
