#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/e2e/fixtures/auth/"
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

fn now() -> i64 {
    now_secs() as i64
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn signed(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn authorizer(anonymous: Anonymous) -> Authorizer {
    Authorizer::new(AuthConfig {
        keys: vec![VerifyKey::secret(SECRET, "test").unwrap()],
        anonymous,
        ..AuthConfig::default()
    })
}

fn set(ps: &[&str]) -> TopicSet {
    TopicSet::new(ps.iter().map(|p| p.parse().unwrap()).collect())
}

fn topic(s: &str) -> Topic {
    s.parse().unwrap()
}

fn scope(publish: &[&str], subscribe: &[&str], admin: bool) -> Value {
    json!({"exp": now() + 3600, "switchyard": {"publish": publish, "subscribe": subscribe, "admin": admin}})
}

#[test]
fn the_claim_parses_with_defaults_and_refuses_unknown_members() {
    let s: Scope = serde_json::from_value(json!({"publish": ["a.>"]})).unwrap();
    assert_eq!(s.publish, vec!["a.>"]);
    assert!(s.subscribe.is_empty() && !s.admin);
    let s: Scope = serde_json::from_value(json!({})).unwrap();
    assert_eq!(s, Scope::default());
    assert!(serde_json::from_value::<Scope>(json!({"publsh": ["a"]})).is_err());
    assert!(serde_json::from_value::<Scope>(json!({"publish": "a"})).is_err());
    // Round trip, as `token issue` writes it.
    let full = Scope {
        publish: vec!["a".into()],
        subscribe: vec!["b.*".into()],
        admin: true,
    };
    let back: Scope = serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
    assert_eq!(back, full);
}

#[test]
fn an_invalid_pattern_in_the_claim_refuses_the_token() {
    let a = authorizer(Anonymous::None);
    let t = hs(&scope(&["a..b"], &[], false));
    let e = a.authenticate(&t).unwrap_err();
    assert!(
        matches!(&e, TokenError::Invalid(w) if w.contains("switchyard.publish")),
        "{e}"
    );
    let t = hs(&json!({"switchyard": {"publish": ["a"], "extra": 1}}));
    assert!(matches!(a.authenticate(&t), Err(TokenError::Invalid(_))));
}

#[test]
fn publish_scope_matches_topics() {
    let a = authorizer(Anonymous::None);
    let access = a
        .authenticate(&hs(&scope(&["orders.>", "audit"], &[], false)))
        .unwrap();
    assert!(access.publish(&topic("orders.eu")).is_ok());
    assert!(access.publish(&topic("audit")).is_ok());
    assert!(matches!(
        access.publish(&topic("billing.eu")),
        Err(Denied::Forbidden(_))
    ));
    assert!(access.publish(&topic("orders")).is_err());
}

#[test]
fn subscribe_scope_must_cover_every_pattern() {
    let a = authorizer(Anonymous::None);
    let access = a
        .authenticate(&hs(&scope(&[], &["orders.>", "audit.*"], false)))
        .unwrap();
    assert!(access.subscribe(&set(&["orders.*.created"])).is_ok());
    assert!(access.subscribe(&set(&["orders.>", "audit.x"])).is_ok());
    let e = access.subscribe(&set(&["orders.eu", ">"])).unwrap_err();
    assert!(matches!(&e, Denied::Forbidden(d) if d.contains('>') && !d.contains("orders.eu")));
    assert!(access.subscribe(&set(&["audit.>"])).is_err());
    assert!(access.subscribe_any().is_ok());
    assert!(access.read("x").is_ok());
    assert!(access.admin("x").is_err());
    assert!(access.publish(&topic("orders.eu")).is_err());
}

#[test]
fn admin_and_no_claim() {
    let a = authorizer(Anonymous::None);
    let admin = a.authenticate(&hs(&scope(&[], &[], true))).unwrap();
    assert!(admin.admin("x").is_ok());
    assert!(admin.subscribe_any().is_err());
    // A valid token without the claim grants nothing but reading.
    let bare = a
        .authenticate(&hs(&json!({"exp": now() + 60, "sub": "x"})))
        .unwrap();
    assert!(bare.read("x").is_ok());
    assert!(matches!(bare.admin("x"), Err(Denied::Forbidden(_))));
    assert!(bare.subscribe(&set(&["a"])).is_err());
}

#[test]
fn anonymous_levels() {
    let none = Access::anonymous(Anonymous::None);
    assert!(matches!(none.read("x"), Err(Denied::NoToken(_))));
    assert!(matches!(
        none.subscribe(&set(&["a"])),
        Err(Denied::NoToken(_))
    ));
    let sub = Access::anonymous(Anonymous::Subscribe);
    assert!(sub.subscribe(&set(&[">", "$sys.>"])).is_ok());
    assert!(sub.subscribe_any().is_ok() && sub.read("x").is_ok());
    assert!(matches!(sub.publish(&topic("a")), Err(Denied::NoToken(_))));
    assert!(matches!(sub.admin("x"), Err(Denied::NoToken(_))));
    let all = Access::anonymous(Anonymous::All);
    assert!(all.publish(&topic("a")).is_ok() && all.admin("x").is_ok());
    // A token widens anonymous access, never narrows it.
    let a = authorizer(Anonymous::Subscribe);
    let access = a.authenticate(&hs(&scope(&["a"], &["a"], false))).unwrap();
    assert!(access.subscribe(&set(&["b.>"])).is_ok());
    assert!(access.publish(&topic("a")).is_ok());
    assert!(matches!(
        access.publish(&topic("b")),
        Err(Denied::Forbidden(_))
    ));
}

#[test]
fn exp_and_nbf_are_checked_with_leeway() {
    let a = authorizer(Anonymous::None);
    let expired = hs(&json!({"exp": now() - 120, "switchyard": {}}));
    assert_eq!(a.authenticate(&expired).unwrap_err(), TokenError::Expired);
    // Within the 30 s leeway.
    let just = hs(&json!({"exp": now() - 5, "switchyard": {}}));
    assert!(a.authenticate(&just).is_ok());
    let early = hs(&json!({"nbf": now() + 120, "switchyard": {}}));
    assert_eq!(a.authenticate(&early).unwrap_err(), TokenError::NotYetValid);
    let soon = hs(&json!({"nbf": now() + 5, "switchyard": {}}));
    assert!(a.authenticate(&soon).is_ok());
    // Without exp: accepted unless required.
    let forever = hs(&json!({"switchyard": {}}));
    assert!(a.authenticate(&forever).is_ok());
    let strict = Authorizer::new(AuthConfig {
        keys: vec![VerifyKey::secret(SECRET, "test").unwrap()],
        require_exp: true,
        ..AuthConfig::default()
    });
    assert!(
        matches!(strict.authenticate(&forever), Err(TokenError::Invalid(w)) if w.contains("exp"))
    );
}

#[test]
fn a_cached_token_expires_in_the_cache() {
    let a = Authorizer::new(AuthConfig {
        keys: vec![VerifyKey::secret(SECRET, "test").unwrap()],
        leeway: Duration::ZERO,
        ..AuthConfig::default()
    });
    let t = hs(&json!({"exp": now() + 1, "switchyard": {}}));
    assert!(a.authenticate(&t).is_ok());
    assert_eq!(a.cached(), 1);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(a.authenticate(&t).unwrap_err(), TokenError::Expired);
    assert_eq!(a.cached(), 0);
}

#[test]
fn the_cache_is_bounded() {
    let a = Authorizer::new(AuthConfig {
        keys: vec![VerifyKey::secret(SECRET, "test").unwrap()],
        cache_entries: 16,
        ..AuthConfig::default()
    });
    for i in 0..100 {
        let t = hs(&json!({"exp": now() + 600, "jti": i, "switchyard": {}}));
        assert!(a.authenticate(&t).is_ok());
        assert!(a.cached() <= 16);
    }
}

#[test]
fn signatures_audience_and_issuer() {
    let a = authorizer(Anonymous::None);
    let other = encode(
        &Header::default(),
        &scope(&[], &[], true),
        &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
    )
    .unwrap();
    assert!(
        matches!(a.authenticate(&other), Err(TokenError::Invalid(w)) if w.contains("signature"))
    );
    assert!(matches!(
        a.authenticate("not a token"),
        Err(TokenError::Invalid(_))
    ));
    // alg none is refused.
    let none = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(r#"{"switchyard":{"admin":true}}"#)
    );
    assert!(a.authenticate(&none).is_err());
    let strict = Authorizer::new(AuthConfig {
        keys: vec![VerifyKey::secret(SECRET, "test").unwrap()],
        audience: Some("edge".into()),
        issuer: Some("issuer".into()),
        ..AuthConfig::default()
    });
    let good = hs(&json!({"aud": "edge", "iss": "issuer", "switchyard": {}}));
    assert!(strict.authenticate(&good).is_ok());
    let wrong = hs(&json!({"aud": "other", "iss": "issuer", "switchyard": {}}));
    assert!(strict.authenticate(&wrong).is_err());
    let missing = hs(&json!({"iss": "issuer", "switchyard": {}}));
    assert!(strict.authenticate(&missing).is_err());
    // Without a configured audience, aud is not checked.
    assert!(a.authenticate(&wrong).is_ok());
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn short_secrets_and_bad_keys_are_refused() {
    assert!(VerifyKey::secret(b"short", "x").is_err());
    assert!(
        VerifyKey::public_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "x"
        )
        .is_err()
    );
    assert!(VerifyKey::public_pem(&fixture("ed25519-a.key.pem"), "x").is_err());
    for name in ["ed25519-a.pub.pem", "rsa.pub.pem", "ec-p256.pub.pem"] {
        assert!(
            VerifyKey::public_pem(&fixture(name), name).is_ok(),
            "{name}"
        );
    }
}

#[test]
fn any_public_key_may_verify() {
    let a = Authorizer::new(AuthConfig {
        keys: vec![
            VerifyKey::public_pem(&fixture("ed25519-a.pub.pem"), "a").unwrap(),
            VerifyKey::public_pem(&fixture("ed25519-b.pub.pem"), "b").unwrap(),
            VerifyKey::public_pem(&fixture("rsa.pub.pem"), "rsa").unwrap(),
            VerifyKey::public_pem(&fixture("ec-p256.pub.pem"), "ec").unwrap(),
        ],
        anonymous: Anonymous::None,
        ..AuthConfig::default()
    });
    let claims = scope(&["a"], &[], false);
    for (alg, key) in [
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture("ed25519-a.key.pem")).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture("ed25519-b.key.pem")).unwrap(),
        ),
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&fixture("rsa.key.pem")).unwrap(),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&fixture("ec-p256.key.pem")).unwrap(),
        ),
    ] {
        let access = a.authenticate(&signed(alg, &key, &claims)).unwrap();
        assert!(access.publish(&topic("a")).is_ok(), "{alg:?}");
    }
    // A shared-secret token is refused by a node with public keys only
    // (no key of that family), and an expired token signed by the second
    // key reports expiry, not a bad signature.
    assert!(a.authenticate(&hs(&claims)).is_err());
    let b = EncodingKey::from_ed_pem(&fixture("ed25519-b.key.pem")).unwrap();
    let expired = signed(Algorithm::EdDSA, &b, &json!({"exp": now() - 600}));
    assert_eq!(a.authenticate(&expired).unwrap_err(), TokenError::Expired);
}

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(k.clone(), HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn the_token_comes_from_header_query_or_cookie() {
    let none = HeaderMap::new();
    assert_eq!(token_of(&none, None, true).unwrap(), None);
    let h = headers(&[(header::AUTHORIZATION, "Bearer abc.def.ghi")]);
    assert_eq!(
        token_of(&h, Some("authorization=q"), true)
            .unwrap()
            .unwrap(),
        "abc.def.ghi"
    );
    let h = headers(&[(header::AUTHORIZATION, "bearer  abc ")]);
    assert_eq!(token_of(&h, None, true).unwrap().unwrap(), "abc");
    for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer "] {
        let h = headers(&[(header::AUTHORIZATION, bad)]);
        assert!(token_of(&h, None, true).is_err(), "{bad}");
    }
    let q = token_of(&none, Some("topic=a&authorization=x%2Ey"), true).unwrap();
    assert_eq!(q.unwrap(), "x.y");
    assert!(token_of(&none, Some("authorization=a&authorization=b"), true).is_err());
    let c = headers(&[(header::COOKIE, "a=b; switchyardAuthorization=tok; c=d")]);
    assert_eq!(token_of(&c, None, true).unwrap().unwrap(), "tok");
    assert_eq!(
        token_of(&c, Some("authorization=q"), true)
            .unwrap()
            .unwrap(),
        "q"
    );
    // Not taken where a cookie is not (a POST).
    assert_eq!(token_of(&c, None, false).unwrap(), None);
    let two = headers(&[
        (header::COOKIE, "x=1"),
        (header::COOKIE, "switchyardAuthorization=\"t2\""),
    ]);
    assert_eq!(token_of(&two, None, true).unwrap().unwrap(), "t2");
}

