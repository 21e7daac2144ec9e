//! `POST /publish/`: GRIP's publish body (Pushpin's control API), so that
//! a GRIP library's publisher pointed at sidecast works unchanged. Each
//! item becomes one event on its channel's topic, through the same log
//! (order, idempotency by the item's `id`, the cluster's Redis stream).
//!
//! A header or reason of an `http-response` goes on the wire of a held
//! response as it is, so each is checked here like a header the app sent:
//! no line breaks, no name that is not a token.

use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::body::{err, object, BodyError};
use super::fields::{IdempotencyKey, TopicName};
use crate::events::frame::{GripItem, GripResponse, NewEvent, StreamPart};
use crate::topic::Topic;

/// The body: `{"items": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    items: Vec<Map<String, Value>>,
}

/// One item; its formats are read one by one below (other formats, such
/// as `ws-message`, are not sidecast's and are left aside). They come in
/// `formats`, or beside `channel` (what Python's `pubcontrol` sends):
/// Pushpin takes both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemBody {
    channel: TopicName,
    id: Option<IdempotencyKey>,
    /// Accepted and not needed: sidecast orders items itself.
    #[serde(rename = "prev-id")]
    #[allow(dead_code)]
    prev_id: Option<String>,
    formats: Option<Map<String, Value>>,
    /// Pushpin passes it to its filters; sidecast has none.
    #[allow(dead_code)]
    meta: Option<Value>,
}

/// The formats GRIP defines (the names an item may carry beside
/// `channel`).
const FORMATS: [&str; 3] = ["http-stream", "http-response", "ws-message"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpStream {
    content: Option<String>,
    #[serde(rename = "content-bin")]
    content_bin: Option<Base64>,
    action: Option<StreamAction>,
    #[serde(rename = "content-filters", default)]
    _filters: NoFilters,
}

/// `content-filters`: sidecast frames an item once for every stream, so
/// it applies none; an empty list (what libraries send by default) is
/// accepted.
#[derive(Default)]
struct NoFilters;

impl<'de> Deserialize<'de> for NoFilters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        if list.is_empty() {
            Ok(NoFilters)
        } else {
            Err(serde::de::Error::custom(format!(
                "sidecast applies no content filters; found {list:?} (an item is framed once for every stream)"
            )))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum StreamAction {
    Close,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpResponse {
    code: Option<Code>,
    reason: Option<Reason>,
    headers: Option<Headers>,
    body: Option<String>,
    #[serde(rename = "body-bin")]
    body_bin: Option<Base64>,
    #[serde(rename = "content-filters", default)]
    _filters: NoFilters,
}

/// Bytes given as base64 text.
struct Base64(Vec<u8>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Base64)
            .map_err(|e| serde::de::Error::custom(format!("expected base64 text: {e}")))
    }
}

/// A status code from 200 to 599 (an interim status is no answer).
struct Code(u16);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        match u16::try_from(n) {
            Ok(c) if (200..=599).contains(&c) => Ok(Code(c)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a status code from 200 to 599, found {n}"
            ))),
        }
    }
}

/// A reason phrase: text without line breaks.
struct Reason(String);

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.chars().any(|c| c.is_control() && c != '\t') {
            return Err(serde::de::Error::custom(
                "expected a reason phrase without line breaks or control characters",
            ));
        }
        Ok(Reason(s))
    }
}

/// Response headers: an object, or a list of `[name, value]` pairs (which
/// can repeat a name).
struct Headers(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Map(Map<String, Value>),
            Pairs(Vec<(String, String)>),
        }
        let pairs = match Shape::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected an object of header names to values, or a list of [name, value] pairs",
            )
        })? {
            Shape::Map(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(serde::de::Error::custom(format!(
                        "header {k:?}: expected a string value"
                    ))),
                })
                .collect::<Result<Vec<_>, D::Error>>()?,
            Shape::Pairs(p) => p,
        };
        for (name, value) in &pairs {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(serde::de::Error::custom(format!(
                    "header name {name:?}: expected a token (letters, digits, '-' and the like)"
                )));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(serde::de::Error::custom(format!(
                    "header {name:?}: expected a value without line breaks or control characters"
                )));
            }
        }
        Ok(Headers(pairs))
    }
}

