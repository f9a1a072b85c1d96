//! Crypto helpers: HMAC, random tokens, and the app's key ring (cookie signing, token encryption).
//!
//! Everything here comes from one library, aws-lc-rs: HMAC-SHA256 and SHA-256 (`hmac`,
//! `digest`), randomness, AES-256-GCM and HKDF, and the one constant-time comparison
//! ([`constant_time_eq`], and `hmac::verify`, which compares the same way). Why one stack: it is
//! the library rustls and the AWS SDK already link, so the binaries carry one implementation
//! instead of two (smaller, one to patch); it has a FIPS-validated build (`aws-lc-rs/fips`), which
//! a second pure-Rust stack would not follow; and a review of what the crypto does has one audit
//! surface, not two libraries whose comparisons and failure modes differ.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

/// Why a crypto operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The system random number generator failed (should never happen on Lambda or Linux).
    #[error("the random number generator failed")]
    Random,
    /// A key in the app secret is unusable.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A ciphertext is malformed, names an unknown key, or does not authenticate.
    #[error("the stored ciphertext cannot be decrypted")]
    Decrypt,
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `tag` is the HMAC-SHA256 of `message` under any of `keys`, compared in constant time.
/// Several keys let a current and a previous secret both verify during a rotation.
pub fn verify_hmac_sha256<'a>(
    keys: impl IntoIterator<Item = &'a [u8]>,
    message: &[u8],
    tag: &[u8],
) -> bool {
    keys.into_iter()
        .any(|key| hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), message, tag).is_ok())
}

/// Whether `a` and `b` are equal, compared in constant time (for a given length): the one
/// comparison of secrets, states, nonces and token hashes, so none leaks by timing how far it
/// matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `n` bytes from the system CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// A URL-safe random token carrying `bytes` bytes of entropy (state, nonce, code marks).
pub fn random_token(bytes: usize) -> Result<String, CryptoError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes(bytes)?))
}

