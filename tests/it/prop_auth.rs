//! No token input panics the extractor or the verifier: random bytes in
//! every place a token is read from, random base64url segments, and random
//! JSON headers and claims signed with the configured secret (so that they
//! get past the signature into claim checks and grants).
use crate::support;
use crate::support::signers;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sidecast::auth::{token_of, Denied};
use sidecast::config::Config;
use sidecast::http1::head::Head;
use sidecast::state::Runtime;

/// A runtime verifying HS tokens with [`support::SECRET`] (from a file, so
/// that the test's environment does not matter); `extra` adds `[auth]` keys.
fn runtime(extra: &str) -> Runtime {
    let dir = support::temp_dir("prop");
    let secret = dir.join("secret");
    std::fs::write(&secret, support::SECRET).unwrap();
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n[auth]\nsecret_file = \"{}\"\n\
         algorithms = [\"HS256\", \"HS384\", \"HS512\", \"RS256\", \"ES256\", \"EdDSA\"]\n{extra}\n",
        secret.display()
    );
    let config = Config::parse(&dir.join("sidecar.toml"), &text).expect("config");
    Runtime::new(Arc::new(config), &[])
}

static PLAIN: LazyLock<Runtime> = LazyLock::new(|| runtime(""));
static STRICT: LazyLock<Runtime> =
    LazyLock::new(|| runtime("issuer = \"https://i.test\"\naudience = [\"api\"]\nleeway = \"0s\""));
static NO_LEEWAY: LazyLock<Runtime> = LazyLock::new(|| runtime("leeway = \"0s\""));

fn head(target: String, headers: Vec<(String, Vec<u8>)>) -> Head {
    Head {
        method: "GET".into(),
        target,
        minor: 1,
        headers,
        len: 0,
    }
}

/// Every principal that comes out is usable: its expiry converts to a timer
/// deadline without overflow.
fn check_principal(rt: &Runtime, token: &str) {
    match rt.verifier().principal(token) {
        Ok(p) => {
            if let Some(at) = p.expires {
                let left = at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                let _ = tokio::time::Instant::now() + left + rt.config.auth.leeway;
            }
        }
        Err(Denied::Unauthorized { code, message }) => {
            assert!(!code.is_empty() && !message.is_empty());
            assert!(
                token.len() < 8 || !message.contains(token),
                "the message echoes the token"
            );
        }
        Err(other) => panic!("a token refusal is a 401, got {other:?}"),
    }
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        "[a-z*/%0-9]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Numbers where time claims go wrong: the edges of every integer type,
/// huge floats, the past and the near future.
fn time_claim() -> impl Strategy<Value = Value> {
    let now = support::jwt::now() as i64;
    prop_oneof![
        Just(json!(u64::MAX)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(0)),
        Just(json!(1.8446744073709552e19)),
        Just(json!(9.2e18)),
        (-100_000i64..100_000).prop_map(move |d| json!(now + d)),
        (-100_000.0f64..100_000.0).prop_map(move |d| json!(now as f64 + d)),
        any_json(),
    ]
}

fn header_json() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        Just(json!("HS256")),
        Just(json!("HS384")),
        Just(json!("HS512")),
        Just(json!("RS256")),
        Just(json!("ES256")),
        Just(json!("EdDSA")),
        Just(json!("none")),
        Just(json!("NONE")),
        any_json(),
    ];
    (
        alg,
        prop::option::of(any_json()),
        prop::option::of(any_json()),
        prop::option::of(any_json()),
    )
        .prop_map(|(alg, kid, typ, crit)| {
            let mut h = json!({ "alg": alg });
            if let Some(k) = kid {
                h["kid"] = k;
            }
            if let Some(t) = typ {
                h["typ"] = t;
            }
            if let Some(c) = crit {
                h["crit"] = c;
            }
            h
        })
}

fn claims_json() -> impl Strategy<Value = Value> {
    let topics = prop_oneof![
        prop::collection::vec("[a-z*/%0-9.]{0,10}", 0..5).prop_map(|v| json!(v)),
        any_json(),
    ];
    (
        prop::option::of(time_claim()),
        prop::option::of(time_claim()),
        prop::option::of(any_json()),
        prop::option::of(topics),
        prop::option::of(any_json()),
        prop::option::of(any_json()),
    )
        .prop_map(|(exp, nbf, sub, topics, aud, iss)| {
            let mut c = json!({});
            for (k, v) in [
                ("exp", exp),
                ("nbf", nbf),
                ("sub", sub),
                ("topics", topics),
                ("aud", aud),
                ("iss", iss),
            ] {
                if let Some(v) = v {
                    c[k] = v;
                }
            }
            c
        })
}

