//! Properties over many random inputs: the request-head parser never
//! panics and never returns a head it could not have read, and SSE framing
//! never panics and round-trips through an independent SSE parser, every
//! line break of the payload becoming a `data:` line, nothing lost or merged.
use crate::support;

use proptest::prelude::*;
use sidecast::events::frame::{sse_text, Event, NewEvent};
use sidecast::http1::head::{parse, HeadError};
use sidecast::topic::Topic;
use support::sse::parse_blocks;

/// Bytes that look like the start of a request, then anything.
fn requestish() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec![
        "GET", "POST", "HEAD", "OPTIONS", "PUT", "CONNECT", "G(T", "", "get",
    ]);
    let target = "[ -~]{0,40}";
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1x", ""]);
    let header = (
        "[!-~&&[^:]]{0,12}",
        prop::collection::vec(any::<u8>(), 0..24),
        prop::sample::select(vec!["\r\n", "\n", "\r", ""]),
    );
    let tail = prop::collection::vec(any::<u8>(), 0..32);
    (
        method,
        target,
        version,
        prop::collection::vec(header, 0..8),
        prop::bool::ANY,
        tail,
    )
        .prop_map(|(m, t, v, hs, end, tail)| {
            let mut b = format!("{m} {t} {v}\r\n").into_bytes();
            for (n, val, eol) in hs {
                b.extend_from_slice(n.as_bytes());
                b.extend_from_slice(b": ");
                b.extend_from_slice(&val);
                b.extend_from_slice(eol.as_bytes());
            }
            if end {
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(&tail);
            b
        })
}

fn check_head(bytes: &[u8], max: usize) {
    match parse(bytes, max) {
        Ok(Some(h)) => {
            assert!(h.len <= bytes.len() && h.len <= max, "{h:?}");
            // The head ends with its empty line. A line may end in a bare
            // LF (RFC 9112 §2.2 lets a recipient accept one), so the last
            // field line and the empty line end in LF or CRLF each.
            assert!(bytes[..h.len].ends_with(b"\n\n") || bytes[..h.len].ends_with(b"\n\r\n"));
            // A head parses the same from its own bytes, with or without
            // what followed it.
            let again = parse(&bytes[..h.len], max).unwrap().unwrap();
            assert_eq!(
                (again.method.as_str(), again.len),
                (h.method.as_str(), h.len)
            );
            assert!(!h.method.is_empty());
            assert!(!bytes[..h.len]
                .windows(2)
                .any(|w| w[0] == b'\r' && w[1] != b'\n'));
            // Never ambiguous framing.
            let te = h.header("transfer-encoding").is_some();
            let cl = h.header("content-length").is_some();
            assert!(!(te && cl), "{h:?}");
        }
        Ok(None) => {}
        Err(HeadError::Malformed(m)) => assert!(!m.is_empty()),
        Err(HeadError::TooLarge(n)) => assert_eq!(n, max),
        Err(e) => panic!("parse gave a reader-only error {e:?}"),
    }
    // Every prefix is either incomplete or a verdict; never a panic.
    for cut in [
        0,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len().saturating_sub(1),
    ] {
        let _ = parse(&bytes[..cut.min(bytes.len())], max);
    }
}

