//! Just enough HTTP/1.1 for a load generator: write a request, read a
//! response head, and undo chunked transfer coding incrementally.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// What the generator needs of a response head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Reads a response head into `buf`; returns it and the number of bytes of
/// `buf` it used (the rest is body already read).
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<(Head, usize)> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            return Ok((head, end + 4));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::other("response head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(raw).map_err(|_| io::Error::other("head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut head = Head {
        status,
        chunked: false,
        content_length: None,
        close: status_line.starts_with("HTTP/1.0"),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            head.close = v.contains("close") || (head.close && !v.contains("keep-alive"));
        }
    }
    Ok(head)
}

/// Incremental chunked decoder: feed it whatever arrives, get the body bytes.
#[derive(Default)]
pub struct Dechunk {
    state: State,
    size: usize,
}

#[derive(Default, PartialEq, Debug)]
enum State {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Done,
}

impl Dechunk {
    /// Calls `out` with each run of body bytes in `input`. Returns false
    /// once the last chunk was seen (the body ended).
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> io::Result<bool> {
        while !input.is_empty() {
            match self.state {
                State::Size => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let d = (b as char).to_digit(16).unwrap_or(0) as usize;
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(d))
                                .ok_or_else(|| io::Error::other("chunk size overflow"))?;
                        }
                        b';' | b' ' | b'\t' => self.state = State::Ext,
                        b'\r' => self.state = State::SizeLf,
                        _ => return Err(io::Error::other("bad chunk size")),
                    }
                }
                State::Ext => {
                    if let Some(p) = input.iter().position(|&b| b == b'\r') {
                        input = &input[p + 1..];
                        self.state = State::SizeLf;
                    } else {
                        input = &[];
                    }
                }
                State::SizeLf => {
                    if input[0] != b'\n' {
                        return Err(io::Error::other("bad chunk size line"));
                    }
                    input = &input[1..];
                    if self.size == 0 {
                        self.state = State::Done;
                        return Ok(false);
                    }
                    self.state = State::Data;
                }
                State::Data => {
                    let n = self.size.min(input.len());
                    out(&input[..n]);
                    input = &input[n..];
                    self.size -= n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr | State::DataLf => {
                    let want = if self.state == State::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if input[0] != want {
                        return Err(io::Error::other("chunk not followed by CRLF"));
                    }
                    input = &input[1..];
                    self.state = if self.state == State::DataCr {
                        State::DataLf
                    } else {
                        State::Size
                    };
                }
                State::Done => return Ok(false),
            }
        }
        Ok(self.state != State::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_across_any_split() {
        let wire = b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut body = Vec::new();
            d.feed(&wire[..split], |b| body.extend_from_slice(b))
                .unwrap();
            let more = d
                .feed(&wire[split..], |b| body.extend_from_slice(b))
                .unwrap();
            assert!(!more);
            assert_eq!(body, b"hello, world");
        }
    }

    #[test]
    fn parses_head() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y").unwrap();
        assert_eq!(h.status, 200);
        assert!(h.chunked);
    }
}
