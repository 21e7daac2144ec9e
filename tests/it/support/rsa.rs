//! RSA keys and RS256 signatures made with the `openssl` command, an
//! implementation independent of the code under test.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub struct RsaKey {
    pub private: PathBuf,
    pub public: PathBuf,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = super::output_within(cmd, super::WAIT, "openssl");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl RsaKey {
    pub fn generate(dir: &Path, name: &str) -> RsaKey {
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub.pem"));
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private));
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public));
        RsaKey { private, public }
    }

    /// The public key as a JWK with `kid` (and `alg: RS256`, `use: sig`).
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        let out = String::from_utf8(run(Command::new("openssl")
            .args(["rsa", "-pubin", "-noout", "-modulus", "-in"])
            .arg(&self.public)))
        .unwrap();
        let hex = out.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        serde_json::json!({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(bytes), "e": "AQAB",
        })
    }

    /// An RS256 JWT with `kid` in its header.
    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let data = self.private.with_extension("input");
        std::fs::write(&data, &input).unwrap();
        let sig = run(Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.private)
            .arg(&data));
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}