/// A string of `len` characters drawn uniformly from `alphabet` (e.g. PKCE verifiers, MAC nonces).
pub fn random_string(alphabet: &[u8], len: usize) -> Result<String, CryptoError> {
    // Rejection sampling keeps the draw uniform for any alphabet size.
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes(len * 2)? {
            if (byte as usize) < limit && out.len() < len {
                out.push(alphabet[byte as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// One named key of the app secret, with the two keys derived from it.
struct NamedKey {
    id: String,
    cookie: [u8; 32],
    token: LessSafeKey,
}

struct Len32;
impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl NamedKey {
    /// Derives independent cookie-signing and token-encryption keys from one secret (HKDF-SHA256),
    /// so the app secret can be a single generated string yet no key serves two purposes.
    fn derive(id: &str, secret: &SecretString) -> Result<Self, CryptoError> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CryptoError::InvalidKey(format!(
                "key id `{id}` must be letters, digits, `-` or `_`"
            )));
        }
        if secret.expose_secret().len() < 32 {
            return Err(CryptoError::InvalidKey(format!(
                "key `{id}` must be at least 32 characters"
            )));
        }
        let prk =
            Salt::new(HKDF_SHA256, b"gatehouse/v1").extract(secret.expose_secret().as_bytes());
        let expand = |info: &[u8]| -> Result<[u8; 32], CryptoError> {
            let mut out = [0u8; 32];
            prk.expand(&[info], Len32)
                .and_then(|okm| okm.fill(&mut out))
                .map_err(|_| CryptoError::InvalidKey(format!("key `{id}` derivation failed")))?;
            Ok(out)
        };
        let cookie = expand(b"cookie-signing")?;
        let token_bytes = expand(b"token-encryption")?;
        let token = UnboundKey::new(&AES_256_GCM, &token_bytes)
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::InvalidKey(format!("key `{id}` is unusable")))?;
        Ok(Self {
            id: id.to_owned(),
            cookie,
            token,
        })
    }
}

/// The app's keys: the current one signs and encrypts; previous ones still verify and decrypt,
/// so a rotation breaks neither cookies in flight nor tokens already stored.
pub struct KeyRing {
    keys: Vec<NamedKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// A key ring from `(id, secret)` pairs, the current key first.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a SecretString)>,
    ) -> Result<Self, CryptoError> {
        let keys = keys
            .into_iter()
            .map(|(id, secret)| NamedKey::derive(id, secret))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(CryptoError::InvalidKey("the app secret has no key".into()));
        }
        Ok(Self { keys })
    }

    /// The id of the current key: the one [`KeyRing::seal`] and [`KeyRing::sign`] use.
    pub fn current_id(&self) -> &str {
        &self.current().id
    }

    /// The ids of every key, the current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    fn current(&self) -> &NamedKey {
        &self.keys[0]
    }

    fn by_id(&self, id: &str) -> Option<&NamedKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Signs `message` for a cookie: returns the current key id and the tag.
    pub fn sign(&self, message: &[u8]) -> (&str, [u8; 32]) {
        let key = self.current();
        (&key.id, hmac_sha256(&key.cookie, message))
    }

    /// Whether `tag` signs `message` under the key named `key_id`.
    pub fn verify(&self, key_id: &str, message: &[u8], tag: &[u8]) -> bool {
        self.by_id(key_id)
            .is_some_and(|key| verify_hmac_sha256([key.cookie.as_slice()], message, tag))
    }

    /// Seals a token for storage in the attribute `attribute` of the item named by `context`
    /// (AES-256-GCM, random nonce): `v2.<key id>.<base64url(nonce | ciphertext | tag)>`. Both
    /// are authenticated and neither stored, so a ciphertext copied to another item, or to
    /// another attribute of the same item (an access token's swapped with a refresh token's),
    /// fails to open.
    pub fn seal(
        &self,
        plaintext: &str,
        context: &str,
        attribute: &str,
    ) -> Result<String, CryptoError> {
        self.encrypt_as("v2", plaintext, &v2_aad(context, attribute))
    }

    /// Opens what [`KeyRing::seal`] produced, under the same item and attribute; also a value
    /// sealed the older way ([`KeyRing::encrypt`], `v1.`), bound to the item only, so installs
    /// stored before the attribute was bound stay readable (they are sealed as `v2.` when their
    /// tokens are next written).
    pub fn open(
        &self,
        sealed: &str,
        context: &str,
        attribute: &str,
    ) -> Result<SecretString, CryptoError> {
        match sealed.split('.').next() {
            Some("v2") => self.decrypt_as("v2", sealed, &v2_aad(context, attribute)),
            Some("v1") => self.decrypt_as("v1", sealed, context),
            _ => Err(CryptoError::Decrypt),
        }
    }

    /// Encrypts a token the first way (`v1.`), bound to `context` only. New values use
    /// [`KeyRing::seal`]; this stays for what was stored with it and for its tests.
    pub fn encrypt(&self, plaintext: &str, context: &str) -> Result<String, CryptoError> {
        self.encrypt_as("v1", plaintext, context)
    }

    fn encrypt_as(
        &self,
        version: &str,
        plaintext: &str,
        context: &str,
    ) -> Result<String, CryptoError> {
        let key = self.current();
        let nonce_bytes = random_bytes(NONCE_LEN)?;
        let nonce =
            Nonce::try_assume_unique_for_key(&nonce_bytes).map_err(|_| CryptoError::Random)?;
        let mut buf = plaintext.as_bytes().to_vec();
        key.token
            .seal_in_place_append_tag(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Random)?;
        let mut out = nonce_bytes;
        out.extend_from_slice(&buf);
        Ok(format!(
            "{version}.{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// Decrypts what [`KeyRing::encrypt`] produced (`v1.` only), under the same `context`.
    pub fn decrypt(&self, sealed: &str, context: &str) -> Result<SecretString, CryptoError> {
        self.decrypt_as("v1", sealed, context)
    }

    fn decrypt_as(
        &self,
        version: &str,
        sealed: &str,
        context: &str,
    ) -> Result<SecretString, CryptoError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(v), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Decrypt);
        };
        if v != version {
            return Err(CryptoError::Decrypt);
        }
        let key = self.by_id(id).ok_or(CryptoError::Decrypt)?;
        let mut data = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| CryptoError::Decrypt)?;
        if data.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let mut ciphertext = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| CryptoError::Decrypt)?;
        let plain = key
            .token
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut ciphertext)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// The id of the key a sealed value (`v1.` or `v2.`) was sealed under, without opening it:
/// what a re-seal after a key rotation looks for.
pub fn sealed_key_id(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1" | "v2"), Some(id), Some(_)) if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// The authenticated data of a `v2.` value: the version, the item and the attribute, separated
/// by NUL, which neither an item key (ids are of [`crate::web::is_id_byte`]s) nor an attribute
/// name holds, so no two pairs give one text.
fn v2_aad(context: &str, attribute: &str) -> String {
    format!("v2\0{context}\0{attribute}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (key "Jefe").
    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// RFC 4231 test case 6: a key longer than the block size.
    #[test]
    fn hmac_matches_rfc4231_case_6() {
        let tag = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(tag),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn verify_accepts_any_listed_key_and_nothing_else() {
        let tag = hmac_sha256(b"old", b"msg");
        assert!(verify_hmac_sha256(
            [b"new".as_slice(), b"old"],
            b"msg",
            &tag
        ));
        assert!(!verify_hmac_sha256([b"new".as_slice()], b"msg", &tag));
        assert!(!verify_hmac_sha256([b"old".as_slice()], b"msg2", &tag));
        assert!(!verify_hmac_sha256([b"old".as_slice()], b"msg", &tag[..31]));
    }

    /// FIPS 180-2 appendix B: SHA-256 of "abc" and of the empty string.
    #[test]
    fn sha256_matches_fips_180_vectors() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn constant_time_eq_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"state-1", b"state-1"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"state-1", b"state-2"));
        assert!(!constant_time_eq(b"state-1", b"state-"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    fn ring(keys: &[(&str, &str)]) -> KeyRing {
        let secrets: Vec<(String, SecretString)> = keys
            .iter()
            .map(|(id, s)| (id.to_string(), SecretString::from(s.to_string())))
            .collect();
        KeyRing::new(secrets.iter().map(|(id, s)| (id.as_str(), s))).unwrap()
    }

    const A: &str = "a-secret-of-at-least-thirty-two-characters";
    const B: &str = "another-secret-of-at-least-thirty-two-chars";

    #[test]
    fn encryption_round_trips_and_binds_context() {
        let keys = ring(&[("k1", A)]);
        let sealed = keys.encrypt("tok-123", "install#sesami/shop-1").unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert!(!sealed.contains("tok-123"));
        let plain = keys.decrypt(&sealed, "install#sesami/shop-1").unwrap();
        assert_eq!(plain.expose_secret(), "tok-123");
        assert!(keys.decrypt(&sealed, "install#sesami/shop-2").is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.decrypt(&tampered, "install#sesami/shop-1").is_err());
    }

    #[test]
    fn sealed_values_are_bound_to_their_attribute() {
        let keys = ring(&[("k1", A)]);
        let ctx = "install#haravan/1000111111";
        let access = keys.seal("access", ctx, "access_token_sealed").unwrap();
        let refresh = keys.seal("refresh", ctx, "refresh_token_sealed").unwrap();
        assert!(access.starts_with("v2.k1."));
        assert_eq!(
            keys.open(&access, ctx, "access_token_sealed")
                .unwrap()
                .expose_secret(),
            "access"
        );
        // Swapped within the item, or moved to another item: refused.
        assert!(keys.open(&refresh, ctx, "access_token_sealed").is_err());
        assert!(keys.open(&access, ctx, "refresh_token_sealed").is_err());
        assert!(
            keys.open(&access, "install#haravan/2", "access_token_sealed")
                .is_err()
        );
        // A v2 value relabelled v1 does not open as one (the AAD differs).
        let relabelled = access.replacen("v2.", "v1.", 1);
        assert!(keys.open(&relabelled, ctx, "access_token_sealed").is_err());
        assert!(keys.decrypt(&access, ctx).is_err());
        // What was stored the first way still opens, under its item.
        let old = keys.encrypt("legacy", ctx).unwrap();
        assert_eq!(
            keys.open(&old, ctx, "access_token_sealed")
                .unwrap()
                .expose_secret(),
            "legacy"
        );
        assert!(
            keys.open(&old, "install#haravan/2", "access_token_sealed")
                .is_err()
        );
        assert!(keys.open("v3.k1.AAAA", ctx, "access_token_sealed").is_err());
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_and_signatures_readable() {
        let old = ring(&[("k1", A)]);
        let sealed = old.encrypt("tok", "ctx").unwrap();
        let (kid, tag) = old.sign(b"cookie");
        let rotated = ring(&[("k2", B), ("k1", A)]);
        assert_eq!(
            rotated.decrypt(&sealed, "ctx").unwrap().expose_secret(),
            "tok"
        );
        assert!(rotated.verify(kid, b"cookie", &tag));
        assert!(rotated.encrypt("tok", "ctx").unwrap().starts_with("v1.k2."));
        let dropped = ring(&[("k2", B)]);
        assert!(dropped.decrypt(&sealed, "ctx").is_err());
        assert!(!dropped.verify(kid, b"cookie", &tag));
    }

    #[test]
    fn weak_or_malformed_keys_are_refused() {
        let short = SecretString::from("short".to_string());
        assert!(KeyRing::new([("k1", &short)]).is_err());
        let ok = SecretString::from(A.to_string());
        assert!(KeyRing::new([("k.1", &ok)]).is_err());
        assert!(KeyRing::new(std::iter::empty()).is_err());
    }

    #[test]
    fn random_strings_use_only_the_alphabet() {
        let s = random_string(b"abc", 200).unwrap();
        assert_eq!(s.len(), 200);
        assert!(s.bytes().all(|b| b"abc".contains(&b)));
        assert_ne!(random_token(32).unwrap(), random_token(32).unwrap());
    }
}
