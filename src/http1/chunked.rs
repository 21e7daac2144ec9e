//! Where a chunked body ends (RFC 9112 §7.1), found without decoding it.
//! A relay that passes chunked bytes through as they came must still know
//! where the body stops: what follows belongs to the next message on the
//! connection, never to this one.

/// A malformed chunked body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("bad chunk size line")]
    Size,
    #[error("chunk size too large")]
    Overflow,
    #[error("chunk data not followed by CRLF")]
    Delimiter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits; `digits` seen so far.
    Size {
        n: u64,
        digits: u8,
    },
    /// After the size: extensions or whitespace, up to CR.
    Ext {
        n: u64,
    },
    /// CR seen after the size line, LF due.
    SizeLf {
        n: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    /// CR of the final empty line seen, LF due.
    EndLf,
    Done,
}

/// Scans a chunked body piece by piece.
#[derive(Debug, Clone)]
pub struct ChunkScan {
    state: State,
}

impl Default for ChunkScan {
    fn default() -> Self {
        ChunkScan {
            state: State::Size { n: 0, digits: 0 },
        }
    }
}

impl ChunkScan {
    /// Whether the whole body (last chunk, trailers, final CRLF) was seen.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds the next bytes of the body; how many of them belong to it
    /// (all of them, or fewer when the body ends inside `bytes`).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Size { n, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        if digits >= 15 {
                            return Err(ChunkError::Overflow);
                        }
                        State::Size {
                            n: n * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    b';' | b' ' | b'\t' if digits > 0 => State::Ext { n },
                    b'\r' if digits > 0 => State::SizeLf { n },
                    _ => return Err(ChunkError::Size),
                },
                State::Ext { n } if b == b'\r' => State::SizeLf { n },
                State::Ext { n } => State::Ext { n },
                State::SizeLf { n } => match (b, n) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data(n),
                    _ => return Err(ChunkError::Size),
                },
                State::Data(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data(left - take)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { n: 0, digits: 0 },
                State::DataCr | State::DataLf => return Err(ChunkError::Delimiter),
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerStart | State::TrailerLine if b != b'\r' => State::TrailerLine,
                State::TrailerStart | State::TrailerLine => State::TrailerLf,
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                State::TrailerLf | State::EndLf => return Err(ChunkError::Delimiter),
            };
            i += 1;
        }
        Ok(i)
    }
}

/// The data of a whole chunked body that [`ChunkScan`] found complete
/// (sizes, extensions and trailers dropped): for the few bodies sidecast
/// keeps instead of relaying (a GRIP hold's initial content).
pub fn decode(raw: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(ChunkError::Size)?;
        let digits = rest[..line_end]
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let text = std::str::from_utf8(digits).map_err(|_| ChunkError::Size)?;
        let n = usize::from_str_radix(text, 16).map_err(|_| ChunkError::Size)?;
        rest = &rest[line_end + 2..];
        if n == 0 {
            return Ok(out);
        }
        if rest.len() < n + 2 || &rest[n..n + 2] != b"\r\n" {
            return Err(ChunkError::Delimiter);
        }
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_whole_body() {
        let raw = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n";
        let mut scan = ChunkScan::default();
        assert_eq!(scan.feed(raw), Ok(raw.len()));
        assert!(scan.done());
        assert_eq!(decode(raw).unwrap(), b"hello!");
        assert_eq!(decode(b"0\r\n\r\n").unwrap(), b"");
        assert_eq!(decode(b"5\r\nhel"), Err(ChunkError::Delimiter));
    }

    /// Feeds `body` in pieces of `step` bytes; the length of the body.
    fn scan(body: &[u8], step: usize) -> Result<Option<usize>, ChunkError> {
        let mut s = ChunkScan::default();
        let mut at = 0;
        for piece in body.chunks(step) {
            let n = s.feed(piece)?;
            at += n;
            if s.done() {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_in_any_pieces() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for step in 1..body.len() {
            assert_eq!(scan(body, step), Ok(Some(end)), "step {step}");
        }
        assert_eq!(scan(b"0\r\n\r\n", 1), Ok(Some(5)));
        assert_eq!(scan(b"5\r\nhel", 2), Ok(None));
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert_eq!(scan(b"x\r\n", 1), Err(ChunkError::Size));
        assert_eq!(scan(b"\r\n", 1), Err(ChunkError::Size));
        assert_eq!(scan(b"2\r\nabX", 1), Err(ChunkError::Delimiter));
        assert_eq!(scan(b"ffffffffffffffff1\r\n", 1), Err(ChunkError::Overflow));
    }
}
