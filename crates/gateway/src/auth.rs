//! Authorization of the client API with JSON Web Tokens.
//!
//! A token is a JWT signed with the node's shared secret (HS256) or with a
//! private key whose public half the node holds (RS256, ES256, EdDSA and
//! their siblings). Its claim `switchyard` lists the topic patterns its
//! holder may publish to and subscribe to, and whether it may administer
//! the node:
//!
//! ```json
//! {"exp": 1767225600, "switchyard": {"publish": ["orders.>"], "subscribe": ["orders.*.created"], "admin": false}}
//! ```
//!
//! [`Authorizer::authenticate`] turns a token into an [`Access`]; verified
//! tokens are kept in a bounded cache keyed by the token text until they
//! expire, so that a client repeating its token pays a hash lookup, not a
//! signature check. [`Access`] answers the questions the handlers ask
//! (may it publish to this topic, subscribe to these patterns, administer).
//! Requests without a token get the node's [`Anonymous`] access.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use switchyard_model::{Topic, TopicPattern, TopicSet};

/// Default allowance for clock skew when checking `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default most verified tokens kept in the cache (a few hundred bytes
/// each, so about 5 MiB when full).
pub const DEFAULT_TOKEN_CACHE: usize = 10_000;
/// Longest token accepted, in bytes; a longer one is refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most patterns in one list of the `switchyard` claim.
pub const MAX_CLAIM_PATTERNS: usize = 1024;
/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: a key of the
/// size of the hash output).
pub const MIN_SECRET_BYTES: usize = 32;
/// Name of the claim that holds the permissions.
pub const CLAIM: &str = "switchyard";
/// Name of the cookie that may carry a token (for `EventSource`).
pub const COOKIE: &str = "switchyardAuthorization";
/// Name of the query parameter that may carry a token.
pub const QUERY_PARAMETER: &str = "authorization";

/// What a request without a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Anonymous {
    /// Nothing but the health endpoints.
    #[default]
    None,
    /// Subscribe to any pattern, join groups and settle their messages,
    /// and read the topic, group and cluster listings.
    Subscribe,
    /// Everything, administration included (a node on a trusted network).
    All,
}

impl std::str::FromStr for Anonymous {
    type Err = String;
    fn from_str(s: &str) -> Result<Anonymous, String> {
        match s {
            "none" => Ok(Anonymous::None),
            "subscribe" => Ok(Anonymous::Subscribe),
            "all" => Ok(Anonymous::All),
            other => Err(format!("{other:?}: expected none, subscribe or all")),
        }
    }
}

impl fmt::Display for Anonymous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Anonymous::None => "none",
            Anonymous::Subscribe => "subscribe",
            Anonymous::All => "all",
        })
    }
}

/// A key that verifies token signatures.
#[derive(Clone)]
pub struct VerifyKey {
    key: DecodingKey,
    /// Where the key came from, for messages (never the key itself).
    source: String,
}

impl VerifyKey {
    /// A shared secret for HS256 (HS384 and HS512 verify with it too).
    /// Refused when shorter than [`MIN_SECRET_BYTES`].
    pub fn secret(secret: &[u8], source: impl Into<String>) -> Result<VerifyKey, String> {
        let source = source.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{source}: the secret has {} bytes; at least {MIN_SECRET_BYTES} are needed",
                secret.len()
            ));
        }
        Ok(VerifyKey {
            key: DecodingKey::from_secret(secret),
            source,
        })
    }

    /// A PEM public key: RSA (RS256 and the other RSA algorithms), EC
    /// P-256 or P-384 (ES256, ES384) or Ed25519 (EdDSA).
    pub fn public_pem(pem: &[u8], source: impl Into<String>) -> Result<VerifyKey, String> {
        let source = source.into();
        let key = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map_err(|_| {
                format!("{source}: not a PEM public key of type RSA, EC (P-256, P-384) or Ed25519")
            })?;
        Ok(VerifyKey { key, source })
    }

    fn algorithms(&self) -> &'static [Algorithm] {
        use AlgorithmFamily as F;
        match self.key.family() {
            F::Hmac => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            F::Rsa => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            F::Ec => &[Algorithm::ES256, Algorithm::ES384],
            F::Ed => &[Algorithm::EdDSA],
        }
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({:?}, {})", self.key.family(), self.source)
    }
}

/// Authorization settings of the client API.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Keys any of which may verify a token. Empty: tokens are not
    /// accepted and every request gets the [`Anonymous`] access.
    pub keys: Vec<VerifyKey>,
    /// What a request without a token may do.
    pub anonymous: Anonymous,
    /// Allowance for clock skew when checking `exp` and `nbf`.
    pub leeway: Duration,
    /// Refuse tokens without an `exp` claim.
    pub require_exp: bool,
    /// When set, a token's `aud` must name it (and must be present).
    pub audience: Option<String>,
    /// When set, a token's `iss` must be it (and must be present).
    pub issuer: Option<String>,
    /// Most verified tokens kept in the cache.
    pub cache_entries: usize,
}

