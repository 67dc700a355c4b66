//! `POST /exportData` with a JSON body `{"from":"YYYY-MM-DD","to":"YYYY-MM-DD"}`.
//!
//! The body is read as Gin's `ShouldBindJSON` read it (Go's `encoding/json`
//! decoder, whatever the content type): the first JSON value counts; keys match
//! `from` and `to` case-insensitively and the last duplicate wins; `null` leaves a
//! field as it was; a value of another type is an error, reported once the whole
//! value was read. A missing, empty or mistyped `from`/`to` is `invalid_json`.
//! The dates themselves are validated by the daemon, in the original's order
//! (`invalid_from_date`, `invalid_to_date`, `invalid_date_range`).

use super::reply::{self, Routes};
use super::Shared;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Largest body read (far above any real request; Go had no limit).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub async fn export_data(
    State(app): State<Shared>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rate = match app.rate(&uri) {
        Ok(r) => r,
        Err(bad) => return bad.response(),
    };
    let Some((from, to)) = body.ok().as_deref().and_then(parse_range) else {
        return reply::error(StatusCode::BAD_REQUEST, "invalid_json");
    };
    match app.pool.submit_export(&from, &to, rate).await {
        Ok(info) => super::job_created(&info),
        Err(e) => reply::client_error(Routes::Legacy, &e),
    }
}

/// `from` and `to` of the body, or `None` for `invalid_json`.
pub fn parse_range(body: &[u8]) -> Option<(String, String)> {
    // Go replaces invalid UTF-8 inside strings with U+FFFD instead of failing.
    let text = String::from_utf8_lossy(body);
    let mut de = serde_json::Deserializer::from_str(&text);
    // Only the first value is read; what follows it is ignored, as Go's Decoder does.
    let range = Range::deserialize(&mut de).ok()?;
    if range.type_error {
        return None;
    }
    match (range.from, range.to) {
        (Some(from), Some(to)) if !from.is_empty() && !to.is_empty() => Some((from, to)),
        _ => None,
    }
}

#[derive(Default)]
struct Range {
    from: Option<String>,
    to: Option<String>,
    type_error: bool,
}

impl<'de> Deserialize<'de> for Range {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Range, D::Error> {
        d.deserialize_any(RangeVisitor)
    }
}

struct RangeVisitor;

impl<'de> Visitor<'de> for RangeVisitor {
    type Value = Range;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    /// `null` decodes into a struct without error, leaving every field empty.
    fn visit_unit<E: de::Error>(self) -> Result<Range, E> {
        Ok(Range::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Range, A::Error> {
        let mut range = Range::default();
        while let Some(key) = map.next_key::<String>()? {
            let slot = if key.eq_ignore_ascii_case("from") {
                &mut range.from
            } else if key.eq_ignore_ascii_case("to") {
                &mut range.to
            } else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            match map.next_value::<Loose>()? {
                Loose::Str(s) => *slot = Some(s),
                Loose::Null => {}
                Loose::Other => range.type_error = true,
            }
        }
        Ok(range)
    }
}

/// A field's value: a string, `null`, or anything else (a type error).
enum Loose {
    Str(String),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
        Ok(Loose::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose, E> {
        Ok(Loose::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose, E> {
        Ok(Loose::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose, E> {
        Ok(Loose::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose, E> {
        Ok(Loose::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    fn ok(body: &str) -> (String, String) {
        parse_range(body.as_bytes()).unwrap_or_else(|| panic!("{body:?} refused"))
    }

    fn refused(body: &str) {
        assert_eq!(parse_range(body.as_bytes()), None, "{body:?} accepted");
    }

    #[test]
    fn accepted() {
        let want = ("2020-01-01".to_string(), "2020-01-05".to_string());
        assert_eq!(ok(r#"{"from":"2020-01-01","to":"2020-01-05"}"#), want);
        assert_eq!(
            ok(r#" {"from":"2020-01-01","to":"2020-01-05","x":1} "#),
            want
        );
        assert_eq!(ok(r#"{"FROM":"2020-01-01","To":"2020-01-05"}"#), want);
        assert_eq!(
            ok(r#"{"from":"x","to":"2020-01-05","From":"2020-01-01"}"#),
            want
        );
        assert_eq!(
            ok(r#"{"from":"2020-01-01","from":null,"to":"2020-01-05"}"#),
            want
        );
        assert_eq!(
            ok(r#"{"x":{"y":[1,2,{"z":null}]},"from":"2020-01-01","to":"2020-01-05"}"#),
            want
        );
        assert_eq!(ok(r#"{"\u0066rom":"2020-01-01","to":"2020-01-05"}"#), want);
        // The first value counts; what follows is not read.
        assert_eq!(
            ok(r#"{"from":"2020-01-01","to":"2020-01-05"} trailing"#),
            want
        );
        // Dates are the daemon's business.
        assert_eq!(
            ok(r#"{"from":"x","to":"y"}"#),
            ("x".to_string(), "y".to_string())
        );
    }

    #[test]
    fn invalid_json() {
        for body in [
            "",
            "not json",
            "null",
            "[]",
            "\"2020-01-01\"",
            "{}",
            r#"{"from":"2020-01-01"}"#,
            r#"{"to":"2020-01-01"}"#,
            r#"{"from":"","to":"2020-01-02"}"#,
            r#"{"from":1,"to":2}"#,
            r#"{"from":"2020-01-01","to":"2020-01-02","from":1}"#,
            r#"{"from":["2020-01-01"],"to":"2020-01-02"}"#,
            r#"{"from":"2020-01-01","#,
            r#"{"from":"2020-01-01","to":"2020-01-02""#,
        ] {
            refused(body);
        }
    }
}
