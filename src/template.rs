//! Route templates: a path template (`/orders/{id}/events`) and a topic
//! template (`orders/{id}`, `user/{sub}`) and how one request fills them.
//! They are values of the configuration, so they sit below it and know
//! nothing of it; the route table above uses them.

use std::collections::HashMap;

use crate::topic::{canonical_segment, encode_value, Topic, TopicError};

/// Why a path or topic template is refused (the configuration names the
/// key; this says what is wrong with the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("expected a path starting with '/', found {0:?}")]
    NoSlash(String),
    #[error("{0:?}: empty path segment")]
    EmptySegment(String),
    /// A whole-segment placeholder with a bad name (the segment).
    #[error("placeholder {0:?}: a name is letters, digits and '_'")]
    SegmentName(String),
    /// A placeholder that is part of a segment (the segment).
    #[error("{0:?}: a placeholder is a whole segment such as \"{{id}}\"")]
    PartSegment(String),
    #[error("{template:?}: placeholder {{{name}}} appears twice")]
    Twice { template: String, name: String },
    #[error("{0:?}: '{{' without '}}'")]
    Unclosed(String),
    #[error("{template:?}: placeholder {{{name}}}: a name is letters, digits and '_'")]
    Name { template: String, name: String },
    #[error("{0:?}: '}}' without '{{'")]
    Unopened(String),
    /// Filled, the template would not make a valid topic.
    #[error("{template:?}: {error}")]
    Topic { template: String, error: TopicError },
}

/// A path template such as `/orders/{id}/events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Seg>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Param(String),
}

fn placeholder(s: &str) -> Result<Option<&str>, TemplateError> {
    match (s.find('{'), s.find('}')) {
        (None, None) => Ok(None),
        (Some(0), Some(end)) if end == s.len() - 1 => {
            let name = &s[1..end];
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                Ok(Some(name))
            } else {
                Err(TemplateError::SegmentName(s.to_owned()))
            }
        }
        _ => Err(TemplateError::PartSegment(s.to_owned())),
    }
}

impl PathTemplate {
    pub fn parse(source: &str) -> Result<PathTemplate, TemplateError> {
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| TemplateError::NoSlash(source.to_owned()))?;
        let mut segments = Vec::new();
        for part in rest.split('/') {
            if part.is_empty() {
                return Err(TemplateError::EmptySegment(source.to_owned()));
            }
            match placeholder(part)? {
                Some(name) => {
                    if segments.contains(&Seg::Param(name.to_owned())) {
                        return Err(TemplateError::Twice {
                            template: source.to_owned(),
                            name: name.to_owned(),
                        });
                    }
                    segments.push(Seg::Param(name.to_owned()))
                }
                None => segments.push(Seg::Literal(part.to_owned())),
            }
        }
        Ok(PathTemplate {
            source: source.to_owned(),
            segments,
        })
    }

    /// A literal path, as `[events] path` is.
    pub fn exact(path: &str) -> PathTemplate {
        PathTemplate {
            source: path.to_owned(),
            segments: path
                .trim_start_matches('/')
                .split('/')
                .map(|s| Seg::Literal(s.to_owned()))
                .collect(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| *s == Seg::Param(name.to_owned()))
    }

    /// The path segments bound to each placeholder, or `None`.
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
        let mut params = Vec::new();
        let mut parts = path.strip_prefix('/')?.split('/');
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Seg::Literal(l) if l == part => {}
                Seg::Literal(_) => return None,
                Seg::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
                Seg::Param(_) => return None,
            }
        }
        parts.next().is_none().then_some(params)
    }

    /// Whether some path matches both templates.
    pub fn overlaps(&self, other: &PathTemplate) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Seg::Literal(x), Seg::Literal(y)) => x == y,
                    _ => true,
                })
    }
}

/// A topic template such as `orders/{id}` or `user/{sub}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Path(String),
    Sub,
    Claim(String),
}