/// One format of an item, deserialized with its path in the body.
fn format<T: for<'de> Deserialize<'de>>(
    formats: &mut Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<Option<T>, BodyError> {
    match formats.remove(name) {
        None => Ok(None),
        Some(Value::Object(o)) => object(o, &format!("{at}.{name}.")).map(Some),
        Some(_) => Err(err(&format!("{at}.{name}"), "expected an object")),
    }
}

fn item(i: usize, mut o: Map<String, Value>) -> Result<NewEvent, BodyError> {
    let item_at = format!("items[{i}]");
    let beside: Map<String, Value> = FORMATS.iter().filter_map(|f| o.remove_entry(*f)).collect();
    let it: ItemBody = object(o, &format!("{item_at}."))?;
    let (mut formats, at) = match it.formats {
        Some(_) if !beside.is_empty() => {
            return Err(err(
                &item_at,
                "give the formats in formats or beside channel, not both",
            ))
        }
        Some(f) => (f, format!("{item_at}.formats")),
        None => (beside, item_at),
    };
    let stream = match format::<HttpStream>(&mut formats, "http-stream", &at)? {
        None => None,
        Some(s) => Some(match (s.content, s.content_bin, s.action) {
            (Some(c), None, None) => StreamPart::Content(c.into_bytes()),
            (None, Some(b), None) => StreamPart::Content(b.0),
            (None, None, Some(StreamAction::Close)) => StreamPart::Close,
            _ => {
                return Err(err(
                    &format!("{at}.http-stream"),
                    "expected one of content, content-bin or \"action\": \"close\"",
                ))
            }
        }),
    };
    let response = match format::<HttpResponse>(&mut formats, "http-response", &at)? {
        None => None,
        Some(r) => {
            let body = match (r.body, r.body_bin) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        &format!("{at}.http-response"),
                        "give body or body-bin, not both",
                    ))
                }
                (Some(b), None) => b.into_bytes(),
                (None, Some(b)) => b.0,
                (None, None) => Vec::new(),
            };
            Some(Arc::new(GripResponse {
                code: r.code.map_or(200, |c| c.0),
                reason: r.reason.map(|r| r.0).unwrap_or_default(),
                headers: r.headers.map(|h| h.0).unwrap_or_default(),
                body,
            }))
        }
    };
    if stream.is_none() && response.is_none() {
        return Err(err(
            &at,
            "expected an http-stream or an http-response format (sidecast holds HTTP streams and responses only)",
        ));
    }
    Ok(NewEvent {
        idempotency_key: it.id.map(|k| grip_key(&it.channel.0, &k.0)),
        topics: vec![it.channel.0],
        data: String::new(),
        name: None,
        user: None,
        retry: None,
        grip: Some(Arc::new(GripItem { stream, response })),
    })
}

/// The idempotency key of a GRIP item: its `id` within its channel. GRIP
/// apps number items per channel (each `prev-id` names the item before on
/// the same channel), so one id on two channels is two items, and never
/// one of `POST /publish`'s keys (a NUL starts no key a publisher sends).
fn grip_key(channel: &Topic, id: &str) -> String {
    format!("\0grip\0{channel}\0{id}")
}

/// The item's own `id` in a key made by [`grip_key`], for messages.
pub fn item_id(key: &str) -> &str {
    key.rsplit('\0').next().unwrap_or(key)
}