/// What the payload must read as on the client: every `\r\n`, `\r` and
/// `\n` one line break.
fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Payload text rich in line breaks, colons, spaces and non-ASCII.
fn payload() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-z0-9 :]{0,6}",
            2 => prop::sample::select(vec!["\n", "\r", "\r\n", "\n\r", "\r\r", "\n\n"]).prop_map(str::to_owned),
            1 => prop::sample::select(vec![" ", ":", "data: x", "id: y", "é", "😀", "\u{0}", "\t"]).prop_map(str::to_owned),
            1 => any::<String>(),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(support::proptest_config(2000))]

    #[test]
    fn head_parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600), max in 16usize..2048) {
        check_head(&bytes, max);
    }

    #[test]
    fn head_parse_never_panics_on_requestish_bytes(bytes in requestish(), max in prop::sample::select(vec![64usize, 256, 16384])) {
        check_head(&bytes, max);
    }

    #[test]
    fn sse_text_round_trips(
        data in payload(),
        id in "[A-Za-z0-9_.:-]{0,24}",
        name in prop::option::of("[a-z][a-z0-9._-]{0,16}"),
        retry in prop::option::of(0u64..100_000),
    ) {
        let text = sse_text(&id, name.as_deref(), retry, &data);
        let mut s = String::from_utf8(text.to_vec()).expect("framing keeps UTF-8");
        let blocks = parse_blocks(&mut s);
        prop_assert_eq!(s.as_str(), "", "nothing left over");
        prop_assert_eq!(blocks.len(), 1, "one event, one block: {:?}", blocks);
        let b = &blocks[0];
        let want = normalized(&data);
        prop_assert_eq!(b.data.as_deref(), Some(want.as_str()));
        prop_assert_eq!(b.id.as_deref(), (!id.is_empty()).then_some(id.as_str()));
        prop_assert_eq!(b.event.as_deref(), name.as_deref());
        prop_assert_eq!(b.retry, retry);
        prop_assert_eq!(b.comments, 0);
        // One data line per line of the payload.
        let lines = text[..].split(|&c| c == b'\n').filter(|l| l.starts_with(b"data:")).count();
        prop_assert_eq!(lines, normalized(&data).split('\n').count());
    }

    #[test]
    fn events_frame_once_and_read_back(
        datas in prop::collection::vec(payload(), 1..6),
        name in prop::option::of("[a-z][a-z0-9._-]{0,16}"),
    ) {
        let mut stream = String::new();
        let mut chunked = Vec::new();
        let mut ids = Vec::new();
        for (i, data) in datas.iter().enumerate() {
            let id = format!("ep-{i}");
            let new = NewEvent {
                topics: vec![Topic::parse("a/b").unwrap()],
                data: data.clone(),
                name: name.clone(),
                user: None,
                retry: None,
                idempotency_key: None,
                grip: None,
            };
            let e = Event::new(i as u64, &id, &new);
            prop_assert_eq!(e.id(), id.as_str());
            prop_assert_eq!(e.data(), normalized(data));
            prop_assert_eq!(&e.wire(false)[..], &e.sse()[..]);
            chunked.extend_from_slice(&e.wire(true));
            stream.push_str(std::str::from_utf8(&e.wire(false)).unwrap());
            ids.push(id);
        }
        // The chunked wire decodes to the same stream.
        let dechunked = support::http::dechunk(&chunked);
        prop_assert_eq!(String::from_utf8(dechunked).unwrap(), stream.clone());
        // Back to back on one stream, nothing merges or splits.
        let blocks = parse_blocks(&mut stream);
        prop_assert_eq!(blocks.len(), datas.len());
        for ((b, data), id) in blocks.iter().zip(&datas).zip(&ids) {
            prop_assert_eq!(b.id.as_deref(), Some(id.as_str()));
            let want = normalized(data);
            prop_assert_eq!(b.data.as_deref(), Some(want.as_str()));
            prop_assert_eq!(b.event.as_deref(), name.as_deref());
        }
    }
}

/// pingora's reader over in-memory bytes: does it take the head that
/// sidecast's reader accepted? (Else pingora would answer with its own
/// error page.)
mod pingora_reader {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use pingora::protocols::http::ServerSession;
    use pingora::protocols::l4::stream::Stream as L4Stream;
    use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
    use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

    #[derive(Debug)]
    struct Mem(DuplexStream);

