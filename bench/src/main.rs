//! `loadgen`: the load generator of sidecast's side-by-side benchmarks.
//!
//! `loadgen sub ...` holds SSE streams and measures delivery (see sub.rs);
//! `loadgen pub ...` publishes numbered, timestamped events at a fixed rate
//! to sidecast, nchan or Pushpin (see publish.rs). Both print JSON lines.

mod args;
mod hist;
mod http;
mod json;
mod publish;
mod sse;
mod sub;
mod sys;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("sub") => args::Args::parse(&argv[1..], sub::FLAGS).and_then(|a| sub::run(&a)),
        Some("pub") => args::Args::parse(&argv[1..], publish::FLAGS).and_then(|a| publish::run(&a)),
        _ => Err(
            "usage: loadgen sub|pub --flag value ... (see bench/README in BENCHMARKS.md)".into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
}