impl TopicTemplate {
    /// Parses a template; a `{name}` that `path` has takes that segment,
    /// `{sub}` the user, any other a string claim of the token.
    pub fn parse(source: &str, path: &PathTemplate) -> Result<TopicTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(source.to_owned()))?
                + start;
            let name = &rest[start + 1..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(TemplateError::Name {
                    template: source.to_owned(),
                    name: name.to_owned(),
                });
            }
            parts.push(if path.has_param(name) {
                Part::Path(name.to_owned())
            } else if name == "sub" {
                Part::Sub
            } else {
                Part::Claim(name.to_owned())
            });
            rest = &rest[end + 1..];
        }
        if rest.contains('}') {
            return Err(TemplateError::Unopened(source.to_owned()));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let t = TopicTemplate {
            source: source.to_owned(),
            parts,
        };
        // The shape must make a valid topic whatever fills it.
        let sample = t.fill(&[], Some("x"), &|_| Some("x".to_owned()), &|_| Some("x"));
        match sample {
            Ok(_) => Ok(t),
            Err(_) => Topic::parse(&source.replace(['{', '}'], ""))
                .map(|_| t)
                .map_err(|error| TemplateError::Topic {
                    template: source.to_owned(),
                    error,
                }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Built from the subscriber's identity alone (`{sub}` or claims, no
    /// path segment): such a topic is the subscriber's own and is granted
    /// by the route. One that uses the path needs a grant.
    pub fn is_subscribers_own(&self) -> bool {
        self.parts.iter().all(|p| !matches!(p, Part::Path(_)))
            && self
                .parts
                .iter()
                .any(|p| matches!(p, Part::Sub | Part::Claim(_)))
    }

    pub fn uses_claims(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Sub | Part::Claim(_)))
    }

    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Claim(c) => Some(c.as_str()),
            _ => None,
        })
    }

    fn fill(
        &self,
        params: &[(&str, &str)],
        sub: Option<&str>,
        claim: &dyn Fn(&str) -> Option<String>,
        path_param: &dyn Fn(&str) -> Option<&str>,
    ) -> Result<Topic, Fill> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Path(name) => {
                    let v = params
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| *v)
                        .or_else(|| path_param(name))
                        .ok_or(Fill::Missing(name.clone()))?;
                    canonical_segment(v, &mut out).map_err(|e| Fill::Bad(e.to_string()))?;
                }
                Part::Sub => out.push_str(&encode_value(sub.ok_or(Fill::Missing("sub".into()))?)),
                Part::Claim(c) => {
                    out.push_str(&encode_value(&claim(c).ok_or(Fill::Missing(c.clone()))?))
                }
            }
        }
        Topic::parse(&out).map_err(|e| Fill::Bad(e.to_string()))
    }

    /// The topic for one request.
    pub fn build(
        &self,
        params: &[(&str, &str)],
        sub: Option<&str>,
        claim: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Topic, Fill> {
        self.fill(params, sub, claim, &|_| None)
    }
}

/// Why a topic could not be built for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// The token lacks the claim (or there is no user): `403`.
    Missing(String),
    /// The path segment does not make a valid topic: `400`.
    Bad(String),
}

/// Claims as a lookup for topic templates: string claims only.
pub fn claim_lookup(
    claims: &HashMap<String, serde_json::Value>,
) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let p = PathTemplate::parse("/orders/{id}/events").unwrap();
        assert_eq!(p.matches("/orders/42/events"), Some(vec![("id", "42")]));
        assert_eq!(p.matches("/orders/42"), None);
        assert_eq!(p.matches("/orders//events"), None);
        assert!(p.overlaps(&PathTemplate::parse("/orders/x/events").unwrap()));
        assert!(!p.overlaps(&PathTemplate::parse("/orders/{id}").unwrap()));
        assert!(PathTemplate::parse("/a/{b").is_err());
        let t = TopicTemplate::parse("orders/{id}", &p).unwrap();
        assert!(!t.is_subscribers_own());
        assert_eq!(
            t.build(&[("id", "4%2f2")], None, &|_| None)
                .unwrap()
                .as_str(),
            "orders/4%2F2"
        );
        let u = TopicTemplate::parse("user/{sub}", &p).unwrap();
        assert!(u.is_subscribers_own());
        assert_eq!(
            u.build(&[], Some("auth0|42"), &|_| None).unwrap().as_str(),
            "user/auth0%7C42"
        );
        assert_eq!(
            u.build(&[], None, &|_| None),
            Err(Fill::Missing("sub".into()))
        );
        let c = TopicTemplate::parse("team/{team}", &p).unwrap();
        assert_eq!(
            c.build(&[], None, &|_| None),
            Err(Fill::Missing("team".into()))
        );
        assert!(TopicTemplate::parse("a/{", &p).is_err());
        assert!(TopicTemplate::parse("a//{id}", &p).is_err());
    }
}
