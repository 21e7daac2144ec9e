//! Topic names, grant patterns and the percent-encoding that keeps a user
//! value from ever widening a grant. Kept free of I/O so that it can be
//! tested exhaustively.

use std::fmt;
use std::sync::Arc;

/// The longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a segment of a topic or pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("empty segment (no leading, trailing or double '/')")]
    Empty,
    #[error("character {0:?} is not allowed (letters, digits, '-_.:@' and %XX escapes only)")]
    Character(char),
}

/// Why a topic name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("a topic name is 1 to {} characters, got {}", MAX_TOPIC_LEN, .0)]
    Length(usize),
    #[error("topic {name:?}: {error}")]
    Segment { name: String, error: SegmentError },
}

/// Why a grant pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a pattern is 1 to {} characters, got {}", MAX_TOPIC_LEN, .0)]
    Length(usize),
    #[error("pattern {0:?}: '**' must follow at least one segment, as in \"a/**\"")]
    LoneRest(String),
    #[error("pattern {0:?}: '*' must be a whole segment, and '**' only the last one")]
    Wildcard(String),
    #[error("pattern {pattern:?}: {error}")]
    Segment {
        pattern: String,
        error: SegmentError,
    },
}

/// A validated topic name in canonical form (percent-escapes upper-cased).
/// Cheap to clone: streams, history and events all hold the same name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Checks a topic name and returns it in canonical form.
    pub fn parse(name: &str) -> Result<Topic, TopicError> {
        if name.is_empty() || name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::Length(name.len()));
        }
        let mut out = String::with_capacity(name.len());
        for (i, segment) in name.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            canonical_segment(segment, &mut out).map_err(|error| TopicError::Segment {
                name: name.to_owned(),
                error,
            })?;
        }
        Ok(Topic(out.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@')
}

/// Appends one segment in canonical form, or says what is wrong with it.
pub(crate) fn canonical_segment(segment: &str, out: &mut String) -> Result<(), SegmentError> {
    if segment.is_empty() {
        return Err(SegmentError::Empty);
    }
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain(b) {
            out.push(b as char);
            i += 1;
        } else if b == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            out.push('%');
            out.push(bytes[i + 1].to_ascii_uppercase() as char);
            out.push(bytes[i + 2].to_ascii_uppercase() as char);
            i += 3;
        } else {
            let c = segment[i..].chars().next().unwrap_or('?');
            return Err(SegmentError::Character(c));
        }
    }
    Ok(())
}

/// Percent-encodes a user or claim value for use inside a topic: every byte
/// but letters, digits and `-_.:@` becomes `%XX`, so `auth0|42` gives
/// `auth0%7C42` and a user named `*` cannot widen a grant.
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A grant pattern: `*` matches exactly one segment, a trailing `/**` one or
/// more further segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<PatternSegment>,
    /// Ends in `/**`.
    rest: bool,
    source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    Any,
    Literal(String),
}

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        if source.is_empty() || source.len() > MAX_TOPIC_LEN + 3 {
            return Err(PatternError::Length(source.len()));
        }
        let mut parts: Vec<&str> = source.split('/').collect();
        let rest = parts.last() == Some(&"**");
        if rest {
            parts.pop();
            if parts.is_empty() {
                return Err(PatternError::LoneRest(source.to_owned()));
            }
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            if part == "*" {
                segments.push(PatternSegment::Any);
            } else if part.contains('*') {
                return Err(PatternError::Wildcard(source.to_owned()));
            } else {
                let mut s = String::new();
                canonical_segment(part, &mut s).map_err(|error| PatternError::Segment {
                    pattern: source.to_owned(),
                    error,
                })?;
                segments.push(PatternSegment::Literal(s));
            }
        }
        Ok(Pattern {
            segments,
            rest,
            source: source.to_owned(),
        })
    }

    pub fn matches(&self, topic: &Topic) -> bool {
        let mut parts = topic.segments();
        for seg in &self.segments {
            match (seg, parts.next()) {
                (_, None) => return false,
                (PatternSegment::Any, Some(_)) => {}
                (PatternSegment::Literal(l), Some(p)) => {
                    if l != p {
                        return false;
                    }
                }
            }
        }
        let remaining = parts.count();
        if self.rest {
            remaining >= 1
        } else {
            remaining == 0
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Whether any of `grants` matches `topic`.
pub fn granted(grants: &[Pattern], topic: &Topic) -> bool {
    grants.iter().any(|g| g.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(t("user/auth0%7c42").as_str(), "user/auth0%7C42");
        for bad in ["", "a//b", "/a", "a/", "a b", "a/*", "a/%2", "a/%zz", "é"] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Topic::parse(&"a".repeat(256)).is_ok());
        assert!(Topic::parse(&"a".repeat(257)).is_err());
    }

    #[test]
    fn patterns() {
        let p = Pattern::parse("a/**").unwrap();
        assert!(p.matches(&t("a/b")) && p.matches(&t("a/b/c")) && !p.matches(&t("a")));
        let p = Pattern::parse("a/*/c").unwrap();
        assert!(p.matches(&t("a/b/c")) && !p.matches(&t("a/b")) && !p.matches(&t("a/b/c/d")));
        let p = Pattern::parse("*").unwrap();
        assert!(p.matches(&t("x")) && !p.matches(&t("x/y")));
        for bad in ["**", "a/**/b", "a*", "", "a//b"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn encoding_cannot_widen() {
        assert_eq!(encode_value("auth0|42"), "auth0%7C42");
        assert_eq!(encode_value("*"), "%2A");
        let p = Pattern::parse(&format!("user/{}", encode_value("*"))).unwrap();
        assert!(!p.matches(&t("user/bob")));
    }
}
