//! `switchyard token issue`: sign a token for the client API with the
//! node's shared secret or a private key, and print it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use switchyard_gateway::Scope;
use switchyard_model::TopicPattern;

use crate::args::{AlgArg, IssueArgs};

impl From<AlgArg> for Algorithm {
    fn from(a: AlgArg) -> Algorithm {
        match a {
            AlgArg::HS256 => Algorithm::HS256,
            AlgArg::HS384 => Algorithm::HS384,
            AlgArg::HS512 => Algorithm::HS512,
            AlgArg::RS256 => Algorithm::RS256,
            AlgArg::RS384 => Algorithm::RS384,
            AlgArg::RS512 => Algorithm::RS512,
            AlgArg::PS256 => Algorithm::PS256,
            AlgArg::PS384 => Algorithm::PS384,
            AlgArg::PS512 => Algorithm::PS512,
            AlgArg::ES256 => Algorithm::ES256,
            AlgArg::ES384 => Algorithm::ES384,
            AlgArg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// Parses a lifetime: seconds, or a number followed by `s`, `m`, `h` or
/// `d`; `never` for no expiry.
pub(crate) fn parse_ttl(text: &str) -> Result<Option<Duration>> {
    let t = text.trim();
    if t == "never" {
        return Ok(None);
    }
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("--ttl {text:?}: expected e.g. 3600, 15m, 1h, 30d or never"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => bail!("--ttl {text:?}: the unit is s, m, h or d"),
    };
    if secs == 0 {
        bail!("--ttl must be more than 0 (or never)");
    }
    Ok(Some(Duration::from_secs(secs)))
}

/// The signing key and the algorithm to sign with.
fn signing_key(a: &IssueArgs) -> Result<(EncodingKey, Algorithm)> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    if let Some(path) = &a.secret_file {
        let bytes = read(path)?;
        let secret = bytes.trim_ascii();
        if secret.len() < switchyard_gateway::auth::MIN_SECRET_BYTES {
            bail!(
                "{}: the secret has {} bytes; nodes refuse secrets under {}",
                path.display(),
                secret.len(),
                switchyard_gateway::auth::MIN_SECRET_BYTES
            );
        }
        let alg = a.alg.map_or(Algorithm::HS256, Algorithm::from);
        if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            bail!("--secret-file signs with HS256, HS384 or HS512, not {alg:?}");
        }
        return Ok((EncodingKey::from_secret(secret), alg));
    }
    let Some(path) = &a.private_key_file else {
        bail!("give --secret-file or --private-key-file");
    };
    let pem = read(path)?;
    let bad = || format!("{}: not a PEM private key for {{alg}}", path.display());
    let (key, alg) = match a.alg.map(Algorithm::from) {
        Some(alg @ (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)) => {
            bail!("{alg:?} signs with a shared secret: use --secret-file")
        }
        Some(alg @ Algorithm::EdDSA) => (EncodingKey::from_ed_pem(&pem), alg),
        Some(alg @ (Algorithm::ES256 | Algorithm::ES384)) => (EncodingKey::from_ec_pem(&pem), alg),
        Some(alg) => (EncodingKey::from_rsa_pem(&pem), alg),
        None => {
            if let Ok(k) = EncodingKey::from_ed_pem(&pem) {
                (Ok(k), Algorithm::EdDSA)
            } else if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
                (Ok(k), Algorithm::ES256)
            } else {
                (EncodingKey::from_rsa_pem(&pem), Algorithm::RS256)
            }
        }
    };
    let key =
        key.map_err(|e| anyhow::anyhow!("{} ({e})", bad().replace("{alg}", &format!("{alg:?}"))))?;
    Ok((key, alg))
}

/// The token for `a`, signed.
pub(crate) fn token(a: &IssueArgs, now: SystemTime) -> Result<String> {
    for (flag, list) in [("--publish", &a.publish), ("--subscribe", &a.subscribe)] {
        for p in list {
            p.parse::<TopicPattern>()
                .with_context(|| format!("{flag} {p:?}"))?;
        }
    }
    let (key, alg) = signing_key(a)?;
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut claims = Map::new();
    claims.insert("iat".into(), json!(iat));
    if let Some(ttl) = parse_ttl(&a.ttl)? {
        claims.insert("exp".into(), json!(iat.saturating_add(ttl.as_secs())));
    }
    for (name, value) in [
        ("sub", &a.subject),
        ("aud", &a.audience),
        ("iss", &a.issuer),
    ] {
        if let Some(v) = value {
            claims.insert(name.into(), json!(v));
        }
    }
    let scope = Scope {
        publish: a.publish.clone(),
        subscribe: a.subscribe.clone(),
        admin: a.admin,
    };
    claims.insert(
        switchyard_gateway::auth::CLAIM.into(),
        serde_json::to_value(scope)?,
    );
    let token = jsonwebtoken::encode(&Header::new(alg), &Value::Object(claims), &key)
        .context("cannot sign the token")?;
    Ok(token)
}

/// `switchyard token issue`: prints the token.
pub(crate) fn issue(a: IssueArgs) -> Result<()> {
    println!("{}", token(&a, SystemTime::now())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m").unwrap(), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_ttl("30d").unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_ttl("never").unwrap(), None);
        for bad in ["", "h", "1w", "0", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
