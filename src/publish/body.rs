//! Request bodies: publish (JSON, one object or an array, and NDJSON) and
//! disconnect. Each object is deserialized into a struct that refuses
//! unknown fields, of field types that check their values
//! ([`super::fields`]); a refused body is refused whole, with the field's
//! path (`[2].topic`, `line 3: data`) and what was expected, so that a bad
//! batch publishes nothing and no publisher can forge SSE lines.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{
    present, Data, EventName, IdempotencyKey, NonEmpty, Reason, Retry, TopicName, Topics, User,
};
use crate::events::frame::NewEvent;
use crate::topic::Topic;

/// A refused body: the field (`[2].topic`, `line 3: data`) and what was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BodyError {
    pub field: String,
    pub message: String,
}

pub(super) fn err(field: &str, message: impl Into<String>) -> BodyError {
    BodyError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// How the body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Json,
    Ndjson,
}

/// The body kind from `Content-Type`, or `None` (a `415`).
pub fn kind(content_type: Option<&str>) -> Option<Kind> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Kind::Json),
        "application/x-ndjson" | "application/ndjson" => Some(Kind::Ndjson),
        _ => None,
    }
}

/// One event object of a publish body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    #[serde(default, deserialize_with = "present")]
    topic: Option<TopicName>,
    #[serde(default, deserialize_with = "present")]
    topics: Option<Topics>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Data>,
    event: Option<EventName>,
    user: Option<User>,
    retry: Option<Retry>,
    idempotency_key: Option<IdempotencyKey>,
}

/// What an event object lacks, or gives twice.
#[derive(Debug, thiserror::Error)]
enum Missing {
    #[error("give topic or topics, not both")]
    BothTopics,
    #[error("required: the topic (or topics) to publish to")]
    Topic,
    #[error("required: a string, or any JSON value")]
    Data,
}

impl Missing {
    fn field(&self) -> &'static str {
        match self {
            Missing::BothTopics => "topics",
            Missing::Topic => "topic",
            Missing::Data => "data",
        }
    }
}

impl EventBody {
    fn into_event(self) -> Result<NewEvent, Missing> {
        let topics = match (self.topic, self.topics) {
            (Some(_), Some(_)) => return Err(Missing::BothTopics),
            (Some(TopicName(t)), None) => vec![t],
            (None, Some(Topics(list))) => list,
            (None, None) => return Err(Missing::Topic),
        };
        Ok(NewEvent {
            topics,
            data: self.data.ok_or(Missing::Data)?.0,
            name: self.event.map(|n| n.0),
            user: self.user.map(|u| u.0),
            retry: self.retry.map(|r| r.0),
            idempotency_key: self.idempotency_key.map(|k| k.0),
            grip: None,
        })
    }
}

/// Deserializes one JSON object as a `T`; `prefix` is what stands before
/// its fields' paths (`[2].`, `line 3: `, or nothing).
pub(super) fn object<T: for<'de> Deserialize<'de>>(
    o: Map<String, Value>,
    prefix: &str,
) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(Value::Object(o)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            // The object itself: named by its prefix, or as the body.
            match prefix.trim_end_matches(['.', ':', ' ']) {
                "" => "body".to_owned(),
                p => p.to_owned(),
            }
        } else {
            format!("{prefix}{path}")
        };
        err(&field, e.into_inner().to_string())
    })
}

fn event(o: Map<String, Value>, prefix: &str) -> Result<NewEvent, BodyError> {
    object::<EventBody>(o, prefix)?
        .into_event()
        .map_err(|m| err(&format!("{prefix}{}", m.field()), m.to_string()))
}

