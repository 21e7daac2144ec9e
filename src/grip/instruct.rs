//! The app's hold instructions: the `Grip-*` headers of its response.
//! Only a response of the upstream is read here: a client's `Grip-*`
//! request headers never reach this, so a client cannot make a hold.

use std::time::Duration;

use base64::Engine;

use crate::topic::Topic;

/// GRIP's default for `Grip-Timeout` and a keep-alive's `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(55);
/// A held response waits at most this long, whatever the app asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Grip-Hold: stream`: the response stays open and gets each item.
    Stream,
    /// `Grip-Hold: response`: the response waits for one item (long-poll).
    Response,
}

/// One channel of `Grip-Channel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub topic: Topic,
    /// The last item the client has: a sidecast id replays what followed.
    pub prev_id: Option<String>,
}

/// `Grip-Keep-Alive`: what a quiet held stream is sent, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    pub content: Vec<u8>,
    pub every: Duration,
    /// `mode=interval`: every `every`, not `every` after the last write.
    pub interval: bool,
}

/// A hold, as the app's response asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub mode: Mode,
    pub channels: Vec<Channel>,
    pub keep_alive: Option<KeepAlive>,
    /// `Grip-Timeout`, for a response hold.
    pub timeout: Duration,
}

/// Hold headers that cannot be followed: the client gets a `502`, and the
/// log says which header and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadInstruction {
    #[error("Grip-Hold: expected stream or response, found {0:?}")]
    Hold(String),
    #[error("Grip-Hold without Grip-Channel: a hold needs at least one channel")]
    NoChannel,
    #[error("Grip-Channel: {name:?} is not a channel name: {reason}")]
    Channel { name: String, reason: String },
    #[error("Grip-Keep-Alive: {0}")]
    KeepAlive(String),
    #[error("Grip-Timeout: expected whole seconds, found {0:?}")]
    Timeout(String),
    #[error("{0}: not valid UTF-8 text")]
    NotText(&'static str),
    #[error("Grip-Hold: stream on a {0} response, which has no body to stream")]
    Bodiless(u16),
    #[error("Grip-Channel: {given} channels, more than [events] max_topics ({max})")]
    TooManyChannels { given: usize, max: usize },
}

/// Whether a header is GRIP's (`Grip-*`): never passed to the client of a
/// hold.
pub fn is_grip_header(name: &[u8]) -> bool {
    name.len() > 5 && name[..5].eq_ignore_ascii_case(b"grip-")
}

/// The hold a response of `status` asks for with its headers; `None` when
/// there is no `Grip-Hold` (the other `Grip-*` headers are then not read:
/// they ask for nothing). Several `Grip-Channel` lines add up, to at most
/// `max_channels` (`[events] max_topics`, as for a subscriber).
pub fn parse<'a>(
    status: u16,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    max_channels: usize,
) -> Result<Option<Instruction>, BadInstruction> {
    let grip = headers.filter(|(name, _)| is_grip_header(name));
    let named = |suffix: &'static [u8]| {
        grip.clone()
            .filter(move |(name, _)| name[5..].eq_ignore_ascii_case(suffix))
            .map(|(_, v)| v)
    };
    let text = |value: &'a [u8], what| {
        std::str::from_utf8(value)
            .map(str::trim)
            .map_err(|_| BadInstruction::NotText(what))
    };
    let Some(hold) = named(b"hold").last() else {
        return Ok(None);
    };
    let hold = text(hold, "Grip-Hold")?;
    let mode = if hold.eq_ignore_ascii_case("stream") {
        if status == 204 || status == 304 {
            return Err(BadInstruction::Bodiless(status));
        }
        Mode::Stream
    } else if hold.eq_ignore_ascii_case("response") {
        Mode::Response
    } else {
        return Err(BadInstruction::Hold(hold.to_owned()));
    };
    let mut channels = Vec::new();
    for v in named(b"channel") {
        channels.extend(parse_channels(text(v, "Grip-Channel")?)?);
    }
    if channels.is_empty() {
        return Err(BadInstruction::NoChannel);
    }
    if channels.len() > max_channels {
        return Err(BadInstruction::TooManyChannels {
            given: channels.len(),
            max: max_channels,
        });
    }
    let keep_alive = match named(b"keep-alive").last() {
        Some(v) => Some(parse_keep_alive(text(v, "Grip-Keep-Alive")?)?),
        None => None,
    };
    let timeout = match named(b"timeout").last() {
        Some(v) => {
            let v = text(v, "Grip-Timeout")?;
            let secs: u64 = v
                .parse()
                .map_err(|_| BadInstruction::Timeout(v.to_owned()))?;
            Duration::from_secs(secs).min(MAX_TIMEOUT)
        }
        None => DEFAULT_TIMEOUT,
    };
    Ok(Some(Instruction {
        mode,
        channels,
        keep_alive,
        timeout,
    }))
}

