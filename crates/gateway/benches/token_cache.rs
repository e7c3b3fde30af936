//! Cost of authorizing a request by its token: a token already verified
//! (a cache hit, what a client repeating its token pays), and a token seen
//! for the first time (signature check, claims, cache insert) for HS256,
//! EdDSA, ES256 and RS256.
//!
//! `cargo bench -p switchyard-gateway --bench token_cache`
//!
//! Prints the median and the 90th percentile of the per-call time over
//! batches of calls (each batch's mean), so that timer overhead is spread.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed benchmark
#![allow(missing_docs)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use switchyard_gateway::auth::{AuthConfig, Authorizer, VerifyKey};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/e2e/fixtures/auth/"
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

/// Median and p90 of `batches` batch means of `f` over `batch` calls.
fn measure(batches: usize, batch: usize, mut f: impl FnMut(usize)) -> (Duration, Duration) {
    let mut means = Vec::with_capacity(batches);
    let mut i = 0;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..batch {
            f(i);
            i += 1;
        }
        means.push(start.elapsed() / batch as u32);
    }
    means.sort();
    (means[means.len() / 2], means[means.len() * 9 / 10])
}

fn main() {
    let secret = fixture("hs256.secret");
    let secret = secret.trim_ascii();
    let keys = vec![
        VerifyKey::secret(secret, "hs256.secret").unwrap(),
        VerifyKey::public_pem(&fixture("ed25519-a.pub.pem"), "ed25519").unwrap(),
        VerifyKey::public_pem(&fixture("ec-p256.pub.pem"), "ec").unwrap(),
        VerifyKey::public_pem(&fixture("rsa.pub.pem"), "rsa").unwrap(),
    ];
    let signers = [
        ("HS256", Algorithm::HS256, EncodingKey::from_secret(secret)),
        (
            "EdDSA",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture("ed25519-a.key.pem")).unwrap(),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&fixture("ec-p256.key.pem")).unwrap(),
        ),
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&fixture("rsa.key.pem")).unwrap(),
        ),
    ];
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let topic = "orders.eu.created".parse().unwrap();
    println!("| case | median ns/call | p90 ns/call |");
    println!("| --- | ---: | ---: |");
    for (name, alg, key) in &signers {
        let tokens: Vec<String> = (0..2000)
            .map(|jti| {
                let claims = json!({
                    "exp": exp, "jti": jti,
                    "switchyard": {"publish": ["orders.>", "audit"], "subscribe": ["orders.*.created"]},
                });
                jsonwebtoken::encode(&Header::new(*alg), &claims, key).unwrap()
            })
            .collect();
        let auth = Authorizer::new(AuthConfig {
            keys: keys.clone(),
            ..AuthConfig::default()
        });
        // First sight of each token: verification and insertion.
        let (median, p90) = measure(20, 100, |i| {
            let a = auth.authenticate(&tokens[i]).unwrap();
            assert!(a.publish(&topic).is_ok());
        });
        println!(
            "| {name}, first use (verify) | {} | {} |",
            median.as_nanos(),
            p90.as_nanos()
        );
        // The same token again and again: the cache.
        let token = &tokens[0];
        let (median, p90) = measure(300, 10_000, |_| {
            let a = auth.authenticate(token).unwrap();
            assert!(a.publish(&topic).is_ok());
        });
        println!(
            "| {name}, cached | {} | {} |",
            median.as_nanos(),
            p90.as_nanos()
        );
    }
}
