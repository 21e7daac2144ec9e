//! Publish bodies: JSON (one object or an array) and NDJSON, checked field
//! by field so that a bad batch is refused whole with the field named, and
//! no publisher can forge SSE lines.

use serde_json::{Map, Value};

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

fn err(field: &str, message: impl Into<String>) -> BodyError {
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

const FIELDS: [&str; 7] = [
    "topic",
    "topics",
    "data",
    "event",
    "user",
    "retry",
    "idempotency_key",
];

/// Parses a whole body into events, in order.
pub fn parse(kind: Kind, body: &[u8]) -> Result<Vec<NewEvent>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| err("body", "expected UTF-8 text"))?;
    match kind {
        Kind::Json => {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| err("body", format!("invalid JSON: {e}")))?;
            match v {
                Value::Object(o) => Ok(vec![event(&o, "")?]),
                Value::Array(items) => {
                    if items.is_empty() {
                        return Err(err("body", "expected at least one event"));
                    }
                    items
                        .iter()
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
                let prefix = format!("line {}: ", i + 1);
                let v: Value = serde_json::from_str(line).map_err(|e| {
                    err(
                        prefix.trim_end_matches([':', ' ']),
                        format!("invalid JSON: {e}"),
                    )
                })?;
                match v {
                    Value::Object(o) => out.push(event(&o, &prefix)?),
                    _ => {
                        return Err(err(
                            prefix.trim_end_matches([':', ' ']),
                            "expected an event object",
                        ))
                    }
                }
            }
            if out.is_empty() {
                return Err(err("body", "expected at least one event"));
            }
            Ok(out)
        }
    }
}

fn topic(v: &Value, field: &str) -> Result<Topic, BodyError> {
    match v {
        Value::String(s) => Topic::parse(s).map_err(|e| err(field, e.to_string())),
        _ => Err(err(field, "expected a topic name (a string)")),
    }
}

/// Checks an event name: 1–64 of letters, digits and `._:-`, not `sidecast.*`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("expected 1 to 64 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err("expected letters, digits and ._:- only".into());
    }
    if name.starts_with("sidecast.") {
        return Err("names beginning with sidecast. are reserved".into());
    }
    Ok(())
}

fn event(o: &Map<String, Value>, p: &str) -> Result<NewEvent, BodyError> {
    let f = |name: &str| format!("{p}{name}");
    if let Some(unknown) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(err(
            &f(unknown),
            format!("unknown field (known: {})", FIELDS.join(", ")),
        ));
    }
    let topics = match (o.get("topic"), o.get("topics")) {
        (Some(_), Some(_)) => return Err(err(&f("topics"), "give topic or topics, not both")),
        (Some(t), None) => vec![topic(t, &f("topic"))?],
        (None, Some(Value::Array(items))) => {
            if items.is_empty() {
                return Err(err(&f("topics"), "expected at least one topic"));
            }
            let mut out: Vec<Topic> = Vec::with_capacity(items.len());
            for (i, t) in items.iter().enumerate() {
                let t = topic(t, &f(&format!("topics[{i}]")))?;
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            out
        }
        (None, Some(_)) => return Err(err(&f("topics"), "expected an array of topic names")),
        (None, None) => {
            return Err(err(
                &f("topic"),
                "required: the topic (or topics) to publish to",
            ))
        }
    };
    let data = match o.get("data") {
        None => return Err(err(&f("data"), "required: a string, or any JSON value")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let name = match o.get("event") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check_name(s).map_err(|m| err(&f("event"), m))?;
            Some(s.clone())
        }
        Some(_) => return Err(err(&f("event"), "expected a string")),
    };
    let user = match o.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Some(s.clone()),
        Some(_) => {
            return Err(err(
                &f("user"),
                "expected a non-empty string of at most 1024 bytes",
            ))
        }
    };
    let retry = match o.get("retry") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n <= 86_400_000).ok_or_else(|| {
            err(
                &f("retry"),
                "expected milliseconds, a whole number from 0 to 86400000",
            )
        })?),
    };
    let idempotency_key = match o.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Some(s.clone()),
        Some(_) => {
            return Err(err(
                &f("idempotency_key"),
                "expected a string of 1 to 128 bytes",
            ))
        }
    };
    Ok(NewEvent {
        topics,
        data,
        name,
        user,
        retry,
        idempotency_key,
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
}
