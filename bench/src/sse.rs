//! A minimal SSE reader: lines in, one callback per dispatched event with
//! its `data` (data lines joined by `\n`, as the SSE spec says). `id:` and
//! comments are counted, other fields ignored.

#[derive(Default)]
pub struct Sse {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    after_cr: bool,
    pub ids: u64,
    pub comments: u64,
}

/// Longest line kept; longer ones are cut (the generator's payloads are short).
const MAX_LINE: usize = 64 * 1024;

impl Sse {
    pub fn feed(&mut self, input: &[u8], on_event: &mut impl FnMut(&[u8])) {
        let mut rest = input;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(p) => {
                    if self.line.is_empty() {
                        self.line_done(&rest[..p], on_event);
                    } else {
                        self.push_line(&rest[..p]);
                        let line = std::mem::take(&mut self.line);
                        self.line_done(&line, on_event);
                        self.line = line;
                        self.line.clear();
                    }
                    self.after_cr = rest[p] == b'\r';
                    rest = &rest[p + 1..];
                }
                None => {
                    self.push_line(rest);
                    rest = &[];
                }
            }
        }
    }

    fn push_line(&mut self, b: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&b[..b.len().min(room)]);
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if line.is_empty() {
            if self.has_data {
                on_event(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" => self.ids += 1,
            _ => {}
        }
    }
}

/// One benchmark event: phase, sequence number within the phase, the
/// publisher's CLOCK_MONOTONIC send time in microseconds, and `floor`: every
/// event numbered below it had been accepted (its publish answered) before
/// this one was sent, so each of them must reach a stream before this one.
/// Events published concurrently (neither answered before the other was
/// sent) have no order a system must keep.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Mark {
    pub phase: u32,
    pub seq: u32,
    pub floor: u32,
    pub sent_us: u64,
}

/// The payload text for a mark, padded with `x` to at least `pad` bytes.
pub fn payload(m: Mark, pad: usize) -> String {
    let mut s = format!("p={} s={} f={} t={}", m.phase, m.seq, m.floor, m.sent_us);
    if s.len() < pad {
        s.push(' ');
        while s.len() < pad {
            s.push('x');
        }
    }
    s
}

fn field(data: &[u8], key: &[u8]) -> Option<u64> {
    let at = data.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = &data[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

pub fn parse_mark(data: &[u8]) -> Option<Mark> {
    Some(Mark {
        phase: field(data, b"p=")? as u32,
        seq: field(data, b"s=")? as u32,
        floor: field(data, b"f=")? as u32,
        sent_us: field(data, b"t=")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(wire: &[u8], split: usize) -> Vec<Vec<u8>> {
        let mut s = Sse::default();
        let mut out = Vec::new();
        let mut cb = |d: &[u8]| out.push(d.to_vec());
        s.feed(&wire[..split], &mut cb);
        s.feed(&wire[split..], &mut cb);
        out
    }

    #[test]
    fn parses_events_across_any_split() {
        let wire = b"retry: 3000\n\n: hi\n\nid: 1\ndata: a\ndata: b\n\r\nid: 2\r\ndata:c\r\r";
        for split in 0..wire.len() {
            assert_eq!(
                events(wire, split),
                vec![b"a\nb".to_vec(), b"c".to_vec()],
                "{split}"
            );
        }
    }

    #[test]
    fn mark_round_trips() {
        let m = Mark {
            phase: 3,
            seq: 41,
            floor: 40,
            sent_us: 123456789,
        };
        assert_eq!(parse_mark(payload(m, 0).as_bytes()), Some(m));
        let padded = payload(m, 200);
        assert_eq!(padded.len(), 200);
        assert_eq!(parse_mark(padded.as_bytes()), Some(m));
    }
}