impl Default for AuthConfig {
    /// No keys and anonymous access to everything: a node for a laptop.
    fn default() -> Self {
        AuthConfig {
            keys: Vec::new(),
            anonymous: Anonymous::All,
            leeway: DEFAULT_LEEWAY,
            require_exp: false,
            audience: None,
            issuer: None,
            cache_entries: DEFAULT_TOKEN_CACHE,
        }
    }
}

/// The `switchyard` claim of a token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Patterns of the topics the holder may publish to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Patterns the holder may subscribe to (a subscription's patterns
    /// must be covered by these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// Whether the holder may manage plugins, delete groups and administer
    /// the cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// The claims read from a token; the registered ones are checked by
/// `jsonwebtoken`.
#[derive(Deserialize)]
struct Claims {
    exp: Option<u64>,
    #[serde(rename = "switchyard")]
    scope: Option<Scope>,
}

/// What a token grants, with its patterns parsed.
#[derive(Debug)]
pub struct Permissions {
    publish: TopicSet,
    subscribe: TopicSet,
    admin: bool,
}

impl Permissions {
    /// Parses a [`Scope`]; an invalid pattern refuses the whole token.
    pub fn from_scope(scope: &Scope) -> Result<Permissions, String> {
        let set = |name: &str, list: &[String]| {
            if list.len() > MAX_CLAIM_PATTERNS {
                return Err(format!(
                    "claim {CLAIM}.{name} lists {} patterns; at most {MAX_CLAIM_PATTERNS}",
                    list.len()
                ));
            }
            list.iter()
                .map(|p| {
                    p.parse::<TopicPattern>()
                        .map_err(|e| format!("claim {CLAIM}.{name}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(TopicSet::new)
        };
        Ok(Permissions {
            publish: set("publish", &scope.publish)?,
            subscribe: set("subscribe", &scope.subscribe)?,
            admin: scope.admin,
        })
    }
}

/// What one request may do: the anonymous access, widened by a token's
/// permissions when it carries a valid one.
#[derive(Clone, Debug)]
pub struct Access {
    anonymous: Anonymous,
    token: Option<Arc<Permissions>>,
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, and anonymous access does not allow the request: a token
    /// would help (HTTP 401).
    NoToken(String),
    /// The token does not allow the request (HTTP 403).
    Forbidden(String),
}

impl Access {
    /// The access of a request without a token.
    pub fn anonymous(anonymous: Anonymous) -> Access {
        Access {
            anonymous,
            token: None,
        }
    }

    /// Full access, for requests this node does not authorize itself
    /// (relayed by a peer, which authorized them).
    pub fn trusted() -> Access {
        Access::anonymous(Anonymous::All)
    }

    fn deny(&self, what: String) -> Denied {
        if self.token.is_some() {
            Denied::Forbidden(format!("the token does not allow {what}"))
        } else {
            Denied::NoToken(format!("{what} needs a token"))
        }
    }

    /// Whether a token came with the request.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// May publish to `topic`.
    pub fn publish(&self, topic: &Topic) -> Result<(), Denied> {
        if self.anonymous == Anonymous::All
            || self
                .token
                .as_ref()
                .is_some_and(|t| t.publish.matches(topic))
        {
            return Ok(());
        }
        Err(self.deny(format!("publishing to {topic}")))
    }

    /// May subscribe to every topic `topics` can match.
    pub fn subscribe(&self, topics: &TopicSet) -> Result<(), Denied> {
        if self.anonymous != Anonymous::None {
            return Ok(());
        }
        let Some(t) = &self.token else {
            return Err(self.deny("subscribing".into()));
        };
        let uncovered: Vec<&str> = topics
            .patterns()
            .iter()
            .filter(|p| !t.subscribe.covers(p))
            .map(TopicPattern::as_str)
            .collect();
        if uncovered.is_empty() {
            Ok(())
        } else {
            Err(self.deny(format!(
                "subscribing to {} (its subscribe patterns do not cover {})",
                uncovered.join(", "),
                if uncovered.len() == 1 { "it" } else { "them" }
            )))
        }
    }

    /// May subscribe to something: what settling a group's messages needs.
    pub fn subscribe_any(&self) -> Result<(), Denied> {
        if self.anonymous != Anonymous::None
            || self
                .token
                .as_ref()
                .is_some_and(|t| !t.subscribe.patterns().is_empty())
        {
            return Ok(());
        }
        Err(self.deny("settling group messages".into()))
    }

    /// May read the listings of topics, groups and cluster members: any
    /// valid token, or anonymous subscribe access.
    pub fn read(&self, what: &str) -> Result<(), Denied> {
        if self.anonymous != Anonymous::None || self.token.is_some() {
            return Ok(());
        }
        Err(self.deny(format!("reading {what}")))
    }

    /// May administer: plugins, group deletion, cluster administration.
    pub fn admin(&self, what: &str) -> Result<(), Denied> {
        if self.anonymous == Anonymous::All || self.token.as_ref().is_some_and(|t| t.admin) {
            return Ok(());
        }
        Err(self.deny(format!("{what} (an admin token)")))
    }
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Its `exp` has passed (by more than the leeway).
    Expired,
    /// Its `nbf` has not come yet (by more than the leeway).
    NotYetValid,
    /// Anything else: malformed, signed with an unknown key or algorithm,
    /// wrong audience or issuer, a bad claim. The text says which.
    Invalid(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Expired => f.write_str("the token has expired"),
            TokenError::NotYetValid => f.write_str("the token is not valid yet (nbf)"),
            TokenError::Invalid(why) => write!(f, "invalid token: {why}"),
        }
    }
}

/// A verified token in the cache.
struct Cached {
    permissions: Arc<Permissions>,
    exp: Option<u64>,
}

/// Verifies tokens and caches the verified ones.
pub struct Authorizer {
    keys: Vec<VerifyKey>,
    /// One per key family: `jsonwebtoken` wants every algorithm of a
    /// validation to be of the verifying key's family.
    validations: Vec<(AlgorithmFamily, Validation)>,
    anonymous: Anonymous,
    leeway: u64,
    capacity: usize,
    /// Verified tokens by their text; bounded by `capacity`.
    cache: RwLock<HashMap<Box<str>, Cached>>,
    /// Refused tokens (expired, or invalid for good) by their text, with
    /// when they were refused: a client that sends the same bad token
    /// again (an `EventSource` reconnecting) costs no second signature
    /// check for [`REFUSED_FOR`]. Bounded by [`REFUSED_ENTRIES`].
    refused: RwLock<HashMap<Box<str>, (TokenError, u64)>>,
}

/// How long a refused token is answered from memory, in seconds.
const REFUSED_FOR: u64 = 60;
/// Most refused tokens remembered.
const REFUSED_ENTRIES: usize = 1024;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authorizer {
    /// An authorizer for `config`.
    pub fn new(config: AuthConfig) -> Authorizer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required: Vec<&str> = Vec::new();
        if config.require_exp {
            required.push("exp");
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let mut validations: Vec<(AlgorithmFamily, Validation)> = Vec::new();
        for k in &config.keys {
            let family = k.key.family();
            if !validations.iter().any(|(f, _)| *f == family) {
                let mut v = validation.clone();
                v.algorithms = k.algorithms().to_vec();
                validations.push((family, v));
            }
        }
        Authorizer {
            keys: config.keys,
            validations,
            anonymous: config.anonymous,
            leeway: config.leeway.as_secs(),
            capacity: config.cache_entries.max(1),
            cache: RwLock::new(HashMap::new()),
            refused: RwLock::new(HashMap::new()),
        }
    }

    /// Whether tokens can be verified at all (keys are configured).
    pub fn accepts_tokens(&self) -> bool {
        !self.keys.is_empty()
    }

    /// What a request without a token may do.
    pub fn anonymous_level(&self) -> Anonymous {
        self.anonymous
    }

    /// The access of a request without a token.
    pub fn anonymous(&self) -> Access {
        Access::anonymous(self.anonymous)
    }

    /// The access a token gives; an error when it is not valid.
    pub fn authenticate(&self, token: &str) -> Result<Access, TokenError> {
        let now = now_secs();
        if let Some(hit) = self.cache.read().get(token) {
            if hit
                .exp
                .is_none_or(|exp| now <= exp.saturating_add(self.leeway))
            {
                return Ok(Access {
                    anonymous: self.anonymous,
                    token: Some(hit.permissions.clone()),
                });
            }
        } else {
            if let Some((error, at)) = self.refused.read().get(token)
                && now < at.saturating_add(REFUSED_FOR)
            {
                return Err(error.clone());
            }
            let cached = self
                .verify(token)
                .inspect_err(|e| self.refuse(token, e, now))?;
            let access = Access {
                anonymous: self.anonymous,
                token: Some(cached.permissions.clone()),
            };
            self.remember(token, cached, now);
            return Ok(access);
        }
        // Expired since it was cached.
        self.cache.write().remove(token);
        Err(TokenError::Expired)
    }

    /// Number of tokens in the cache.
    pub fn cached(&self) -> usize {
        self.cache.read().len()
    }

    /// Remembers a refused token, unless it may become valid (`nbf`).
    fn refuse(&self, token: &str, error: &TokenError, now: u64) {
        if *error == TokenError::NotYetValid || token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let mut refused = self.refused.write();
        if refused.len() >= REFUSED_ENTRIES {
            refused.retain(|_, (_, at)| now < at.saturating_add(REFUSED_FOR));
            if refused.len() >= REFUSED_ENTRIES {
                refused.clear();
            }
        }
        refused.insert(token.into(), (error.clone(), now));
    }

    fn remember(&self, token: &str, cached: Cached, now: u64) {
        let mut cache = self.cache.write();
        if cache.len() >= self.capacity {
            let leeway = self.leeway;
            cache.retain(|_, c| c.exp.is_none_or(|exp| now <= exp.saturating_add(leeway)));
            if cache.len() >= self.capacity {
                // Still full of live tokens: drop about half of them (the
                // map's order is random); they are verified again when
                // they come back.
                let mut keep = false;
                cache.retain(|_, _| {
                    keep = !keep;
                    keep
                });
            }
        }
        cache.insert(token.into(), cached);
    }

    fn verify(&self, token: &str) -> Result<Cached, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        if self.keys.is_empty() {
            return Err(invalid("this node has no keys to verify tokens with"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("longer than 16 KiB"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("not a JWT ({e})")))?;
        let candidates: Vec<&VerifyKey> = self
            .keys
            .iter()
            .filter(|k| k.algorithms().contains(&header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::Invalid(format!(
                "signed with {:?}, for which this node has no key",
                header.alg
            )));
        }
        // Any key may verify (rotation). A failure other than a wrong
        // signature (an expired token, a bad claim) is the one reported:
        // that key did verify the signature.
        let mut failure = None;
        for key in candidates {
            let family = key.key.family();
            let Some((_, validation)) = self.validations.iter().find(|(f, _)| *f == family) else {
                continue;
            };
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => {
                    let scope = data.claims.scope.unwrap_or_default();
                    let permissions =
                        Permissions::from_scope(&scope).map_err(TokenError::Invalid)?;
                    return Ok(Cached {
                        permissions: Arc::new(permissions),
                        exp: data.claims.exp,
                    });
                }
                Err(e) => {
                    let error = match e.kind() {
                        ErrorKind::InvalidSignature => {
                            failure.get_or_insert(invalid("the signature does not verify"));
                            continue;
                        }
                        ErrorKind::ExpiredSignature => TokenError::Expired,
                        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                        ErrorKind::InvalidAudience => invalid("wrong audience (aud)"),
                        ErrorKind::InvalidIssuer => invalid("wrong issuer (iss)"),
                        ErrorKind::MissingRequiredClaim(c) => {
                            TokenError::Invalid(format!("the claim {c} is missing"))
                        }
                        ErrorKind::InvalidClaimFormat(c) => {
                            TokenError::Invalid(format!("the claim {c} is malformed"))
                        }
                        ErrorKind::Json(j) => TokenError::Invalid(format!("claims: {j}")),
                        _ => TokenError::Invalid(e.to_string()),
                    };
                    return Err(error);
                }
            }
        }
        Err(failure.unwrap_or_else(|| invalid("the signature does not verify")))
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("keys", &self.keys)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

/// The token a request carries, from (in this order) the `Authorization:
/// Bearer` header, the `authorization` query parameter, or, on a `GET` or
/// `HEAD` only, the `switchyardAuthorization` cookie. A cookie travels
/// with every request a browser makes to the node, whoever's page makes
/// it; taking it only for reads keeps another site's page from
/// publishing or administering with a visitor's cookie.
pub fn token_of<'a>(
    headers: &'a http::HeaderMap,
    query: Option<&'a str>,
    cookie_allowed: bool,
) -> Result<Option<std::borrow::Cow<'a, str>>, TokenError> {
    let mut auth = headers.get_all(http::header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(TokenError::Invalid(
                "more than one Authorization header".into(),
            ));
        }
        let bearer = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty());
        return match bearer {
            Some(t) => Ok(Some(t.into())),
            None => Err(TokenError::Invalid(
                "the Authorization header is not \"Bearer <token>\"".into(),
            )),
        };
    }
    if let Some(q) = query {
        let mut found = None;
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == QUERY_PARAMETER {
                if found.is_some() {
                    return Err(TokenError::Invalid(format!(
                        "the query parameter {QUERY_PARAMETER} is given twice"
                    )));
                }
                found = Some(v);
            }
        }
        if let Some(t) = found {
            return Ok(Some(t));
        }
    }
    if cookie_allowed {
        for value in headers.get_all(http::header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((name, token)) = pair.trim().split_once('=')
                    && name == COOKIE
                {
                    let token = token.trim_matches('"');
                    if !token.is_empty() {
                        return Ok(Some(token.into()));
                    }
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