/// Splits `s` at `sep` outside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A parameter's value without its quotes (and their escapes).
fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            out
        }
        None => v.to_owned(),
    }
}

/// `name=value` parameters after the first `;`.
fn params(parts: &[&str]) -> Vec<(String, String)> {
    parts
        .iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), unquote(v)))
        })
        .collect()
}

fn parse_channels(value: &str) -> Result<Vec<Channel>, BadInstruction> {
    let mut out = Vec::new();
    for item in split_outside_quotes(value, ',') {
        if item.trim().is_empty() {
            continue;
        }
        let parts = split_outside_quotes(item, ';');
        let name = unquote(parts[0]);
        let topic = Topic::parse(&name).map_err(|e| BadInstruction::Channel {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        let prev_id = params(&parts[1..])
            .into_iter()
            .find(|(k, _)| k == "prev-id")
            .map(|(_, v)| v);
        out.push(Channel { topic, prev_id });
    }
    Ok(out)
}

fn parse_keep_alive(value: &str) -> Result<KeepAlive, BadInstruction> {
    let bad = |m: String| BadInstruction::KeepAlive(m);
    let parts = split_outside_quotes(value, ';');
    let raw = unquote(parts[0]);
    let mut format = "raw".to_owned();
    let mut every = DEFAULT_TIMEOUT;
    let mut interval = false;
    for (k, v) in params(&parts[1..]) {
        match k.as_str() {
            "format" => format = v,
            "timeout" => {
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|&s| s > 0 && s <= MAX_TIMEOUT.as_secs())
                    .ok_or_else(|| {
                        bad(format!(
                            "timeout: expected whole seconds from 1 to {}, found {v:?}",
                            MAX_TIMEOUT.as_secs()
                        ))
                    })?;
                every = Duration::from_secs(secs);
            }
            "mode" => {
                interval = match v.as_str() {
                    "idle" => false,
                    "interval" => true,
                    _ => return Err(bad(format!("mode: expected idle or interval, found {v:?}"))),
                }
            }
            _ => {}
        }
    }
    let content = match format.as_str() {
        "raw" => raw.into_bytes(),
        "cstring" => cstring(&raw).map_err(bad)?,
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(raw.as_bytes())
            .map_err(|e| bad(format!("content is not base64: {e}")))?,
        other => {
            return Err(bad(format!(
                "format: expected raw, cstring or base64, found {other:?}"
            )))
        }
    };
    if content.is_empty() {
        return Err(bad("the content is empty".into()));
    }
    Ok(KeepAlive {
        content,
        every,
        interval,
    })
}

/// A C-style escaped string: `\n`, `\r`, `\t`, `\\`, `\"`, `\0`.
fn cstring(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'0') => 0,
            Some(b'\\') => b'\\',
            Some(b'"') => b'"',
            Some(other) => return Err(format!("cstring: unknown escape \\{}", other as char)),
            None => return Err("cstring: a lone \\ at the end".into()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(h: &[(&str, &str)]) -> Result<Option<Instruction>, BadInstruction> {
        parse(200, h.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())), 3)
    }

    /// A long-poll may hold a `304` (answered as it is at the timeout); a
    /// stream has nothing to stream on one.
    #[test]
    fn a_bodiless_status_holds_a_response_but_not_a_stream() {
        let h = |mode: &'static str| [("Grip-Hold", mode), ("Grip-Channel", "a")];
        let parse_at = |status, mode| {
            parse(
                status,
                h(mode).iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
                3,
            )
        };
        assert!(parse_at(304, "response").unwrap().is_some());
        assert_eq!(parse_at(304, "stream"), Err(BadInstruction::Bodiless(304)));
        assert_eq!(parse_at(204, "stream"), Err(BadInstruction::Bodiless(204)));
    }

    #[test]
    fn no_hold_is_no_instruction() {
        assert_eq!(
            p(&[("Content-Type", "text/plain"), ("Grip-Channel", "a")]),
            Ok(None)
        );
        // Without a hold the rest asks for nothing, wrong or not.
        assert_eq!(
            p(&[
                ("Grip-Channel", "a b"),
                ("Grip-Keep-Alive", "x; format=hex")
            ]),
            Ok(None)
        );
    }

    #[test]
    fn reads_a_stream_hold() {
        let i = p(&[
            ("grip-hold", "stream"),
            ("Grip-Channel", "a, b; prev-id=e-7"),
            ("GRIP-CHANNEL", "\"c\"; prev-id=\"x;y\""),
            (
                "Grip-Keep-Alive",
                "\\n; format=cstring; timeout=20; mode=interval",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(i.mode, Mode::Stream);
        let names: Vec<_> = i
            .channels
            .iter()
            .map(|c| (c.topic.as_str(), c.prev_id.as_deref()))
            .collect();
        assert_eq!(names, [("a", None), ("b", Some("e-7")), ("c", Some("x;y"))]);
        assert_eq!(
            i.keep_alive,
            Some(KeepAlive {
                content: b"\n".to_vec(),
                every: Duration::from_secs(20),
                interval: true
            })
        );
        assert_eq!(i.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn reads_a_response_hold_and_keep_alive_formats() {
        let i = p(&[
            ("Grip-Hold", "response"),
            ("Grip-Channel", "a"),
            ("Grip-Timeout", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (i.mode, i.timeout),
            (Mode::Response, Duration::from_secs(3))
        );
        let ka = |v: &str| {
            p(&[
                ("Grip-Hold", "stream"),
                ("Grip-Channel", "a"),
                ("Grip-Keep-Alive", v),
            ])
        };
        assert_eq!(
            ka("OiBwaW5nCgo=; format=base64")
                .unwrap()
                .unwrap()
                .keep_alive
                .unwrap()
                .content,
            b": ping\n\n"
        );
        let raw = ka(":ka").unwrap().unwrap().keep_alive.unwrap();
        assert_eq!(
            (raw.content, raw.every, raw.interval),
            (b":ka".to_vec(), DEFAULT_TIMEOUT, false)
        );
    }

    #[test]
    fn refuses_what_cannot_be_followed_naming_the_header() {
        let cases: [(&[(&str, &str)], &str); 9] = [
            (
                &[("Grip-Hold", "stream"), ("Grip-Channel", "a, b, c, d")],
                "4 channels, more than [events] max_topics (3)",
            ),
            (
                &[
                    ("Grip-Hold", "stream"),
                    ("Grip-Channel", "a"),
                    ("Grip-Keep-Alive", "x; timeout=18446744073709551615"),
                ],
                "timeout: expected whole seconds from 1 to 86400",
            ),
            (
                &[("Grip-Hold", "forever"), ("Grip-Channel", "a")],
                "Grip-Hold: expected stream or response",
            ),
            (&[("Grip-Hold", "stream")], "without Grip-Channel"),
            (
                &[("Grip-Hold", "stream"), ("Grip-Channel", "a b")],
                "Grip-Channel: \"a b\"",
            ),
            (
                &[
                    ("Grip-Hold", "stream"),
                    ("Grip-Channel", "a"),
                    ("Grip-Keep-Alive", "x; format=hex"),
                ],
                "format: expected raw",
            ),
            (
                &[
                    ("Grip-Hold", "stream"),
                    ("Grip-Channel", "a"),
                    ("Grip-Keep-Alive", "x; timeout=0"),
                ],
                "timeout: expected whole seconds",
            ),
            (
                &[
                    ("Grip-Hold", "stream"),
                    ("Grip-Channel", "a"),
                    ("Grip-Keep-Alive", "\\q; format=cstring"),
                ],
                "unknown escape",
            ),
            (
                &[
                    ("Grip-Hold", "response"),
                    ("Grip-Channel", "a"),
                    ("Grip-Timeout", "soon"),
                ],
                "Grip-Timeout: expected whole seconds",
            ),
        ];
        for (headers, want) in cases {
            let e = p(headers).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn grip_headers_are_recognised_by_prefix() {
        assert!(is_grip_header(b"Grip-Sig") && is_grip_header(b"grip-hold"));
        assert!(!is_grip_header(b"Gripper") && !is_grip_header(b"grip-"));
    }
}