/// Parses a `POST /publish/` body (JSON) into events, in order.
pub fn parse(body: &[u8]) -> Result<Vec<NewEvent>, BodyError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| err("body", format!("invalid JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(err("body", "expected an object such as {\"items\": [...]}"));
    };
    let b: Body = object(o, "")?;
    if b.items.is_empty() {
        return Err(err("items", "expected at least one item"));
    }
    b.items
        .into_iter()
        .enumerate()
        .map(|(i, o)| item(i, o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> NewEvent {
        let mut v = parse(body.as_bytes()).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn reads_items_of_both_formats() {
        let e = one(
            r#"{"items":[{"channel":"orders-42","id":"7","prev-id":"6","formats":{
                "http-stream":{"content":"hi\n"},
                "http-response":{"code":201,"headers":{"X-A":"1"},"body-bin":"aGk="},
                "ws-message":{"content":"ignored"}}}]}"#,
        );
        assert_eq!(e.topics[0].as_str(), "orders-42");
        // An id is the item's within its channel.
        let key = e.idempotency_key.as_deref().unwrap();
        assert_eq!(key, "\0grip\0orders-42\u{0}7");
        assert_eq!(item_id(key), "7");
        let g = e.grip.unwrap();
        assert_eq!(g.stream, Some(StreamPart::Content(b"hi\n".to_vec())));
        let r = g.response.clone().unwrap();
        assert_eq!((r.code, r.body.as_slice()), (201, &b"hi"[..]));
        assert_eq!(r.headers, [("X-A".to_owned(), "1".to_owned())]);
        let close = one(
            r#"{"items":[{"channel":"a","formats":{"http-stream":{"action":"close","content-filters":[]}}}]}"#,
        );
        assert_eq!(close.grip.unwrap().stream, Some(StreamPart::Close));
        let pairs = one(
            r#"{"items":[{"channel":"a","formats":{"http-response":{"headers":[["Set-Cookie","a=1"],["Set-Cookie","b=2"]]}}}]}"#,
        );
        let r = pairs.grip.unwrap().response.clone().unwrap();
        assert_eq!((r.code, r.headers.len()), (200, 2));
    }

    /// Python's `pubcontrol` puts the formats beside `channel`.
    #[test]
    fn reads_formats_beside_the_channel() {
        let e = one(
            r#"{"items":[{"channel":"a","id":"1","http-stream":{"content":"x","content-filters":[]},"http-response":{"body":""}}]}"#,
        );
        let g = e.grip.unwrap();
        assert_eq!(g.stream, Some(StreamPart::Content(b"x".to_vec())));
        assert!(g.response.is_some());
    }

    #[test]
    fn names_the_field_of_a_bad_item() {
        let cases = [
            (r#"[]"#, "body", "expected an object"),
            (
                r#"{"item":[]}"#,
                "item",
                "unknown field `item`, expected `items`",
            ),
            (r#"{"items":[]}"#, "items", "at least one item"),
            (
                r#"{"items":[{"formats":{"http-stream":{"content":"x"}}}]}"#,
                "items[0].channel",
                "missing field `channel`",
            ),
            (r#"{}"#, "items", "missing field `items`"),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{"headers":[["X-A"]]}}}]}"#,
                "items[0].formats.http-response.headers",
                "[name, value] pairs",
            ),
            (
                r#"{"items":[{"channel":"a b","formats":{"http-stream":{"content":"x"}}}]}"#,
                "items[0].channel",
                "not allowed",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"ws-message":{"content":"x"}}}]}"#,
                "items[0].formats",
                "http-stream or an http-response",
            ),
            (
                r#"{"items":[{"channel":"a","ws-message":{"content":"x"}}]}"#,
                "items[0]",
                "http-stream or an http-response",
            ),
            (
                r#"{"items":[{"channel":"a","http-stream":{"content":"x"},"formats":{}}]}"#,
                "items[0]",
                "not both",
            ),
            (
                r#"{"items":[{"channel":"a","http-stream":{"content":"x","content-filters":["build-id"]}}]}"#,
                "items[0].http-stream.content-filters",
                "no content filters",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-stream":{"content-bin":"%%"}}}]}"#,
                "items[0].formats.http-stream.content-bin",
                "base64",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-stream":{"content":"x","action":"close"}}}]}"#,
                "items[0].formats.http-stream",
                "one of content",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{"code":99}}}]}"#,
                "items[0].formats.http-response.code",
                "200 to 599",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{"headers":{"X-A":"1\r\nX-B: 2"}}}}]}"#,
                "items[0].formats.http-response.headers",
                "without line breaks",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{"reason":"OK\r\n"}}}]}"#,
                "items[0].formats.http-response.reason",
                "without line breaks",
            ),
            (
                r#"{"items":[{"channel":"a","formats":{"http-response":{"headers":{"X A":"1"}}}}]}"#,
                "items[0].formats.http-response.headers",
                "expected a token",
            ),
        ];
        for (body, field, msg) in cases {
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(e.message.contains(msg), "{body}: {e}");
        }
    }
}