proptest! {
    #![proptest_config(support::proptest_config(512))]

    #[test]
    fn random_bytes_anywhere(bytes in prop::collection::vec(any::<u8>(), 0..300), place in 0..4u8) {
        let rt = &*PLAIN;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let encoded: String = form_urlencoded::byte_serialize(&bytes).collect();
        let h = match place {
            0 => head("/events?topic=a".into(), vec![("authorization".into(), bytes.clone())]),
            1 => {
                let mut v = b"Bearer ".to_vec();
                v.extend_from_slice(&bytes);
                head("/events".into(), vec![("authorization".into(), v)])
            }
            2 => head(format!("/events?topic=a&token={encoded}"), vec![]),
            _ => {
                let mut v = b"a=b; sidecast_token=".to_vec();
                v.extend_from_slice(&bytes);
                head(format!("/events?{text}"), vec![("cookie".into(), v)])
            }
        };
        if let Ok(Some((token, _))) = token_of(&h, "sidecast_token") {
            check_principal(rt, &token);
        }
        check_principal(rt, &text);
    }

    #[test]
    fn random_base64_segments(
        parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..5),
    ) {
        let rt = &*PLAIN;
        let token = parts.iter().map(|p| b64(p)).collect::<Vec<_>>().join(".");
        check_principal(rt, &token);
        let h = head(format!("/events?access_token={token}"), vec![]);
        let (got, _) = token_of(&h, "c").unwrap().unwrap();
        prop_assert_eq!(&got, &token);
        check_principal(rt, &got);
    }

    #[test]
    fn random_json_headers_and_claims(
        header in header_json(),
        claims in claims_json(),
        signed in any::<bool>(),
        alg in prop::sample::select(vec!["HS256", "HS384", "HS512"]),
    ) {
        let (rt, strict) = (&*PLAIN, &*STRICT);
        let token = if signed {
            signers::hs_with_header(alg, support::SECRET.as_bytes(), &header, &claims)
        } else {
            format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes()),
                b64(b"not a signature")
            )
        };
        check_principal(rt, &token);
        check_principal(strict, &token);
        // Unsigned headers are never accepted, whatever else they say.
        if header["alg"].as_str().is_some_and(|a| a.eq_ignore_ascii_case("none")) {
            prop_assert!(rt.verifier().principal(&token).is_err());
        }
    }

    #[test]
    fn signed_random_claims_reach_the_claim_checks(
        claims in claims_json(),
        alg in prop::sample::select(vec!["HS256", "HS384", "HS512"]),
        kid in prop::option::of(".{0,80}"),
    ) {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(k) = kid {
            header["kid"] = json!(k);
        }
        let token = signers::hs_with_header(alg, support::SECRET.as_bytes(), &header, &claims);
        check_principal(&PLAIN, &token);
        check_principal(&STRICT, &token);
        check_principal(&NO_LEEWAY, &token);
    }

    #[test]
    fn well_formed_tokens_verify_or_say_why(
        sub in ".{0,20}",
        topics in prop::collection::vec("[a-z*]{1,3}(/[a-z*]{1,3}){0,2}(/\\*\\*)?", 0..4),
        exp_in in -50i64..5000,
    ) {
        let rt = &*NO_LEEWAY;
        let exp = support::jwt::now() as i64 + exp_in;
        let claims = json!({"sub": sub, "topics": topics, "exp": exp});
        let token = support::jwt::hs256(support::SECRET.as_bytes(), &claims);
        match rt.verifier().principal(&token) {
            Ok(p) => {
                prop_assert!(exp_in >= 0, "an expired token verified");
                prop_assert_eq!(p.user.as_deref(), Some(sub.as_str()));
                prop_assert_eq!(p.grants.len(), topics.len());
            }
            Err(Denied::Unauthorized { code, .. }) => {
                let bad_pattern = topics.iter().any(|t| sidecast::topic::Pattern::parse(t).is_err());
                prop_assert!(exp_in <= 1 || bad_pattern, "refused ({code}) a valid token");
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}