    impl AsyncRead for Mem {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Mem {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl VirtualSocket for Mem {
        fn set_socket_option(&self, _opt: VirtualSockOpt) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `Ok(())` when pingora reads `head` as a request, else its error.
    pub fn accepts(head: &[u8]) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (ours, mut theirs) = tokio::io::duplex(1 << 20);
            theirs.write_all(head).await.unwrap();
            let stream = L4Stream::from(VirtualSocketStream::new(Box::new(Mem(ours))));
            let mut s = ServerSession::new_http1(Box::new(stream));
            match s.read_request().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("no request".into()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Heads that sidecast's reader may accept, with the odd corners that
/// strict readers differ on.
fn plausible_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec![
        "GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "M-SEARCH",
    ]);
    let target = prop_oneof![
        "/[a-zA-Z0-9/_.~%!$&'()*+,;=:@-]{0,30}(\\?[a-zA-Z0-9=&%/?:@+-]{0,20})?",
        Just("*".to_owned()),
        "http://[a-z.]{1,10}(:[0-9]{1,5})?/[a-z]{0,5}",
        "//[a-z]{0,5}",
    ];
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
    let host = prop_oneof![
        "[a-z0-9.-]{0,15}(:[0-9]{0,6})?",
        "\\[::1\\](:[0-9]{1,5})?",
        "[ -~]{0,12}",
    ];
    let header = (
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
        "[ -~\t\u{80}-\u{ff}]{0,20}",
    );
    let framing = prop::sample::select(vec![
        "",
        "Content-Length: 0\r\n",
        "Content-Length: 007\r\n",
        "Content-Length: 18446744073709551615\r\n",
        "Content-Length: 18446744073709551616\r\n",
        "Content-Length: 99999999999999999999999999\r\n",
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: Chunked\r\n",
        "Transfer-Encoding:  chunked \r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: identity\r\n",
        "Connection: close, upgrade\r\nUpgrade: websocket\r\n",
        "Expect: 100-continue\r\n",
    ]);
    (
        method,
        target,
        version,
        prop::option::weighted(0.9, host),
        prop::collection::vec(header, 0..6),
        framing,
    )
        .prop_map(|(m, t, v, host, hs, framing)| {
            let mut b = format!("{m} {t} {v}\r\n").into_bytes();
            if let Some(h) = host {
                b.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
            }
            b.extend_from_slice(framing.as_bytes());
            for (n, val) in hs {
                b.extend_from_slice(n.as_bytes());
                b.extend_from_slice(b": ");
                // chars 0x80..0xff as single bytes (obs-text)
                b.extend(val.chars().map(|c| c as u32 as u8));
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"\r\n");
            b
        })
}

/// Whatever sidecast's reader passes on to pingora, pingora reads too:
/// no request can reach an error answer of the proxy library's own.
/// Run by hand (not in `proptest!`) so that it can count the heads sidecast
/// accepted: a generator that produced only refused heads would check
/// nothing, so a minimum of accepted ones is asserted.
#[test]
fn pingora_takes_every_head_sidecast_passes() {
    use proptest::test_runner::{Config, TestRunner};
    const CASES: u32 = 3000;
    let accepted = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        source_file: Some(file!()),
        ..Config::default()
    });
    let result = runner.run(&plausible_head(), |head| {
        if let Ok(Some(h)) = parse(&head, 16384) {
            if h.method != "CONNECT" {
                accepted.set(accepted.get() + 1);
                let r = pingora_reader::accepts(&head);
                prop_assert!(
                    r.is_ok(),
                    "sidecast took {:?} but pingora refused it: {:?}",
                    String::from_utf8_lossy(&head),
                    r
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // About a quarter are accepted (780 of 3000 on average, spread ±25):
    // a tenth is far below what chance gives, and far above nothing.
    assert!(
        accepted.get() >= CASES / 10,
        "only {} of {CASES} generated heads were accepted by sidecast: the property was hardly checked",
        accepted.get()
    );
    eprintln!("{} of {CASES} heads accepted and checked", accepted.get());
}

#[test]
fn pingora_takes_long_targets_sidecast_passes() {
    let mut taken = 0;
    for len in [
        1000usize, 65_000, 65_532, 65_533, 65_534, 65_600, 70_000, 200_000,
    ] {
        let head = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(len - 1));
        match parse(head.as_bytes(), 1 << 20) {
            Ok(Some(_)) => {
                taken += 1;
                let r = pingora_reader::accepts(head.as_bytes()).map_err(|e| e.len());
                assert!(
                    r.is_ok(),
                    "a target of {len} bytes passed sidecast, not pingora"
                );
            }
            Err(HeadError::TargetTooLong(_)) => assert!(len > 60_000, "{len}"),
            other => panic!("{len}: {:?}", other.map(|h| h.map(|h| h.len))),
        }
    }
    assert!(taken >= 3);
}
