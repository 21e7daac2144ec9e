//! JWT keys: HS secrets from a variable and from a file, PEM public keys
//! (RSA, EC, Ed25519), a JWKS file chosen by kid, several at once; key
//! files reloading (a new key verifies, a stream of a dropped key closes);
//! and start-up refusing a missing, short or unreadable key by name.
//! Asymmetric tokens are made with the `openssl` command line.
use crate::support;
use crate::support::scrape;
use crate::support::signers;

use serde_json::{json, Value};
use signers::{KeyPair, Kind};
use support::http::Response;
use support::jwt::now;
use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast, SECRET, WAIT};

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "topics": ["news"], "exp": now() + 600})
}

/// One `GET /events?topic=news` with `tok`: a stream's head (the stream is
/// dropped), or a refusal read whole. One request, so each refusal counts
/// once in the metrics.
async fn open(sc: &Sidecast, tok: &str) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut io = tokio::net::TcpStream::connect(&sc.public).await.unwrap();
    let req = format!(
        "GET /events?topic=news HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\
         Authorization: Bearer {tok}\r\nConnection: close\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                if raw.starts_with(b"HTTP/1.1 200") {
                    raw.truncate(end + 4);
                    return;
                }
            }
            let n = io.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response in time");
    support::http::parse_response(&raw)
}

async fn assert_opens(sc: &Sidecast, tok: &str, what: &str) {
    let r = open(sc, tok).await;
    assert_eq!(r.status, 200, "{what}: {}", r.text());
}

async fn assert_refused(sc: &Sidecast, tok: &str, code: &str, what: &str) {
    let r = open(sc, tok).await;
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert_eq!(r.json()["error"], code, "{what}: {}", r.text());
    assert!(r.header("www-authenticate").unwrap().contains("error=\""));
}

/// Options with no secret in the environment.
fn opts_without_env(up: &Upstream, auth: String) -> Opts {
    let mut o = Opts::new(&up.url());
    o.env.clear();
    o.auth = auth;
    o
}

