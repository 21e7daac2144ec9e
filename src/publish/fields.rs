//! The values of the publish API's fields, each a type that can only hold
//! what the API takes: a string is checked where it is converted
//! (`TryFrom<String>`), and deserializing says what was expected, so that a
//! refused body names the field and the rule.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Unexpected, Visitor};
use serde_json::Value;

use crate::topic::{Topic, TopicError};

/// Why a string is not a value of its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("expected 1 to 64 characters")]
    NameLength,
    #[error("expected letters, digits and ._:- only")]
    NameCharacters,
    #[error("names beginning with sidecast. are reserved")]
    NameReserved,
    #[error("expected a non-empty string of at most 1024 bytes")]
    User,
    #[error("expected a string of 1 to 128 bytes")]
    Key,
    #[error("expected a string of at most 256 bytes")]
    Reason,
    #[error("expected a non-empty string")]
    Empty,
}

/// Deserializes a string field through its `TryFrom<String>`; a value of
/// another type is refused as not being `expected`.
fn checked<'de, D, T>(d: D, expected: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String, Error = Invalid>,
{
    struct Checked<T>(&'static str, PhantomData<T>);
    impl<T: TryFrom<String, Error = Invalid>> Visitor<'_> for Checked<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            self.visit_string(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
            T::try_from(v).map_err(E::custom)
        }
    }
    d.deserialize_string(Checked(expected, PhantomData))
}

/// Implements `Deserialize` through [`checked`].
macro_rules! string_field {
    ($t:ty, $expected:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                checked(d, $expected)
            }
        }
    };
}

/// A topic name (never a pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicName(pub Topic);

impl TryFrom<String> for TopicName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Ok(TopicName(Topic::parse(&s)?))
    }
}
string_field!(TopicName, "a topic name (a string)");

/// A non-empty list of topic names, each once, in the order first given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics(pub Vec<Topic>);

impl<'de> Deserialize<'de> for Topics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Topics;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of topic names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Topics, A::Error> {
                let mut out: Vec<Topic> = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(TopicName(t)) = seq.next_element()? {
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
                if out.is_empty() {
                    return Err(de::Error::custom("expected at least one topic"));
                }
                Ok(Topics(out))
            }
        }
        d.deserialize_seq(List)
    }
}

/// An event name: 1–64 of letters, digits and `._:-`, not `sidecast.*`
/// (the names sidecast sends itself), and so never a line break that
/// could forge SSE lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventName(pub String);

impl TryFrom<String> for EventName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        if s.is_empty() || s.len() > 64 {
            return Err(Invalid::NameLength);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(Invalid::NameCharacters);
        }
        if s.starts_with("sidecast.") {
            return Err(Invalid::NameReserved);
        }
        Ok(EventName(s))
    }
}
string_field!(EventName, "an event name (a string)");

/// A string field of a length in bytes within `$len`.
macro_rules! bytes_field {
    ($(#[$doc:meta])* $t:ident, $len:expr, $invalid:expr, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $t(pub String);

        impl TryFrom<String> for $t {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                if !($len).contains(&s.len()) {
                    return Err($invalid);
                }
                Ok($t(s))
            }
        }
        string_field!($t, $expected);
    };
}

bytes_field!(
    /// The user an event is for.
    User,
    1..=1024,
    Invalid::User,
    "a non-empty string of at most 1024 bytes"
);
bytes_field!(
    /// An idempotency key.
    IdempotencyKey,
    1..=128,
    Invalid::Key,
    "a string of 1 to 128 bytes"
);
bytes_field!(
    /// Whom `POST /disconnect` names: any user there may be.
    NonEmpty,
    1..,
    Invalid::Empty,
    "a non-empty string"
);
bytes_field!(
    /// Why streams were closed, as `sidecast.disconnect` tells them.
    Reason,
    ..=256,
    Invalid::Reason,
    "a string of at most 256 bytes"
);

/// The reconnection delay an event sets, in milliseconds: at most a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry(pub u64);

impl Retry {
    const MAX: u64 = 86_400_000;
}

impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ms;
        impl Visitor<'_> for Ms {
            type Value = Retry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "milliseconds, a whole number from 0 to {}", Retry::MAX)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Retry, E> {
                if v > Retry::MAX {
                    return Err(E::invalid_value(Unexpected::Unsigned(v), &self));
                }
                Ok(Retry(v))
            }
        }
        d.deserialize_u64(Ms)
    }
}