/// Parses a whole body into events, in order.
pub fn parse(kind: Kind, body: &[u8]) -> Result<Vec<NewEvent>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| err("body", "expected UTF-8 text"))?;
    match kind {
        Kind::Json => {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| err("body", format!("invalid JSON: {e}")))?;
            match v {
                Value::Object(o) => Ok(vec![event(o, "")?]),
                Value::Array(items) => {
                    if items.is_empty() {
                        return Err(err("body", "expected at least one event"));
                    }
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            Value::Object(o) => event(o, &format!("[{i}].")),
                            _ => Err(err(&format!("[{i}]"), "expected an event object")),
                        })
                        .collect()
                }
                _ => Err(err("body", "expected an event object or an array of them")),
            }
        }
        Kind::Ndjson => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = format!("line {}", i + 1);
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| err(&at, format!("invalid JSON: {e}")))?;
                match v {
                    Value::Object(o) => out.push(event(o, &format!("{at}: "))?),
                    _ => return Err(err(&at, "expected an event object")),
                }
            }
            if out.is_empty() {
                return Err(err("body", "expected at least one event"));
            }
            Ok(out)
        }
    }
}

/// A `POST /disconnect` body as it comes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default, deserialize_with = "present")]
    user: Option<NonEmpty>,
    #[serde(default, deserialize_with = "present")]
    topic: Option<TopicName>,
    #[serde(default, deserialize_with = "present")]
    reason: Option<Reason>,
    #[serde(default, deserialize_with = "present")]
    reconnect: Option<bool>,
}

/// Which streams `POST /disconnect` closes (those of `user`, on `topic`,
/// or both), and what they are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub user: Option<String>,
    pub topic: Option<Topic>,
    pub reason: String,
    pub reconnect: bool,
}

