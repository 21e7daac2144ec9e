//! Configuration errors and `sidecast check`, on the real binary: one line
//! per problem, `FILE:LINE:COL: KEY: what was expected`, every problem of a
//! file in one run, secrets never printed, nothing listens on a bad file.
use crate::support;
use crate::support::ops;

use std::path::Path;

use ops::{check, run, write_config};
use support::sse::Sse;

const SECRET_ENV: (&str, &str) = ("SIDECAST_JWT_SECRET", support::SECRET);

/// `LINE:COL` of `value` on the first line of `text` that contains `line`.
fn at(text: &str, line: &str, value: &str) -> String {
    let (n, l) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(line))
        .unwrap_or_else(|| panic!("no line with {line:?}"));
    let col = l
        .find(value)
        .unwrap_or_else(|| panic!("{value:?} not on {l:?}"));
    format!("{}:{}", n + 1, col + 1)
}

/// Asserts that `problems` holds exactly one line per expected
/// `(line, value, key, message part)`, at the value's line and column.
fn assert_problems(
    path: &Path,
    text: &str,
    problems: &[String],
    want: &[(&str, &str, &str, &str)],
) {
    let file = path.display().to_string();
    for (line, value, key, part) in want {
        let prefix = format!("{file}:{}: {key}: ", at(text, line, value));
        let hits: Vec<&String> = problems.iter().filter(|p| p.starts_with(&prefix)).collect();
        assert_eq!(
            hits.len(),
            1,
            "want one problem starting {prefix:?}; got:\n{}",
            problems.join("\n")
        );
        assert!(hits[0].contains(part), "{:?} should say {part:?}", hits[0]);
    }
    assert_eq!(
        problems.len(),
        want.len(),
        "unexpected problems:\n{}",
        problems.join("\n")
    );
}

const EVERY_KIND: &str = r#"[listen]
public = "127.0.0.1:0"
admin = "localhost"
publish_socket_mode = "0999"
head_timeout = "10 parsecs"
keepalive = 5
colour = "blue"

[upstream]
url = "ftp://127.0.0.1:3000"

[events]
history_bytes = "lots"
cors_origins = ["https://ok.example", "*", "https://x.example/", "https://Up.example"]
max_streams = "many"

[auth]
algorithms = ["HS256", "HS257"]
secret_file = "missing-secret"
secret_env = "NO_SUCH_VAR_FOR_TEST"

[publish]
require_token = "yes"

[log]
level = "loud"

[[routes]]
path = "/a/events"
topics = ["a"]
extra = 1

[[routes]]
prefix = "/r/"
upstream = "localhost:4000"

[[history]]
pattern = "p/**"
sizee = 3

[surprise]
x = 1
"#;

