//! SigV4's percent-encoding rules: RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`) stay,
//! every other byte becomes `%XX` with upper-case hex. The same encoding writes AWS Query form
//! bodies. Decoding is strict: a request whose escapes do not decode is refused, never guessed.

use std::fmt::Write as _;

/// Percent-encodes `text` (its UTF-8 bytes); `/` stays literal when `keep_slash`, as in a
/// canonical URI.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Why a component did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// The decoded bytes are not UTF-8.
    #[error("decoded text is not valid UTF-8")]
    NotUtf8,
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Percent-decodes one component. `plus_is_space` follows the form encoding, where `+` is a
/// space; SigV4 canonicalisation decodes without it.
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Result<String, DecodeError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex_value);
                let lo = input.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(DecodeError::BadEscape);
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// `key=value&...` with both sides [`uri_encode`]d, in the order given: an AWS Query form body.
pub fn form_encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_rules() {
        assert_eq!(uri_encode("/a b/ü", true), "/a%20b/%C3%BC");
        assert_eq!(uri_encode("a/b~", false), "a%2Fb~");
        assert_eq!(uri_encode("a b+c/é~", false), "a%20b%2Bc%2F%C3%A9~");
        assert_eq!(
            form_encode([("Tags.member.1.Value", "a b&c=d/é")]),
            "Tags.member.1.Value=a%20b%26c%3Dd%2F%C3%A9"
        );
    }

    #[test]
    fn strict_decoding() {
        assert_eq!(percent_decode(b"a%20b+c", false).unwrap(), "a b+c");
        assert_eq!(percent_decode(b"a%20b+c", true).unwrap(), "a b c");
        assert_eq!(percent_decode(b"%C3%A9", false).unwrap(), "é");
        assert_eq!(percent_decode(b"%2", false), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode(b"%zz", false), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode(b"%FF", false), Err(DecodeError::NotUtf8));
    }
}
