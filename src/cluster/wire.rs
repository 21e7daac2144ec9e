//! What replicas write to Redis and read back: the log's records, the
//! control channel's requests, and the stream ids that order them. A
//! rolling upgrade runs replicas of two versions against one Redis, so
//! these shapes are a protocol: field names and encodings stay as they
//! are, and the tests below hold them to the bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::sync::Arc;

use crate::events::frame::{GripItem, GripResponse, NewEvent, StreamPart};
use crate::topic::Topic;

/// One event as the log stores it (the `e` field of a stream entry). The
/// one-letter names keep every entry short; a field a later version adds is
/// ignored here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    #[serde(rename = "t")]
    pub topics: Vec<String>,
    #[serde(rename = "d")]
    pub data: String,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    /// A GRIP item's formats (absent for an SSE event, so an event's
    /// record is what it always was).
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub grip: Option<GripRecord>,
}

/// A GRIP item in the log: bytes as base64 text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GripRecord {
    /// `http-stream` content.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub content: Option<B64>,
    /// `http-stream`'s close action.
    #[serde(rename = "c", default, skip_serializing_if = "std::ops::Not::not")]
    pub close: bool,
    /// `http-response`.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseRecord {
    #[serde(rename = "c")]
    pub code: u16,
    #[serde(rename = "r", default)]
    pub reason: String,
    #[serde(rename = "h", default)]
    pub headers: Vec<(String, String)>,
    #[serde(rename = "b", default)]
    pub body: B64,
}

/// Bytes as base64 text in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

impl GripRecord {
    fn of(g: &GripItem) -> GripRecord {
        GripRecord {
            content: match &g.stream {
                Some(StreamPart::Content(c)) => Some(B64(c.clone())),
                _ => None,
            },
            close: g.stream == Some(StreamPart::Close),
            response: g.response.as_ref().map(|r| ResponseRecord {
                code: r.code,
                reason: r.reason.clone(),
                headers: r.headers.clone(),
                body: B64(r.body.clone()),
            }),
        }
    }

    fn into_item(self) -> GripItem {
        GripItem {
            stream: match (self.content, self.close) {
                (_, true) => Some(StreamPart::Close),
                (Some(c), false) => Some(StreamPart::Content(c.0)),
                (None, false) => None,
            },
            response: self.response.map(|r| {
                Arc::new(GripResponse {
                    code: r.code,
                    reason: r.reason,
                    headers: r.headers,
                    body: r.body.0,
                })
            }),
        }
    }
}

impl LogRecord {
    /// The record of an event (its idempotency key lives beside the log,
    /// not in it).
    pub fn of(e: &NewEvent) -> LogRecord {
        LogRecord {
            topics: e.topics.iter().map(|t| t.as_str().to_owned()).collect(),
            data: e.data.clone(),
            name: e.name.clone(),
            user: e.user.clone(),
            retry: e.retry,
            grip: e.grip.as_deref().map(GripRecord::of),
        }
    }

    /// The event again, on the topics that are still names; `None` when
    /// none is (nothing to deliver).
    pub fn into_event(self) -> Option<NewEvent> {
        let topics: Vec<Topic> = self
            .topics
            .iter()
            .filter_map(|t| Topic::parse(t).ok())
            .collect();
        if topics.is_empty() {
            return None;
        }
        Some(NewEvent {
            topics,
            data: self.data,
            name: self.name,
            user: self.user,
            retry: self.retry,
            idempotency_key: None,
            grip: self.grip.map(|g| Arc::new(g.into_item())),
        })
    }
}

/// A request to every replica over the control channel; each answers on
/// the list `{sidecast}:reply:<req>`. Every op carries the same five
/// fields, because that is what replicas have always written: `count` sends
/// `user`, `reason` and `reconnect` as `null` (see [`Null`]). An op this
/// version does not know fails to decode and goes unanswered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Control {
    /// `POST /disconnect`: close the matching streams, answer how many.
    /// A missing (or `null`) `reason` is "disconnected", `reconnect` true.
    Disconnect {
        req: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        reconnect: Option<bool>,
    },
    /// `GET /topics/NAME`: answer the streams open on `topic`.
    Count {
        req: String,
        #[serde(default)]
        user: Null,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        reason: Null,
        #[serde(default)]
        reconnect: Null,
    },
}

impl Control {
    /// The id the answers are filed under.
    pub fn req(&self) -> &str {
        match self {
            Control::Disconnect { req, .. } | Control::Count { req, .. } => req,
        }
    }
}

/// A field an op does not use but the wire has: written as `null`, read as
/// whatever comes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Null;

impl Serialize for Null {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Null {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Null, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Null)
    }
}

/// The seq of a Redis stream id `ms-n` in the hub's one order: `ms`
/// millions plus `n` (capped at 999999 — more entries than that in one
/// millisecond never happen). `None` for what is not such an id (`0`,
/// `$`, text) and for an `ms` too large for the order.
pub fn seq_of(redis_id: &str) -> Option<u64> {
    let (ms, n) = redis_id.split_once('-')?;
    let n = n.parse::<u64>().ok()?.min(999_999);
    ms.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(n)
}