#[test]
fn anonymous_parses() {
    for (s, a) in [
        ("none", Anonymous::None),
        ("subscribe", Anonymous::Subscribe),
        ("all", Anonymous::All),
    ] {
        assert_eq!(s.parse::<Anonymous>().unwrap(), a);
        assert_eq!(a.to_string(), s);
    }
    assert!("read".parse::<Anonymous>().is_err());
}

#[test]
fn debug_output_hides_keys() {
    let k = VerifyKey::secret(SECRET, "secret.txt").unwrap();
    let shown = format!("{k:?}");
    assert!(shown.contains("secret.txt") && !shown.contains("0123456789"));
}

#[test]
fn refused_tokens_are_answered_from_memory_and_bounded() {
    let a = authorizer(Anonymous::None);
    let forged = signed(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret of the same length......"),
        &scope(&["a"], &[], false),
    );
    let first = a.authenticate(&forged).unwrap_err();
    assert_eq!(a.refused.read().len(), 1);
    assert_eq!(a.authenticate(&forged).unwrap_err(), first);
    let expired = hs(&json!({"exp": now() - 3600, "switchyard": {}}));
    assert_eq!(a.authenticate(&expired).unwrap_err(), TokenError::Expired);
    assert_eq!(a.refused.read().len(), 2);
    // A token not valid yet may become valid: not remembered.
    let early = hs(&json!({"nbf": now() + 3600, "exp": now() + 7200, "switchyard": {}}));
    assert_eq!(a.authenticate(&early).unwrap_err(), TokenError::NotYetValid);
    assert_eq!(a.refused.read().len(), 2);
    for i in 0..(REFUSED_ENTRIES + 10) {
        let t = hs(&json!({"exp": now() - 3600, "jti": i, "switchyard": {}}));
        let _ = a.authenticate(&t);
        assert!(a.refused.read().len() <= REFUSED_ENTRIES);
    }
}