/// Parses a `POST /disconnect` body (JSON).
pub fn disconnect(body: &[u8]) -> Result<Disconnect, BodyError> {
    let o = match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => {
            return Err(err(
                "body",
                "expected an object such as {\"user\": \"alice\"}",
            ))
        }
        Err(e) => return Err(err("body", format!("invalid JSON: {e}"))),
    };
    let d: DisconnectBody = object(o, "")?;
    if d.user.is_none() && d.topic.is_none() {
        return Err(err("user", "give user, topic, or both"));
    }
    Ok(Disconnect {
        user: d.user.map(|u| u.0),
        topic: d.topic.map(|t| t.0),
        reason: d.reason.map_or_else(|| "disconnected".to_owned(), |r| r.0),
        reconnect: d.reconnect.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_named() {
        let e = parse(
            Kind::Json,
            br#"[{"topic":"a","data":1},{"topic":"b c","data":"x"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "[1].topic");
        let e = parse(Kind::Json, br#"{"topic":"a"}"#).unwrap_err();
        assert_eq!(e.field, "data");
        let e = parse(
            Kind::Json,
            br#"{"topic":"a","data":"x","event":"sidecast.reset"}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "event");
        let e = parse(
            Kind::Ndjson,
            b"{\"topic\":\"a\",\"data\":1}\n{\"topic\":\"a\"}\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "line 2: data");
        let ok = parse(
            Kind::Json,
            br#"{"topics":["a","b","a"],"data":{"x":[1, 2]},"event":"n.1","retry":5}"#,
        )
        .unwrap();
        assert_eq!(ok[0].topics.len(), 2);
        assert_eq!(ok[0].data, r#"{"x":[1,2]}"#);
    }

    fn refused(kind: Kind, body: &str) -> BodyError {
        parse(kind, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn every_refusal_names_its_field_and_what_was_expected() {
        for (body, field, says) in [
            (
                r#"{"topic": "ok", "data": "x", "colour": "red"}"#,
                "colour",
                "unknown field `colour`",
            ),
            (
                r#"[{"topic": "ok", "data": 1}, {"topic": "ok", "data": 2, "x": 0}]"#,
                "[1].x",
                "expected one of `topic`, `topics`",
            ),
            (
                r#"{"topics": ["ok", 1], "data": "x"}"#,
                "topics[1]",
                "expected a topic name (a string)",
            ),
            (
                r#"[{"topics": ["ok"], "data": 1}, {"topics": ["a b"], "data": 1}]"#,
                "[1].topics[0]",
                "a b",
            ),
            (
                r#"{"topics": "ok", "data": "x"}"#,
                "topics",
                "expected an array of topic names",
            ),
            (
                r#"{"topics": [], "data": "x"}"#,
                "topics",
                "expected at least one topic",
            ),
            (
                r#"{"topic": "ok", "topics": ["ok"], "data": "x"}"#,
                "topics",
                "give topic or topics, not both",
            ),
            (
                r#"{"data": "x"}"#,
                "topic",
                "required: the topic (or topics)",
            ),
            (
                r#"{"topic": null, "data": "x"}"#,
                "topic",
                "expected a topic name (a string)",
            ),
            (
                r#"{"topic": "ok"}"#,
                "data",
                "required: a string, or any JSON value",
            ),
            (
                r#"{"topic": "ok", "data": "x", "event": 1}"#,
                "event",
                "expected an event name",
            ),
            (
                r#"{"topic": "ok", "data": "x", "user": ""}"#,
                "user",
                "expected a non-empty string of at most 1024 bytes",
            ),
            (
                r#"{"topic": "ok", "data": "x", "retry": -1}"#,
                "retry",
                "expected milliseconds, a whole number from 0 to 86400000",
            ),
            (
                r#"{"topic": "ok", "data": "x", "idempotency_key": 1}"#,
                "idempotency_key",
                "expected a string of 1 to 128 bytes",
            ),
            ("42", "body", "expected an event object or an array of them"),
            ("[]", "body", "expected at least one event"),
            (
                r#"[{"topic": "ok", "data": 1}, "x"]"#,
                "[1]",
                "expected an event object",
            ),
            ("{\"topic\": ", "body", "invalid JSON: "),
        ] {
            let e = refused(Kind::Json, body);
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
        let e = refused(Kind::Ndjson, "{\"topic\": \"ok\", \"data\": 1}\n\n[1]\n");
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("line 3", "expected an event object")
        );
        let e = refused(Kind::Ndjson, "{\"topic\": \"ok\", \"data\": 1, \"n\": 2}\n");
        assert_eq!(e.field, "line 1: n");
        let e = refused(Kind::Ndjson, "{\"topic\": \n");
        assert_eq!(e.field, "line 1");
        assert!(e.message.starts_with("invalid JSON: "), "{e}");
        let e = parse(Kind::Json, &[0xff, 0xfe]).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("body", "expected UTF-8 text")
        );
    }

    #[test]
    fn null_leaves_out_what_may_be_left_out() {
        let e = parse(
            Kind::Json,
            br#"{"topic": "t", "data": null, "event": null, "user": null, "retry": null, "idempotency_key": null}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            [NewEvent {
                topics: vec![Topic::parse("t").unwrap()],
                data: "null".into(),
                name: None,
                user: None,
                retry: None,
                idempotency_key: None,
                grip: None,
            }]
        );
    }

    #[test]
    fn disconnect_bodies() {
        assert_eq!(
            disconnect(br#"{"user": "alice"}"#).unwrap(),
            Disconnect {
                user: Some("alice".into()),
                topic: None,
                reason: "disconnected".into(),
                reconnect: true,
            }
        );
        assert_eq!(
            disconnect(br#"{"topic": "x", "reason": "moved", "reconnect": false}"#).unwrap(),
            Disconnect {
                user: None,
                topic: Some(Topic::parse("x").unwrap()),
                reason: "moved".into(),
                reconnect: false,
            }
        );
        for (body, field, says) in [
            ("{", "body", "invalid JSON: "),
            ("[]", "body", "expected an object"),
            ("\"alice\"", "body", "expected an object"),
            ("{}", "user", "give user, topic, or both"),
            (r#"{"user": 5}"#, "user", "expected a non-empty string"),
            (r#"{"user": ""}"#, "user", "expected a non-empty string"),
            (r#"{"user": null}"#, "user", "expected a non-empty string"),
            (r#"{"topic": "a b"}"#, "topic", "a b"),
            (r#"{"topic": 1}"#, "topic", "expected a topic name"),
            (
                r#"{"user": "alice", "reason": 5}"#,
                "reason",
                "expected a string of at most 256 bytes",
            ),
            (
                r#"{"user": "alice", "reconnect": "no"}"#,
                "reconnect",
                "expected a boolean",
            ),
            (
                r#"{"user": "alice", "everyone": true}"#,
                "everyone",
                "unknown field `everyone`",
            ),
        ] {
            let e = disconnect(body.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
    }
}