#[test]
fn every_kind_of_problem_is_reported_in_one_run_at_its_line_and_column() {
    let path = write_config("every", EVERY_KIND);
    let out = check(&path, &[]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing but errors: {}", out.stdout);
    let problems = out.problems(&path);
    assert_problems(
        &path,
        EVERY_KIND,
        &problems,
        &[
            (
                "admin =",
                "\"localhost\"",
                "listen.admin",
                "expected an address",
            ),
            (
                "publish_socket_mode",
                "\"0999\"",
                "listen.publish_socket_mode",
                "octal",
            ),
            (
                "head_timeout",
                "\"10 parsecs\"",
                "listen.head_timeout",
                "expected a duration",
            ),
            ("keepalive", "5", "listen.keepalive", "found integer"),
            ("colour", "colour", "listen.colour", "unknown key"),
            ("url =", "\"ftp:", "upstream.url", "only http"),
            ("history_bytes", "\"lots\"", "events.history_bytes", "size"),
            (
                "cors_origins",
                "\"*\"",
                "events.cors_origins",
                "\"*\" is not allowed",
            ),
            (
                "cors_origins",
                "\"https://x.example/\"",
                "events.cors_origins",
                "no trailing slash",
            ),
            (
                "cors_origins",
                "\"https://Up.example\"",
                "events.cors_origins",
                "lower-case host",
            ),
            (
                "max_streams",
                "\"many\"",
                "events.max_streams",
                "\"auto\" or a positive integer",
            ),
            ("algorithms", "\"HS257\"", "auth.algorithms", "HS256"),
            (
                "secret_file",
                "\"missing-secret\"",
                "auth.secret_file",
                "cannot read",
            ),
            (
                "secret_env",
                "\"NO_SUCH_VAR_FOR_TEST\"",
                "auth.secret_env",
                "NO_SUCH_VAR_FOR_TEST is missing",
            ),
            (
                "require_token",
                "\"yes\"",
                "publish.require_token",
                "true or false",
            ),
            ("level =", "\"loud\"", "log.level", "expected a level"),
            ("extra", "extra", "routes[0].extra", "unknown key"),
            (
                "upstream = \"localhost",
                "\"localhost:4000\"",
                "routes[1].upstream",
                "expected an upstream URL",
            ),
            ("sizee", "sizee", "history[0].sizee", "unknown key"),
            ("[surprise]", "surprise", "surprise", "unknown section"),
        ],
    );
    // In the order of the file.
    let position = |p: &String| -> (usize, usize) {
        let mut it = p.rsplit_once(".toml:").unwrap().1.split(':');
        (
            it.next().unwrap().parse().unwrap(),
            it.next().unwrap().parse().unwrap(),
        )
    };
    let order: Vec<_> = problems.iter().map(position).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    // One more line says how many, and that nothing was started.
    assert!(
        out.stderr.contains("20 problem(s); nothing was started"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_toml_syntax_error_has_a_position_and_no_key() {
    let text =
        "[listen]\npublic = \"127.0.0.1:0\"\n\n[events]\nheartbeat = \"15s\nretry = \"3s\"\n";
    let path = write_config("syntax", text);
    let out = check(&path, &[]);
    assert_ne!(out.code, Some(0));
    let problems = out.problems(&path);
    assert_eq!(problems.len(), 1, "{}", out.stderr);
    let p = &problems[0];
    let rest = p
        .strip_prefix(&format!("{}:5:", path.display()))
        .unwrap_or_else(|| panic!("line 5: {p}"));
    let (col, message) = rest.split_once(": ").expect("COL: message");
    assert!(col.parse::<usize>().is_ok_and(|c| c >= 13), "{p}");
    assert!(
        !message.is_empty() && !message.contains("heartbeat:"),
        "{p}"
    );
}

#[test]
fn secrets_never_reach_the_output() {
    // A secret pasted where a variable's name belongs, a secret in an
    // unknown key, a syntax error on a line holding a secret, and a short
    // secret in the environment.
    let pasted = "p4sted-secret-value/0123456789+abcdef";
    let unknown = "unknown-key-secret-0123456789abcdef";
    let short = "short-env-secret";
    let text = format!(
        "[auth]\nsecret_env = \"{pasted}\"\nsecret = \"{unknown}\"\n\n[publish]\ntoken_env = \"{pasted}\"\n"
    );
    let path = write_config("secrets", &text);
    let out = check(&path, &[("SIDECAST_JWT_SECRET", short)]);
    assert_ne!(out.code, Some(0));
    let problems = out.problems(&path);
    assert_problems(
        &path,
        &text,
        &problems,
        &[
            ("secret_env", "\"p4sted", "auth.secret_env", "not its value"),
            ("secret =", "secret", "auth.secret", "unknown key"),
            (
                "token_env",
                "\"p4sted",
                "publish.token_env",
                "not its value",
            ),
        ],
    );
    for s in [pasted, unknown] {
        assert!(
            !out.all().contains(s),
            "a secret was printed:\n{}",
            out.all()
        );
    }

    // The variable itself holds a secret that is too short: named, not shown.
    let path = write_config("short", "[auth]\nrequired = true\n");
    let out = check(&path, &[("SIDECAST_JWT_SECRET", short)]);
    assert_ne!(out.code, Some(0));
    let problems = out.problems(&path);
    assert_eq!(problems.len(), 1, "{}", out.stderr);
    assert!(
        problems[0].contains(
            "auth.secret_env: $SIDECAST_JWT_SECRET: the HS secret is 16 bytes; at least 32"
        ),
        "{}",
        problems[0]
    );
    assert!(!out.all().contains(short));

    let leaked = "syntax-error-secret-0123456789abcdef";
    let path = write_config(
        "syntax-secret",
        &format!("[auth]\nsecret_env = \"{leaked}\n"),
    );
    let out = check(&path, &[]);
    assert_ne!(out.code, Some(0));
    assert_eq!(out.problems(&path).len(), 1, "{}", out.stderr);
    assert!(!out.all().contains(leaked), "{}", out.all());
}

#[test]
fn a_missing_variable_and_an_unreadable_key_file_are_named() {
    let dir = support::temp_dir("keys");
    let unreadable = dir.join("key.pem");
    std::fs::create_dir(&unreadable).expect("a directory cannot be read as a file");
    let text = format!(
        "[auth]\nsecret_env = \"SIDECAST_TEST_ABSENT\"\npublic_key_file = \"{}\"\n",
        unreadable.display()
    );
    let path = dir.join("sidecar.toml");
    std::fs::write(&path, &text).unwrap();
    let out = check(&path, &[]);
    assert_ne!(out.code, Some(0));
    assert_problems(
        &path,
        &text,
        &out.problems(&path),
        &[
            (
                "secret_env",
                "\"SIDECAST",
                "auth.secret_env",
                "SIDECAST_TEST_ABSENT is missing or empty",
            ),
            (
                "public_key_file",
                "\"/",
                "auth.public_key_file",
                &format!("cannot read {}", unreadable.display()),
            ),
        ],
    );
}

#[test]
fn run_with_a_bad_file_exits_before_listening() {
    let port = support::free_port();
    let text = format!("[listen]\npublic = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:0\"\npublish = \"127.0.0.1:0\"\n\n[events]\nheartbeat = \"soon\"\n");
    let path = write_config("run-bad", &text);
    let out = run(&["--config", path.to_str().unwrap()], &[SECRET_ENV], None);
    assert_ne!(out.code, Some(0));
    assert!(out.code.is_some(), "it exits, it is not killed");
    let problems = out.problems(&path);
    assert_eq!(problems.len(), 1, "{}", out.stderr);
    assert!(problems[0].starts_with(&format!("{}:7:13: events.heartbeat: ", path.display())));
    assert!(!out.stderr.contains("listening"), "{}", out.stderr);
    // And the port it was to listen on was never taken.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port still free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_gets_the_key_it_meant_at_start_and_on_reload_the_old_file_stays() {
    let text = "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\npublish = \"127.0.0.1:0\"\n\n[events]\nhistroy = 5\n";
    let path = write_config("typo", text);
    let out = run(&["--config", path.to_str().unwrap()], &[SECRET_ENV], None);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    let problems = out.problems(&path);
    assert_eq!(problems.len(), 1, "{}", out.stderr);
    let line = problems[0]
        .strip_prefix(&format!(
            "{}:7:1: events.histroy: unknown key, did you mean `history`? (known here: ",
            path.display()
        ))
        .unwrap_or_else(|| panic!("{}", problems[0]));
    // The list of the section's keys is still there.
    assert!(line.contains("heartbeat, history, history_bytes"), "{line}");
    assert!(!out.stderr.contains("listening"), "{}", out.stderr);

    // A running sidecast refuses the same typo on reload and keeps its file.
    let mut opts = support::Opts::new("http://127.0.0.1:9");
    opts.events = "retry = \"3s\"".into();
    let sc = support::Sidecast::start(&opts);
    opts.events = "retry = \"9s\"\nhistroy = 5".into();
    let file = sc.dir.join("sidecar.toml");
    let new = sc.dir.join("sidecar.toml.new");
    std::fs::write(&new, opts.toml()).unwrap();
    std::fs::rename(&new, &file).unwrap();
    sc.signal("HUP");
    sc.log_with(&[
        "events.histroy: unknown key, did you mean `history`?",
        "the previous configuration stays in force",
    ])
    .await;
    let token = sc.token("alice", &["news"]);
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    assert_eq!(s.status(), 200);
    let first = s.next_block(support::WAIT).await.expect("a first block");
    assert_eq!(first.retry, Some(3000), "the old retry is in force");
}

#[test]
fn check_prints_the_effective_settings_masked_warnings_and_routes() {
    let text = r#"[listen]
publish = "0.0.0.0:18081"

[events]
queue = 1000
history = 1000

[cluster]
redis = "redis://:hunter2-redis-password@127.0.0.1:6379"

[[routes]]
path = "/orders/{id}/events"
topics = ["orders/{id}"]

[[routes]]
prefix = "/reports/"
upstream = "http://127.0.0.1:4000"
strip_prefix = true
"#;
    let path = write_config("valid", text);
    let out = check(&path, &[SECRET_ENV]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for want in [
        "[listen]",
        "publish = \"0.0.0.0:18081\"",
        "keepalive = \"10m 20s\"",
        "queue = 1000",
        "max_streams = \"auto\"",
        "# max_streams = \"auto\" is ",
        "secret_env = \"SIDECAST_JWT_SECRET\"  # value masked",
        "[shutdown]",
        "redis = \"redis://***@127.0.0.1:6379\"",
        "events /orders/{id}/events -> topics orders/{id}",
        "proxy  /reports/* -> http://127.0.0.1:4000 (prefix stripped)",
        "proxy  /* -> http://127.0.0.1:3000",
        ": valid",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?} in:\n{}",
            out.stdout
        );
    }
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", out.stderr);
    assert!(warnings[0].contains("events.queue (1000) >= events.history (1000)"));
    assert!(warnings[1].contains(
        "listen.publish (0.0.0.0:18081) is not on loopback and publish.require_token is false"
    ));
    assert!(!out.all().contains(support::SECRET));
    assert!(!out.all().contains("hunter2"));

    // Neither warning when queue < history and the publish listener is on
    // loopback (or protected by a token).
    let text = "[listen]\npublish = \"0.0.0.0:18081\"\n\n[publish]\nrequire_token = true\n";
    let out = check(&write_config("quiet", text), &[SECRET_ENV]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}

#[test]
fn sidecast_config_names_the_default_file() {
    let path = write_config("env-default", "[events]\nheartbeat = \"7s\"\n");
    let empty = support::temp_dir("cwd");
    let out = run(
        &["check"],
        &[SECRET_ENV, ("SIDECAST_CONFIG", path.to_str().unwrap())],
        Some(&empty),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("heartbeat = \"7s\""), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("{}: valid", path.display())));
    // Without it, ./sidecar.toml: absent in that directory, and said so.
    let out = run(&["check"], &[SECRET_ENV], Some(&empty));
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.starts_with("sidecar.toml: cannot read"),
        "{}",
        out.stderr
    );
    // Present there, it is the one read.
    let cwd = support::temp_dir("cwd-file");
    std::fs::write(cwd.join("sidecar.toml"), "[events]\nheartbeat = \"9s\"\n").unwrap();
    let out = run(&["check"], &[SECRET_ENV], Some(&cwd));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("heartbeat = \"9s\""), "{}", out.stdout);
    // $SIDECAST_CONFIG wins over ./sidecar.toml, and --config over both.
    let env_file = path.to_str().unwrap();
    let out = run(
        &["check"],
        &[SECRET_ENV, ("SIDECAST_CONFIG", env_file)],
        Some(&cwd),
    );
    assert!(out.stdout.contains("heartbeat = \"7s\""), "{}", out.stdout);
    let flag = write_config("flag", "[events]\nheartbeat = \"11s\"\n");
    let out = run(
        &["check", "--config", flag.to_str().unwrap()],
        &[SECRET_ENV, ("SIDECAST_CONFIG", env_file)],
        Some(&cwd),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("heartbeat = \"11s\""), "{}", out.stdout);
}

/// Every key has a default: an empty file is valid (auth then needs only
/// the secret's variable).
#[test]
fn an_empty_file_is_valid() {
    let path = write_config("empty", "");
    let out = check(&path, &[SECRET_ENV]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(": valid"), "{}", out.stdout);
}

/// With neither key set, the publish listener is on loopback (127.0.0.1:8081)
/// and the Unix socket is off: `check` says so, and so does a sidecast
/// started on those defaults (its start-up line; or, when another process
/// holds that port, its refusal to start names that address).
#[test]
fn the_publish_listener_is_on_loopback_and_the_socket_off_by_default() {
    let path = write_config("publish-defaults", "");
    let out = check(&path, &[SECRET_ENV]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("publish = \"127.0.0.1:8081\"\npublish_socket = (not set)\n"),
        "{}",
        out.stdout
    );

    let path = write_config(
        "publish-defaults-run",
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    );
    let mut child = ops::command()
        .args(["--config", path.to_str().unwrap()])
        .env(SECRET_ENV.0, SECRET_ENV.1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sidecast");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + support::WAIT;
    let mut seen = Vec::new();
    let verdict = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("sidecast listening") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None, // ended (its refusal is in `seen`) or timed out
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    match verdict {
        Some(line) => assert!(
            line.contains("publish=127.0.0.1:8081") && line.contains("publish_socket=off"),
            "{line}"
        ),
        None => {
            let log = seen.join("\n");
            assert!(
                log.contains("127.0.0.1:8081"),
                "neither started nor named the default publish address:\n{log}"
            );
        }
    }
}

#[test]
fn the_shipped_sidecar_toml_passes_check() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("sidecar.toml");
    let out = check(&shipped, &[SECRET_ENV]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(": valid"));
    // Its auth is on: without the secret it refuses, naming the variable.
    let out = check(&shipped, &[]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains(
            "auth.secret_env: the environment variable SIDECAST_JWT_SECRET is missing or empty"
        ),
        "{}",
        out.stderr
    );
}

/// `sidecast check | head` stops reading early: the verdict is still the
/// exit status (0 for a valid file), and nothing panics.
#[test]
fn check_whose_reader_went_away_still_gives_its_verdict() {
    let path = write_config("check-pipe", "[auth]\nrequired = false\n");
    // The reading end is closed before sidecast starts, so its first write
    // surely fails with a broken pipe.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = ops::command()
        .args(["check", "--config", path.to_str().expect("utf-8 path")])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run sidecast check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// GRIP's keys: a wrong type is named where it stands, and a Grip-Sig key
/// variable that is named but not set stops the start (an app that checks
/// Grip-Sig would refuse every request); set, `check` masks it.
#[test]
fn grip_keys_are_checked_and_the_sig_key_is_masked() {
    let text = "[upstream]\ngrip = \"yes\"\ngrip_sig_key_env = \"SIDECAST_TEST_GRIP_ABSENT\"\n\
                [[routes]]\nprefix = \"/live/\"\nupstream = \"http://127.0.0.1:4000\"\ngrip = 1\n";
    let path = write_config("grip", text);
    let out = check(&path, &[SECRET_ENV]);
    assert_ne!(out.code, Some(0));
    assert_problems(
        &path,
        text,
        &out.problems(&path),
        &[
            (
                "grip = \"yes\"",
                "\"yes\"",
                "upstream.grip",
                "expected true or false",
            ),
            (
                "grip_sig_key_env",
                "\"SIDECAST",
                "upstream.grip_sig_key_env",
                "SIDECAST_TEST_GRIP_ABSENT is not set",
            ),
            ("grip = 1", "1", "routes[0].grip", "expected true or false"),
        ],
    );
    let ok = "[upstream]\ngrip = true\ngrip_sig_key_env = \"SIDECAST_TEST_GRIP_KEY\"\n";
    let path = write_config("grip-ok", ok);
    let out = check(
        &path,
        &[SECRET_ENV, ("SIDECAST_TEST_GRIP_KEY", "grip-secret-value")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("grip = true"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("grip_sig_key_env = \"SIDECAST_TEST_GRIP_KEY\"  # value masked"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("grip-secret-value"));
}