/// What a (re)connect to Redis means for this replica's view of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The same data set, holding all that was delivered: read on after
    /// the last id delivered.
    Follow,
    /// The same epoch, but Redis holds less than was delivered (it lost
    /// data): the epoch must be replaced, so that no client is given a
    /// wrong replay.
    NewEpoch,
    /// A data set this replica has not read (the first connect, or another
    /// replica already started a new epoch): rebuild history from the log.
    Rebuild,
}

impl Resume {
    /// `known` is the epoch this replica follows and `delivered` the seq of
    /// its last id read (0 for none); `current` is the epoch Redis holds
    /// and `newest` the seq of the log's newest entry (0 for none).
    pub fn decide(known: Option<&str>, delivered: u64, current: &str, newest: u64) -> Resume {
        match known {
            Some(k) if k == current && newest < delivered => Resume::NewEpoch,
            Some(k) if k == current => Resume::Follow,
            _ => Resume::Rebuild,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exactly what replicas of the previous version write.
    const DISCONNECT: &str = r#"{"op":"disconnect","req":"00c0ffee00c0ffee","user":"alice","topic":null,"reason":"logout","reconnect":false}"#;
    const COUNT: &str = r#"{"op":"count","req":"0123456789abcdef","user":null,"topic":"room/1","reason":null,"reconnect":null}"#;

    #[test]
    fn control_messages_decode_and_encode_to_the_same_bytes() {
        let d: Control = serde_json::from_str(DISCONNECT).unwrap();
        assert_eq!(
            d,
            Control::Disconnect {
                req: "00c0ffee00c0ffee".into(),
                user: Some("alice".into()),
                topic: None,
                reason: Some("logout".into()),
                reconnect: Some(false),
            }
        );
        assert_eq!(serde_json::to_string(&d).unwrap(), DISCONNECT);
        let c: Control = serde_json::from_str(COUNT).unwrap();
        assert_eq!(
            c,
            Control::Count {
                req: "0123456789abcdef".into(),
                user: Null,
                topic: Some("room/1".into()),
                reason: Null,
                reconnect: Null,
            }
        );
        assert_eq!(c.req(), "0123456789abcdef");
        assert_eq!(serde_json::to_string(&c).unwrap(), COUNT);
    }

    /// The previous version's definition of a control message, as it
    /// encoded and decoded them.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PreviousControl {
        op: String,
        req: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        reconnect: Option<bool>,
    }

    #[test]
    fn control_messages_pass_between_versions() {
        for wire in [DISCONNECT, COUNT] {
            let previous: PreviousControl = serde_json::from_str(wire).unwrap();
            assert_eq!(serde_json::to_string(&previous).unwrap(), wire);
            let now: Control = serde_json::from_str(wire).unwrap();
            let back: PreviousControl =
                serde_json::from_str(&serde_json::to_string(&now).unwrap()).unwrap();
            assert_eq!(back, previous);
        }
    }

    #[test]
    fn control_messages_take_what_is_left_out_and_refuse_unknown_ops() {
        let d: Control =
            serde_json::from_str(r#"{"op":"disconnect","req":"r","topic":"t"}"#).unwrap();
        assert_eq!(
            d,
            Control::Disconnect {
                req: "r".into(),
                user: None,
                topic: Some("t".into()),
                reason: None,
                reconnect: None,
            }
        );
        let c: Control = serde_json::from_str(r#"{"req":"r","op":"count","user":"x"}"#).unwrap();
        assert_eq!(c.req(), "r");
        for bad in [
            r#"{"op":"shutdown","req":"r"}"#,
            r#"{"req":"r"}"#,
            r#"{"op":"count"}"#,
            "[]",
        ] {
            assert!(serde_json::from_str::<Control>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_records_keep_their_short_names() {
        let full = r#"{"t":["room/1","all"],"d":"{\"x\":1}","n":"update","u":"alice","r":5000}"#;
        let r: LogRecord = serde_json::from_str(full).unwrap();
        assert_eq!(r.topics, ["room/1", "all"]);
        assert_eq!(r.data, r#"{"x":1}"#);
        assert_eq!(r.name.as_deref(), Some("update"));
        assert_eq!(r.user.as_deref(), Some("alice"));
        assert_eq!(r.retry, Some(5000));
        assert_eq!(serde_json::to_string(&r).unwrap(), full);
        let bare = r#"{"t":["t"],"d":"x"}"#;
        let r: LogRecord = serde_json::from_str(bare).unwrap();
        assert_eq!((r.name, r.user, r.retry), (None, None, None));
        let r: LogRecord = serde_json::from_str(bare).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), bare);
        // What a later version may add is no reason to skip an event.
        let later = r#"{"t":["t"],"d":"x","z":1}"#;
        assert_eq!(serde_json::from_str::<LogRecord>(later).unwrap(), r);
        assert!(serde_json::from_str::<LogRecord>(r#"{"t":["t"]}"#).is_err());
    }

    /// A GRIP item's formats go through the log and come back whole; an
    /// SSE event's record has no `g` (what older replicas wrote).
    #[test]
    fn log_records_carry_grip_items() {
        let item = GripItem {
            stream: Some(StreamPart::Content(vec![0, 1, 255])),
            response: Some(Arc::new(GripResponse {
                code: 201,
                reason: "Made".into(),
                headers: vec![("X-A".into(), "1".into())],
                body: b"hi".to_vec(),
            })),
        };
        let e = NewEvent {
            topics: vec![Topic::parse("ch").unwrap()],
            data: String::new(),
            name: None,
            user: None,
            retry: None,
            idempotency_key: None,
            grip: Some(Arc::new(item)),
        };
        let wire = serde_json::to_string(&LogRecord::of(&e)).unwrap();
        assert_eq!(
            wire,
            r#"{"t":["ch"],"d":"","g":{"s":"AAH/","h":{"c":201,"r":"Made","h":[["X-A","1"]],"b":"aGk="}}}"#
        );
        let back = serde_json::from_str::<LogRecord>(&wire)
            .unwrap()
            .into_event()
            .unwrap();
        assert_eq!(back, e);
        let close = r#"{"t":["ch"],"d":"","g":{"c":true}}"#;
        let back = serde_json::from_str::<LogRecord>(close)
            .unwrap()
            .into_event()
            .unwrap();
        assert_eq!(back.grip.unwrap().stream, Some(StreamPart::Close));
    }

    #[test]
    fn log_records_round_trip_events() {
        let e = NewEvent {
            topics: vec![Topic::parse("a/b").unwrap(), Topic::parse("c").unwrap()],
            data: "line 1\nline 2".into(),
            name: Some("n.1".into()),
            user: None,
            retry: Some(0),
            idempotency_key: Some("k".into()),
            grip: None,
        };
        let wire = serde_json::to_string(&LogRecord::of(&e)).unwrap();
        let back = serde_json::from_str::<LogRecord>(&wire)
            .unwrap()
            .into_event()
            .unwrap();
        assert_eq!(
            back,
            NewEvent {
                idempotency_key: None,
                ..e
            },
            "all but the key, which is not in the log"
        );
    }

    #[test]
    fn a_record_keeps_only_topics_that_are_names() {
        let r: LogRecord = serde_json::from_str(r#"{"t":["a b","ok"],"d":"x"}"#).unwrap();
        let e = r.into_event().unwrap();
        assert_eq!(e.topics, [Topic::parse("ok").unwrap()]);
        let r: LogRecord = serde_json::from_str(r#"{"t":["a b"],"d":"x"}"#).unwrap();
        assert_eq!(r.into_event(), None);
    }

    #[test]
    fn stream_ids_map_into_one_order() {
        assert_eq!(seq_of("1700000000000-0"), Some(1_700_000_000_000_000_000));
        assert_eq!(seq_of("5-3"), Some(5_000_003));
        assert_eq!(seq_of("0-1"), Some(1));
        assert!(seq_of("5-999999") < seq_of("6-0"));
        // More than a million entries in one millisecond share the last seq.
        assert_eq!(seq_of("5-1234567"), Some(5_999_999));
        for bad in [
            "0", "$", "", "-", "5", "5-", "-5", "a-1", "5-x", "5-1-2", "5.0-1",
        ] {
            assert_eq!(seq_of(bad), None, "{bad:?}");
        }
        // Too large for the order: refused, never wrapped around.
        assert_eq!(seq_of("18446744073710-0"), None);
        assert_eq!(seq_of("18446744073709-551615"), Some(u64::MAX));
    }

    #[test]
    fn a_reconnect_follows_rebuilds_or_starts_a_new_epoch() {
        // The first connect reads the data set whole.
        assert_eq!(Resume::decide(None, 0, "e1", 0), Resume::Rebuild);
        assert_eq!(Resume::decide(None, 0, "e1", 42), Resume::Rebuild);
        // Same epoch, Redis holds at least what was delivered.
        assert_eq!(Resume::decide(Some("e1"), 42, "e1", 42), Resume::Follow);
        assert_eq!(Resume::decide(Some("e1"), 42, "e1", 50), Resume::Follow);
        assert_eq!(Resume::decide(Some("e1"), 0, "e1", 0), Resume::Follow);
        // Same epoch, Redis behind what was delivered: it lost data.
        assert_eq!(Resume::decide(Some("e1"), 42, "e1", 41), Resume::NewEpoch);
        assert_eq!(Resume::decide(Some("e1"), 42, "e1", 0), Resume::NewEpoch);
        // Another epoch: rebuild, whatever the ids.
        assert_eq!(Resume::decide(Some("e1"), 42, "e2", 0), Resume::Rebuild);
        assert_eq!(Resume::decide(Some("e1"), 42, "e2", 99), Resume::Rebuild);
    }
}
