//! Secrets: access tokens (`arca_<id>_<secret>`), argon2id password hashes, generated
//! passwords, and the HS256 JWTs of the registry token flow and CLI sessions.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::distr::{Alphanumeric, SampleString};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::model::SigningKey;

/// Every access token starts with this, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "arca_";
/// The JWT issuer and audience.
pub const ISSUER: &str = "arca";
pub const SERVICE: &str = "arca";

/// A new access token: its id (public, names it in listings and the audit log) and the whole
/// secret string (shown once).
pub fn new_token() -> (String, String) {
    let mut rng = rand::rng();
    let id = Alphanumeric
        .sample_string(&mut rng, 12)
        .to_ascii_lowercase();
    let secret = Alphanumeric.sample_string(&mut rng, 32);
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    (id, token)
}

/// The id part of a presented access token, if it has the shape of one.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12
        && secret.len() == 32
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric()))
    .then_some(id)
}

/// The stored hash of an access token.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Constant-time comparison of two hex hashes.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A random password for the bootstrap account (24 letters and digits, 142 bits).
pub fn new_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

/// Shortest password accepted for a user.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (argon2 takes any length; this bounds the work per attempt).
pub const MAX_PASSWORD: usize = 256;

pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(format!(
            "a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        ));
    }
    Ok(())
}

/// argon2id with the crate's defaults (19 MiB, 2 passes), as a PHC string.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hash a password: {e}"))?
        .to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A new signing key.
pub fn new_signing_key(at_ms: i64) -> SigningKey {
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    SigningKey {
        kid: Alphanumeric
            .sample_string(&mut rand::rng(), 16)
            .to_ascii_lowercase(),
        secret: serde_bytes::ByteBuf::from(secret),
        created_at_ms: at_ms,
    }
}

/// What a JWT is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// A registry bearer token (`/v2/`), with its `access` list.
    Registry,
    /// A registry refresh token (`grant_type=refresh_token`).
    Refresh,
    /// A CLI or API session (`arca login` with a password).
    Session,
}

/// One entry of a registry token's access list (the distribution token spec's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The principal (`user:alice`), or empty for an anonymous registry token.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub kind: TokenKind,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// The access token the JWT was obtained with, so revoking it revokes the JWT too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
}

/// Signs `claims` with `key`.
pub fn sign(key: &SigningKey, claims: &Claims) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(&key.secret),
    )?)
}

/// Why a presented JWT is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not a JWT at all.
    Malformed,
    /// Signed by no key this node holds, or a bad signature.
    BadSignature,
    Expired,
}

/// Whether `text` looks like a JWT (three base64url parts).
pub fn looks_like_jwt(text: &str) -> bool {
    text.split('.').count() == 3 && text.starts_with("eyJ")
}

/// Verifies a JWT against the kept signing keys: signature, issuer, audience, expiry.
pub fn verify(token: &str, keys: &[SigningKey]) -> Result<Claims, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    if header.alg != Algorithm::HS256 {
        return Err(JwtError::BadSignature);
    }
    let kid = header.kid.ok_or(JwtError::BadSignature)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(JwtError::BadSignature)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[SERVICE]);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 5;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    match jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key.secret), &validation)
    {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
            | jsonwebtoken::errors::ErrorKind::ImmatureSignature => JwtError::Expired,
            _ => JwtError::BadSignature,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_prefix_an_id_and_only_their_hash_is_kept() {
        let (id, token) = new_token();
        assert!(token.starts_with("arca_"));
        assert_eq!(token_id(&token), Some(id.as_str()));
        assert_eq!(token_id("arca_short_x"), None);
        assert_eq!(token_id("ghp_abc"), None);
        let hash = token_hash(&token);
        assert!(!hash.contains(&token[5..]));
        assert!(same_hash(&hash, &token_hash(&token)));
        assert!(!same_hash(&hash, &token_hash("arca_other")));
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong horse battery", &hash));
        assert!(!verify_password("x", "not a phc string"));
        assert!(check_password("short").is_err());
    }

    fn claims(exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: ISSUER.into(),
            sub: "user:alice".into(),
            aud: SERVICE.into(),
            exp: now + exp_in,
            nbf: now - 1,
            iat: now,
            jti: "j".into(),
            kind: TokenKind::Registry,
            access: vec![],
            tid: None,
        }
    }

    #[test]
    fn jwts_verify_with_the_key_that_signed_them_until_they_expire() {
        let key = new_signing_key(1);
        let other = new_signing_key(2);
        let token = sign(&key, &claims(300)).expect("sign");
        assert!(looks_like_jwt(&token));
        assert_eq!(
            verify(&token, std::slice::from_ref(&key))
                .expect("valid")
                .sub,
            "user:alice"
        );
        assert_eq!(
            verify(&token, std::slice::from_ref(&other)).expect_err("another key"),
            JwtError::BadSignature
        );
        let expired = sign(&key, &claims(-60)).expect("sign");
        assert_eq!(
            verify(&expired, std::slice::from_ref(&key)).expect_err("expired"),
            JwtError::Expired
        );
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(verify(&forged, &[key]).is_err());
    }
}