/// An event's data: a string as it is, any other JSON value as its
/// compact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data(pub String);

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Data(match Value::deserialize(d)? {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

/// For a field that may be left out but, when given, must be a value of
/// its type (`null` included): `#[serde(default, deserialize_with =
/// "present")]`. A plain `Option` would take `null` for "left out".
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, serde_json::Error> {
        serde_json::from_value(v)
    }

    /// What deserializing `v` as a `T` is refused with.
    fn refused<T: for<'de> Deserialize<'de> + fmt::Debug>(v: Value) -> String {
        from::<T>(v).unwrap_err().to_string()
    }

    #[test]
    fn event_names() {
        assert_eq!(
            EventName::try_from("n.1:a_b-c".to_owned()).unwrap().0,
            "n.1:a_b-c"
        );
        for (bad, why) in [
            ("", Invalid::NameLength),
            (&*"n".repeat(65), Invalid::NameLength),
            ("a b", Invalid::NameCharacters),
            ("a\nid: 9", Invalid::NameCharacters),
            ("sidecast.reset", Invalid::NameReserved),
        ] {
            assert_eq!(EventName::try_from(bad.to_owned()), Err(why), "{bad:?}");
        }
        assert_eq!(
            EventName::try_from("n".repeat(64)).map(|n| n.0.len()),
            Ok(64)
        );
        let e = refused::<EventName>(serde_json::json!(1));
        assert!(e.contains("expected an event name"), "{e}");
        let e = refused::<EventName>(serde_json::json!("sidecast.x"));
        assert_eq!(e, "names beginning with sidecast. are reserved");
    }

    #[test]
    fn topic_names_and_lists() {
        let t = from::<TopicName>(serde_json::json!("a/b")).unwrap();
        assert_eq!(t.0.as_str(), "a/b");
        for bad in ["a b", "a//b", "a/*", ""] {
            assert!(TopicName::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        let e = refused::<TopicName>(serde_json::json!(5));
        assert!(e.contains("expected a topic name (a string)"), "{e}");
        let list = from::<Topics>(serde_json::json!(["a", "b", "a"])).unwrap();
        let names: Vec<&str> = list.0.iter().map(Topic::as_str).collect();
        assert_eq!(names, ["a", "b"], "each once, in order");
        let e = refused::<Topics>(serde_json::json!([]));
        assert_eq!(e, "expected at least one topic");
        let e = refused::<Topics>(serde_json::json!("a"));
        assert!(e.contains("expected an array of topic names"), "{e}");
    }

    #[test]
    fn lengths_are_bytes() {
        assert!(User::try_from("é".repeat(512)).is_ok());
        assert_eq!(User::try_from("é".repeat(513)), Err(Invalid::User));
        assert_eq!(User::try_from(String::new()), Err(Invalid::User));
        assert!(IdempotencyKey::try_from("k".repeat(128)).is_ok());
        assert_eq!(IdempotencyKey::try_from("k".repeat(129)), Err(Invalid::Key));
        assert_eq!(IdempotencyKey::try_from(String::new()), Err(Invalid::Key));
        assert!(Reason::try_from(String::new()).is_ok());
        assert_eq!(Reason::try_from("r".repeat(257)), Err(Invalid::Reason));
        assert_eq!(NonEmpty::try_from(String::new()), Err(Invalid::Empty));
        assert!(NonEmpty::try_from("x".repeat(5000)).is_ok());
    }

    #[test]
    fn retry_and_data() {
        assert_eq!(from::<Retry>(serde_json::json!(0)).unwrap(), Retry(0));
        assert_eq!(
            from::<Retry>(serde_json::json!(86_400_000)).unwrap(),
            Retry(86_400_000)
        );
        for bad in [
            serde_json::json!(86_400_001),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("5s"),
        ] {
            let e = refused::<Retry>(bad.clone());
            assert!(
                e.contains("expected milliseconds, a whole number from 0 to 86400000"),
                "{bad}: {e}"
            );
        }
        assert_eq!(from::<Data>(serde_json::json!("x\ny")).unwrap().0, "x\ny");
        assert_eq!(
            from::<Data>(serde_json::json!({"x": [1, 2]})).unwrap().0,
            r#"{"x":[1,2]}"#
        );
        assert_eq!(from::<Data>(Value::Null).unwrap().0, "null");
    }
}
