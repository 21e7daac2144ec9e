//! Helpers for the operations tests (config, metrics, reload, drain,
//! limits): the command line run to its end, a strict Prometheus scrape,
//! and a raw stream reader that timestamps what arrives.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, WAIT};

/// What a finished `sidecast` command printed.
#[derive(Debug)]
pub struct Out {
    /// `None` when it was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for "never printed" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The stderr lines that name the file (one per problem).
    pub fn problems(&self, file: &Path) -> Vec<String> {
        let prefix = format!("{}:", file.display());
        self.stderr
            .lines()
            .filter(|l| l.starts_with(&prefix) && !l.contains("problem(s)"))
            .map(str::to_owned)
            .collect()
    }
}

/// The binary with a clean environment: no `RUST_LOG`, no `SIDECAST_*`.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidecast"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k == "RUST_LOG" || k.starts_with("SIDECAST_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `sidecast ARGS` to its end (killed after [`WAIT`]), reading both
/// pipes meanwhile: the one way the tests run a command that ends by
/// itself (`check`, `token`, a start-up that must fail).
pub fn run(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Out {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = support::output_within(&mut cmd, WAIT, &format!("sidecast {args:?}"));
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` as `sidecar.toml` in a fresh directory; its path.
pub fn write_config(tag: &str, text: &str) -> PathBuf {
    let path = support::temp_dir(tag).join("sidecar.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `sidecast check --config PATH`.
pub fn check(path: &Path, env: &[(&str, &str)]) -> Out {
    run(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        env,
        None,
    )
}

/// One sample line of the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Lexes one sample line by the text format's grammar: a metric name, an
/// optional `{name="value",...}` (values with `\\`, `\"` and `\n` escapes,
/// so `}` may stand inside one), a value, an optional timestamp.
pub fn lex_sample(line: &str) -> Result<Sample, String> {
    let err = |why: &str| format!("{why}: {line:?}");
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(err("no metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let k_end = r.find('=').ok_or_else(|| err("label without ="))?;
            let key = &r[..k_end];
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err("bad label name"));
            }
            r = r[k_end + 1..]
                .strip_prefix('"')
                .ok_or_else(|| err("unquoted label value"))?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err(err("unterminated label value")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err(err("bad escape")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            r = &r[close + 1..];
            r = r.strip_prefix(',').unwrap_or(r);
        }
    }
    let mut fields = rest.split_whitespace();
    let raw = fields.next().ok_or_else(|| err("no value"))?;
    if !rest.starts_with([' ', '\t']) {
        return Err(err("no space before the value"));
    }
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| err("bad value"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
    }
    if fields.next().is_some() {
        return Err(err("trailing text"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A `/metrics` scrape, checked strictly against the text format: every
/// line is a `# HELP`/`# TYPE` line, another comment, or a sample by the
/// grammar; every sample belongs to a family that a `# TYPE` line declared
/// before it. It is also read by a Prometheus text parser (the
/// prometheus-parse crate), whose every sample must be one of ours; that
/// parser's regex skips samples with a `}` inside a label value (such as
/// the route `/orders/{id}/events`), which is why the grammar check is
/// ours.
pub struct Scrape {
    pub text: String,
    pub content_type: String,
    /// Family name → type, from the `# TYPE` lines.
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
    pub parsed: prometheus_parse::Scrape,
}

impl Scrape {
    pub async fn get(admin: &str) -> Scrape {
        let r = support::http::request(admin, "GET", "/metrics", &[], b"").await;
        assert_eq!(r.status, 200);
        let content_type = r.header("content-type").unwrap_or("").to_owned();
        Scrape::parse(r.text(), content_type)
    }

    pub fn parse(text: String, content_type: String) -> Scrape {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{name} twice"
                );
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let s = lex_sample(line).unwrap_or_else(|e| panic!("not the text format: {e}"));
            let histogram_base = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| s.name.strip_suffix(suffix))
                .find(|base| types.get(*base).map(String::as_str) == Some("histogram"));
            assert!(
                types.contains_key(&s.name) || histogram_base.is_some(),
                "sample {} belongs to no declared family:\n{text}",
                s.name
            );
            samples.push(s);
        }
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("prometheus text parses");
        for p in &parsed.samples {
            if let prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) = p.value
            {
                let ours = samples.iter().any(|s| {
                    s.name == p.metric
                        && s.value == v
                        && s.labels.len() == p.labels.len()
                        && s.labels
                            .iter()
                            .all(|(k, val)| p.labels.get(k) == Some(val.as_str()))
                });
                assert!(ours, "the parser read a sample the grammar did not: {p:?}");
            }
        }
        Scrape {
            text,
            content_type,
            types,
            samples,
            parsed,
        }
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// A histogram's `_count`.
    pub fn histogram_count(&self, name: &str) -> f64 {
        self.value(&format!("{name}_count"), &[])
    }

    /// A histogram's bucket (cumulative count at or under `le`).
    pub fn bucket(&self, name: &str, le: &str) -> f64 {
        self.value(&format!("{name}_bucket"), &[("le", le)])
    }
}

/// A raw events (or any) response read byte by byte, with the time each
/// piece arrived: for the drain, which must see the last `retry:` and the
/// chunked terminator, and when the stream ended.
pub struct RawStream {
    io: TcpStream,
    pub bytes: Vec<u8>,
    pub ended_at: Option<Instant>,
}

impl RawStream {
    pub async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> RawStream {
        let mut io = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        io.write_all(req.as_bytes()).await.expect("send");
        RawStream {
            io,
            bytes: Vec::new(),
            ended_at: None,
        }
    }

    /// Reads until `pred` holds for what arrived so far.
    pub async fn read_until(&mut self, what: &str, pred: impl Fn(&[u8]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred(&self.bytes) {
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap_or(0);
            assert!(n > 0, "connection closed before {what}: {:?}", self.text());
            self.bytes.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads to the end of the connection (within `within`); the time it
    /// ended.
    pub async fn read_to_end(&mut self, within: Duration) -> Instant {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no end within {within:?}: {:?}", self.text()))
                .unwrap_or(0);
            if n == 0 {
                let at = Instant::now();
                self.ended_at = Some(at);
                return at;
            }
            self.bytes.extend_from_slice(&buf[..n]);
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The body, de-chunked, as text.
    pub fn body(&self) -> String {
        let end = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        String::from_utf8_lossy(&support::http::dechunk(&self.bytes[end..])).into_owned()
    }

    /// The `retry:` values in the body, in order.
    pub fn retries(&self) -> Vec<u64> {
        self.body()
            .lines()
            .filter_map(|l| l.strip_prefix("retry: "))
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    }

    pub fn into_inner(self) -> TcpStream {
        self.io
    }
}

/// `GET /readyz`: status and JSON body.
pub async fn readyz(admin: &str) -> (u16, serde_json::Value) {
    let r = support::http::request(admin, "GET", "/readyz", &[], b"").await;
    (r.status, r.json())
}

/// Starts sidecast with `opts`, its `[shutdown]` section replaced by
/// `shutdown` (lines of that section).
pub fn start_with_shutdown(opts: &support::Opts, shutdown: &str) -> support::Sidecast {
    let default = "[shutdown]\ngrace = \"5s\"\n";
    let text = opts.toml();
    assert!(text.contains(default), "Opts::toml changed its [shutdown]");
    let text = text.replace(default, &format!("[shutdown]\n{shutdown}\n"));
    let path = write_config("shutdown", &text);
    support::Sidecast::start_file(&path, &opts.env)
}

/// Whether a new TCP connection to `addr` is accepted.
pub async fn connects(addr: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The families (name, type) that the reference parsers of Prometheus's
/// own Python client read from `text`: its Prometheus text parser, or its
/// strict OpenMetrics parser, run by the suite's own Python
/// ([`support::python`]). `None` when it or the package is missing and
/// skipping is allowed (otherwise that fails: scripts/test installs
/// tests/requirements.txt into its venv). Counter names come back without `_total`, as
/// that library names families.
pub fn python_families(text: &str, openmetrics: bool) -> Option<Vec<(String, String)>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families as prom
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
except ImportError:
    sys.exit(3)
parse = om if sys.argv[1] == "openmetrics" else prom
print(json.dumps([[f.name, f.type] for f in parse(sys.stdin.read())]))
"#;
    let python = support::python()?;
    let mut child = Command::new(&python)
        .args([
            "-c",
            SCRIPT,
            if openmetrics {
                "openmetrics"
            } else {
                "prometheus"
            },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        support::skip(&format!(
            "the Python package prometheus_client is not installed in {}",
            python.display()
        ));
        return None;
    }
    assert!(
        out.status.success(),
        "the reference parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("json"))
}