const FILE_SECRET: &str = "file-secret-abcdefghijklmnopqrstuvwxyz-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs_secrets_from_the_environment_and_a_file() {
    let (up, sc) = support::start().await;
    for alg in ["HS256", "HS384", "HS512"] {
        let tok = signers::hs(alg, SECRET.as_bytes(), &claims("a"));
        assert_opens(&sc, &tok, &format!("{alg} from secret_env")).await;
        let tok = signers::hs(alg, FILE_SECRET.as_bytes(), &claims("a"));
        assert_refused(
            &sc,
            &tok,
            "bad_signature",
            &format!("{alg}, another secret"),
        )
        .await;
    }
    drop(sc);

    let dir = support::temp_dir("hsfile");
    let file = dir.join("jwt-secret");
    // A trailing newline (as editors and `echo` write) is not part of it.
    std::fs::write(&file, format!("{FILE_SECRET}\n")).unwrap();
    let sc = Sidecast::start(&opts_without_env(
        &up,
        format!("secret_file = \"{}\"", file.display()),
    ));
    for alg in ["HS256", "HS384", "HS512"] {
        let tok = signers::hs(alg, FILE_SECRET.as_bytes(), &claims("a"));
        assert_opens(&sc, &tok, &format!("{alg} from secret_file")).await;
        let tok = signers::hs(alg, SECRET.as_bytes(), &claims("a"));
        assert_refused(&sc, &tok, "bad_signature", &format!("{alg}, env secret")).await;
    }
    drop(sc);

    // `algorithms` narrows what is accepted.
    let mut o = Opts::new(&up.url());
    o.auth = "algorithms = [\"HS512\"]".into();
    let sc = Sidecast::start(&o);
    let tok = signers::hs("HS512", SECRET.as_bytes(), &claims("a"));
    assert_opens(&sc, &tok, "HS512 configured").await;
    let tok = signers::hs("HS256", SECRET.as_bytes(), &claims("a"));
    assert_refused(&sc, &tok, "algorithm", "HS256 not configured").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_public_keys_rsa_ec_ed25519() {
    if !signers::have_openssl() {
        return;
    }
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("pem");
    let cases: [(Kind, &[&str]); 3] = [
        (
            Kind::Rsa,
            &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
        ),
        (Kind::Ec, &["ES256"]),
        (Kind::Ed25519, &["EdDSA"]),
    ];
    for (kind, algs) in cases {
        let key = KeyPair::generate(&dir, &format!("{kind:?}"), kind);
        let other = KeyPair::generate(&dir, &format!("{kind:?}-other"), kind);
        let sc = Sidecast::start(&opts_without_env(
            &up,
            format!("public_key_file = \"{}\"", key.public.display()),
        ));
        for alg in algs {
            let tok = key.sign(alg, None, &claims("a"));
            assert_opens(&sc, &tok, &format!("{alg} with {kind:?}")).await;
            // A kid in the token does not matter to a key without one.
            let tok = key.sign(alg, Some("some-kid"), &claims("a"));
            assert_opens(&sc, &tok, &format!("{alg} with a kid")).await;
            let tok = other.sign(alg, None, &claims("a"));
            assert_refused(&sc, &tok, "bad_signature", &format!("{alg}, other key")).await;
        }
        // Algorithm confusion: an HS256 token whose "secret" is the public
        // key's PEM bytes. Only the key's own family is accepted.
        let pem = key.public_pem();
        let tok = signers::hs("HS256", &pem, &claims("a"));
        assert_refused(&sc, &tok, "algorithm", &format!("HS256 with {kind:?} PEM")).await;
        let tok = signers::hs("HS256", pem.trim_ascii_end(), &claims("a"));
        assert_refused(&sc, &tok, "algorithm", "HS256 with trimmed PEM").await;
        assert_refused(
            &sc,
            &support::jwt::unsigned(&claims("a")),
            "algorithm",
            "alg none",
        )
        .await;
    }

    // Confusion with HS256 listed too: the PEM is never an HMAC key.
    let key = KeyPair::generate(&dir, "rsa-both", Kind::Rsa);
    let sc = Sidecast::start(&opts_without_env(
        &up,
        format!(
            "public_key_file = \"{}\"\nalgorithms = [\"RS256\", \"HS256\"]",
            key.public.display()
        ),
    ));
    let tok = signers::hs("HS256", &key.public_pem(), &claims("a"));
    assert_refused(&sc, &tok, "bad_signature", "HS256 listed, no HS key").await;
    assert_opens(&sc, &key.sign("RS256", None, &claims("a")), "RS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_keys_by_kid_and_several_sources_at_once() {
    if !signers::have_openssl() {
        return;
    }
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("jwks");
    let rsa = KeyPair::generate(&dir, "r1", Kind::Rsa);
    let rsa2 = KeyPair::generate(&dir, "r2", Kind::Rsa);
    let ec = KeyPair::generate(&dir, "e1", Kind::Ec);
    let ed = KeyPair::generate(&dir, "d1", Kind::Ed25519);
    let ec384 = KeyPair::generate(&dir, "e2", Kind::Ec384);
    let stranger = KeyPair::generate(&dir, "x", Kind::Rsa);
    let jwks = dir.join("keys.json");
    std::fs::write(
        &jwks,
        signers::jwks(&[
            rsa.jwk("r1"),
            rsa2.jwk("r2"),
            ec.jwk("e1"),
            ed.jwk("d1"),
            ec384.jwk("e2"),
        ]),
    )
    .unwrap();
    let sc = Sidecast::start(&opts_without_env(
        &up,
        format!("jwks_file = \"{}\"", jwks.display()),
    ));
    assert_opens(&sc, &rsa.sign("RS256", Some("r1"), &claims("a")), "r1").await;
    assert_opens(&sc, &rsa2.sign("PS256", Some("r2"), &claims("a")), "r2").await;
    assert_opens(&sc, &ec.sign("ES256", Some("e1"), &claims("a")), "e1").await;
    assert_opens(&sc, &ed.sign("EdDSA", Some("d1"), &claims("a")), "d1").await;
    assert_opens(&sc, &ec384.sign("ES384", Some("e2"), &claims("a")), "e2").await;
    // No kid: every key of the algorithm is tried.
    assert_opens(&sc, &rsa2.sign("RS256", None, &claims("a")), "no kid").await;
    // The kid chooses the key: r1's kid on r2's signature fails.
    let tok = rsa2.sign("RS256", Some("r1"), &claims("a"));
    assert_refused(&sc, &tok, "bad_signature", "kid of another key").await;
    let tok = stranger.sign("RS256", Some("zz"), &claims("a"));
    assert_refused(&sc, &tok, "unknown_kid", "unknown kid").await;
    let tok = rsa.sign("RS256", Some("e1"), &claims("a"));
    assert_refused(&sc, &tok, "unknown_kid", "an EC kid on an RS256 token").await;
    let r = open(&sc, &tok).await;
    assert!(!r.text().contains(&tok), "the token is not echoed");
    assert_eq!(
        scrape::metric(
            &sc.admin,
            "sidecast_auth_failures_total{reason=\"unknown_kid\"}"
        )
        .await,
        Some(3.0)
    );
    drop(sc);

    // A secret, a PEM key and a JWKS at once: each verifies its tokens, so
    // keys can rotate from one to another.
    let pem_key = KeyPair::generate(&dir, "pem", Kind::Ec);
    let mut o = Opts::new(&up.url());
    o.auth = format!(
        "jwks_file = \"{}\"\npublic_key_file = \"{}\"",
        jwks.display(),
        pem_key.public.display()
    );
    let sc = Sidecast::start(&o);
    assert_opens(
        &sc,
        &signers::hs("HS256", SECRET.as_bytes(), &claims("a")),
        "secret",
    )
    .await;
    assert_opens(&sc, &pem_key.sign("ES256", None, &claims("a")), "pem").await;
    assert_opens(
        &sc,
        &pem_key.sign("ES256", Some("new"), &claims("a")),
        "pem, a kid",
    )
    .await;
    assert_opens(&sc, &ec.sign("ES256", Some("e1"), &claims("a")), "jwks").await;
    assert_opens(
        &sc,
        &rsa.sign("RS256", Some("r1"), &claims("a")),
        "jwks rsa",
    )
    .await;
    let ec_stranger = KeyPair::generate(&dir, "xe", Kind::Ec);
    let tok = ec_stranger.sign("ES256", Some("zz"), &claims("a"));
    assert_refused(&sc, &tok, "unknown_kid", "unknown kid beside a PEM key").await;
}

/// Waits until `tok` opens a stream (a reload has taken it in).
async fn until_opens(sc: &Sidecast, tok: &str, what: &str) {
    sc.eventually(what, || async { open(sc, tok).await.status == 200 })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_jwks_file_adds_keys_and_revokes_streams() {
    if !signers::have_openssl() {
        return;
    }
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("rotate");
    let old = KeyPair::generate(&dir, "old", Kind::Rsa);
    let kept = KeyPair::generate(&dir, "kept", Kind::Rsa);
    let new = KeyPair::generate(&dir, "new", Kind::Ed25519);
    let jwks = dir.join("keys.json");
    std::fs::write(&jwks, signers::jwks(&[old.jwk("old"), kept.jwk("kept")])).unwrap();
    let sc = Sidecast::start(&opts_without_env(
        &up,
        format!("jwks_file = \"{}\"", jwks.display()),
    ));
    let old_tok = old.sign("RS256", Some("old"), &claims("a"));
    let kept_tok = kept.sign("PS256", Some("kept"), &claims("b"));
    let new_tok = new.sign("EdDSA", Some("new"), &claims("c"));
    // Before: EdDSA is no algorithm of the keys configured.
    assert_refused(&sc, &new_tok, "algorithm", "before the rewrite").await;
    let mut a = Sse::open_token(&sc.public, "/events?topic=news", &old_tok).await;
    let mut b = Sse::open_token(&sc.public, "/events?topic=news", &kept_tok).await;
    assert_eq!((a.status(), b.status()), (200, 200));
    a.next_block(WAIT).await.unwrap();
    b.next_block(WAIT).await.unwrap();

    scrape::replace_file(&jwks, signers::jwks(&[kept.jwk("kept"), new.jwk("new")]));
    until_opens(&sc, &new_tok, "the new key verifies without a restart").await;

    // The stream of the dropped key was closed at once, with a retry.
    let blocks = a.until_end(WAIT).await;
    assert!(a.eof);
    assert!(blocks.iter().all(|b| b.data.is_none()), "{blocks:?}");
    assert!(
        blocks.last().is_some_and(|b| b.retry.is_some()),
        "{blocks:?}"
    );
    // Counted when the stream's task ends, maybe just after the client
    // read the end.
    scrape::metric_becomes(&sc.admin, scrape::REVOKED, 1.0).await;
    // The kept key's stream goes on.
    let id = sc.publish_one("news", "still here").await;
    let ev = b.next_event().await.unwrap();
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_refused(&sc, &old_tok, "unknown_kid", "after the rewrite").await;
    assert_eq!(
        scrape::metric(&sc.admin, "sidecast_config_reloads_total{result=\"ok\"}").await,
        Some(1.0)
    );
    assert!(
        scrape::metric(&sc.admin, "sidecast_streams_open{route=\"/events\"}").await == Some(1.0)
    );

    // An unparseable rewrite is refused and the keys stay as they were.
    scrape::replace_file(&jwks, "{ not json");
    scrape::metric_reaches(
        &sc.admin,
        "sidecast_config_reloads_total{result=\"failed\"}",
        1.0,
    )
    .await;
    assert_opens(&sc, &new_tok, "after a refused reload").await;
    // The refusal names the file.
    sc.log_with(&["keys.json"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_secret_file_rotates_the_hs_key() {
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("hsrotate");
    let file = dir.join("secret");
    std::fs::write(&file, FILE_SECRET).unwrap();
    let sc = Sidecast::start(&opts_without_env(
        &up,
        format!("secret_file = \"{}\"", file.display()),
    ));
    let old_tok = signers::hs("HS256", FILE_SECRET.as_bytes(), &claims("a"));
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &old_tok).await;
    assert_eq!(s.status(), 200);
    s.next_block(WAIT).await.unwrap();
    let next = "next-secret-abcdefghijklmnopqrstuvwxyz-0123";
    scrape::replace_file(&file, next);
    let new_tok = signers::hs("HS256", next.as_bytes(), &claims("a"));
    until_opens(&sc, &new_tok, "the new secret verifies").await;
    let blocks = s.until_end(WAIT).await;
    assert!(s.eof, "{blocks:?}");
    // Counted when the stream's task ends, maybe just after the client
    // read the end.
    scrape::metric_becomes(&sc.admin, scrape::REVOKED, 1.0).await;
    assert_refused(&sc, &old_tok, "bad_signature", "the old secret").await;
}

/// A config file with `auth` as the `[auth]` section.
fn config_file(tag: &str, auth: &str) -> std::path::PathBuf {
    let mut o = Opts::new("http://127.0.0.1:9");
    o.auth = auth.to_owned();
    let dir = support::temp_dir(tag);
    let cfg = dir.join("sidecar.toml");
    std::fs::write(&cfg, o.toml()).unwrap();
    cfg
}

/// Runs sidecast itself (not `check`) expecting it to refuse to start.
fn refuses_to_start(cfg: &std::path::Path, env: &[(&str, &str)]) -> String {
    let run = scrape::sidecast(&[], cfg, env);
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("sidecast listening"), "{}", run.stderr);
    run.stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_names_a_missing_or_bad_key() {
    let file = |cfg: &std::path::Path| cfg.display().to_string();

    let cfg = config_file("nokey", "");
    let err = refuses_to_start(&cfg, &[]);
    assert!(err.contains(&format!("{}:", file(&cfg))), "{err}");
    assert!(
        err.contains("auth.secret_env") && err.contains("SIDECAST_JWT_SECRET"),
        "{err}"
    );
    let err = refuses_to_start(&cfg, &[("SIDECAST_JWT_SECRET", "")]);
    assert!(
        err.contains("SIDECAST_JWT_SECRET") && err.contains("empty"),
        "{err}"
    );

    let cfg = config_file("named", "secret_env = \"APP_JWT_KEY\"");
    let err = refuses_to_start(&cfg, &[("SIDECAST_JWT_SECRET", SECRET)]);
    assert!(err.contains("APP_JWT_KEY"), "{err}");

    // `check` refuses a short secret, naming the variable, never the value.
    let cfg = config_file("short", "");
    let short = "short-secret-31-bytes-long-xxxx";
    assert_eq!(short.len(), 31);
    let run = scrape::sidecast(&["check"], &cfg, &[("SIDECAST_JWT_SECRET", short)]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("SIDECAST_JWT_SECRET") && run.stderr.contains("32"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(short) && !run.stdout.contains(short),
        "{}",
        run.stderr
    );
    let exact = "exactly-32-bytes-of-secret-value";
    assert_eq!(exact.len(), 32);
    let run = scrape::sidecast(&["check"], &cfg, &[("SIDECAST_JWT_SECRET", exact)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        !run.stdout.contains(exact),
        "check masks the secret: {}",
        run.stdout
    );
    let err = refuses_to_start(&cfg, &[("SIDECAST_JWT_SECRET", short)]);
    assert!(!err.contains(short), "{err}");

    let dir = support::temp_dir("keyfiles");
    let short_file = dir.join("short-secret");
    std::fs::write(&short_file, short).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let bad_jwks = dir.join("bad.json");
    std::fs::write(&bad_jwks, "{\"keys\": [{\"kty\": \"RSA\"}]}").unwrap();
    let missing = dir.join("no-such-file.pem");
    let cases = [
        ("secret_file", short_file.clone(), "32"),
        ("secret_file", dir.clone(), "cannot read"),
        ("public_key_file", missing.clone(), "cannot read"),
        ("public_key_file", garbage.clone(), "PEM"),
        ("jwks_file", bad_jwks.clone(), "JWKS"),
        ("jwks_file", missing.clone(), "cannot read"),
    ];
    for (key, path, says) in cases {
        let cfg = config_file("bad", &format!("{key} = \"{}\"", path.display()));
        for run in [
            scrape::sidecast(&["check"], &cfg, &[]),
            scrape::sidecast(&[], &cfg, &[]),
        ] {
            assert_ne!(run.code, Some(0), "{key} {}", path.display());
            let line = run
                .stderr
                .lines()
                .find(|l| l.contains(&format!("auth.{key}")))
                .unwrap_or_else(|| panic!("no line names auth.{key}: {}", run.stderr));
            assert!(line.starts_with(&format!("{}:", cfg.display())), "{line}");
            assert!(line.contains(&path.display().to_string()), "{line}");
            assert!(line.contains(says), "{line}");
            assert!(!run.stderr.contains(short), "{}", run.stderr);
        }
    }
}
