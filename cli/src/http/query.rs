//! Query strings read the way Go's `url.ParseQuery` reads them (what Gin's
//! `c.Query` sees): pairs split on `&`; a pair holding `;` or a bad `%` escape is
//! dropped; `+` is a space; the first value of a key wins. Decoding allocates only
//! when a value holds an escape.

use std::borrow::Cow;

/// The first value of `key` in the raw query `raw`, or `None` if absent.
pub fn first<'a>(raw: Option<&'a str>, key: &str) -> Option<Cow<'a, str>> {
    let raw = raw?;
    for pair in raw.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(k) = unescape(k) else { continue };
        if k != key {
            continue;
        }
        if let Some(v) = unescape(v) {
            return Some(v);
        }
    }
    None
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a malformed escape is an
/// error. Bytes that do not form UTF-8 become U+FFFD.
fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str, key: &str) -> Option<String> {
        first(Some(raw), key).map(Cow::into_owned)
    }

    #[test]
    fn like_go() {
        assert_eq!(q("id=x&action=stop", "id").as_deref(), Some("x"));
        assert_eq!(q("id=x&action=stop", "action").as_deref(), Some("stop"));
        assert_eq!(q("action=stop", "id"), None);
        assert_eq!(q("id=&action=stop", "id").as_deref(), Some(""));
        assert_eq!(q("id", "id").as_deref(), Some(""));
        assert_eq!(q("id=%20%09%20", "id").as_deref(), Some(" \t "));
        assert_eq!(q("id=a+b", "id").as_deref(), Some("a b"));
        assert_eq!(q("id=1&id=2", "id").as_deref(), Some("1"));
        // Dropped pairs: a bad escape, a semicolon; the next good one counts.
        assert_eq!(q("id=%zz&id=2", "id").as_deref(), Some("2"));
        assert_eq!(q("id=1;x=2", "id"), None);
        assert_eq!(q("%69d=k", "id").as_deref(), Some("k"));
        assert_eq!(q("id=%ff", "id").as_deref(), Some("\u{fffd}"));
        assert_eq!(first(None, "id"), None);
    }
}
