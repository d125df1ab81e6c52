//! The user-token keys: the P-256 key the user service alone signs with, and the public keys
//! every service and Kong verify with.
//!
//! The operator generates the signing key once into `<name>-secrets` (or takes it from
//! `auth.userTokenKeyRef`) and publishes its public half, plus any keys of
//! `auth.userTokenVerificationKeysRef`, as `user-token-public-keys`. Listing two keys is how a
//! rotation keeps every session valid: first add the new public key (pods roll and accept
//! both), then switch the signing key, then drop the old public key after the token lifetime.

use p256::{
    PublicKey, SecretKey,
    elliptic_curve::sec1::ToEncodedPoint,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding},
};
use sha2::{Digest, Sha256};

/// A key user tokens are accepted with: its id (the tokens' `kid`, Kong's credential key) and
/// its SPKI PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationKey {
    pub kid: String,
    pub pem: String,
}

/// The id of a public key: the first 16 hex digits of SHA-256 of its uncompressed SEC1 point,
/// the same value the user service puts into the tokens' `kid` header.
pub fn key_id(public: &PublicKey) -> String {
    let digest = Sha256::digest(public.to_encoded_point(false).as_bytes());
    hex::encode(&digest[..8])
}

/// A new signing key as a PKCS#8 PEM (what `USER_TOKEN_SIGNING_KEY` takes).
pub fn new_signing_key() -> Result<String, String> {
    loop {
        // Only 0 and values >= the group order are refused (odds ~2^-128): draw again.
        if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key
                .to_pkcs8_pem(LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|e| e.to_string());
        }
    }
}

fn verification_key(public: &PublicKey) -> Result<VerificationKey, String> {
    Ok(VerificationKey {
        kid: key_id(public),
        pem: public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?,
    })
}

/// The keys tokens are accepted with: the signing key's public half first, then the extra
/// PEM blocks (duplicates dropped). Errors say which input is wrong and never echo a key.
pub fn verification_keys(
    signing_pem: &str,
    extra_pems: Option<&str>,
) -> Result<Vec<VerificationKey>, String> {
    let signing = SecretKey::from_pkcs8_pem(signing_pem.trim())
        .map_err(|e| format!("the user-token signing key is not a PKCS#8 PEM P-256 key ({e})"))?;
    let mut keys = vec![verification_key(&signing.public_key())?];
    if let Some(text) = extra_pems {
        for (i, block) in pem_blocks(text).into_iter().enumerate() {
            let public = PublicKey::from_public_key_pem(block).map_err(|e| {
                format!(
                    "verification key {} is not a SPKI PEM P-256 public key ({e})",
                    i + 1
                )
            })?;
            let key = verification_key(&public)?;
            if !keys.iter().any(|k| k.kid == key.kid) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

/// The PEM blocks of a text, each from its BEGIN line to its END line.
fn pem_blocks(text: &str) -> Vec<&str> {
    const END: &str = "-----END PUBLIC KEY-----";
    let mut blocks = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let cut = rest.find(END).map_or(rest.len(), |i| i + END.len());
        blocks.push(rest[..cut].trim());
        rest = rest[cut..].trim_start();
    }
    blocks
}

/// `user-token-public-keys`: the PEMs one after the other, as the services read them.
pub fn joined(keys: &[VerificationKey]) -> String {
    keys.iter()
        .map(|k| k.pem.as_str())
        .collect::<Vec<_>>()
        .join("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_pem(signing_pem: &str) -> String {
        let key = SecretKey::from_pkcs8_pem(signing_pem).unwrap();
        key.public_key().to_public_key_pem(LineEnding::LF).unwrap()
    }

    #[test]
    fn key_id_matches_the_services() {
        // services/common/src/auth.rs has the same vector (computed independently with
        // Python's `cryptography`).
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(key_id(&key.public_key()), "c8f193e678e762f9");
    }

    #[test]
    fn generated_keys_differ_and_parse() {
        let a = new_signing_key().unwrap();
        let b = new_signing_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("-----BEGIN PRIVATE KEY-----"), "{a}");
        let keys = verification_keys(&a, None).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].pem, public_pem(&a));
        assert_eq!(keys[0].kid.len(), 16);
    }

    #[test]
    fn extra_keys_follow_the_signing_key_once() {
        let (a, b) = (new_signing_key().unwrap(), new_signing_key().unwrap());
        let extra = format!("{}\n{}", public_pem(&b), public_pem(&a));
        let keys = verification_keys(&a, Some(&extra)).unwrap();
        assert_eq!(
            keys.len(),
            2,
            "the signing key's own public key is listed once"
        );
        assert_eq!(keys[0].pem, public_pem(&a));
        assert_eq!(keys[1].pem, public_pem(&b));
        assert_eq!(
            joined(&keys),
            format!("{}{}", public_pem(&a), public_pem(&b))
        );
    }

    #[test]
    fn bad_keys_are_named_not_echoed() {
        let err = verification_keys("secret-looking text", None).unwrap_err();
        assert!(err.contains("signing key"), "{err}");
        assert!(!err.contains("secret-looking"), "{err}");
        let a = new_signing_key().unwrap();
        let err = verification_keys(&a, Some("garbage")).unwrap_err();
        assert!(err.contains("verification key 1"), "{err}");
    }
}
