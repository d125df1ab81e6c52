//! Signed tickets: what the QR code on a confirmed booking carries.
//!
//! A ticket is a compact JWS (a JWT signed with EdDSA/Ed25519, RFC 8037) of the booking id,
//! showtime, seats and user. Ed25519 rather than the HS256 user tokens' shared secret: a door
//! scanner needs only the public key (Query `ticketVerificationKey`) to check a ticket offline,
//! and cannot mint one.
//!
//! The key is `TICKET_SIGNING_KEY` (the 32-byte seed, base64). Without it the key is derived
//! from `JWT_SECRET` (SHA-256 with a fixed label), so every replica signs alike without
//! another secret to distribute; set it to rotate tickets independently of user tokens.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// What a ticket says: whose booking, which showtime (and its start, Unix seconds), which seats.
#[derive(Debug, Clone, Copy)]
pub struct TicketClaims<'a> {
    pub booking_id: &'a str,
    pub user_id: &'a str,
    pub showtime_id: &'a str,
    pub seats: &'a [String],
    pub start_time: i64,
}

/// `TICKET_SIGNING_KEY`'s value: base64 of a 32-byte Ed25519 seed.
pub fn parse_seed(b64: &str) -> Result<[u8; 32], String> {
    STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not base64: {e}"))?
        .try_into()
        .map_err(|v: Vec<u8>| format!("must be 32 bytes, got {}", v.len()))
}

pub struct TicketSigner {
    key: SigningKey,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSigner")
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl TicketSigner {
    /// From the `TICKET_SIGNING_KEY` seed or, when absent, from the JWT secret.
    pub fn new(seed: Option<[u8; 32]>, jwt_secret: &str) -> Self {
        let seed: [u8; 32] = seed.unwrap_or_else(|| {
            tracing::warn!(
                "TICKET_SIGNING_KEY is unset: tickets are signed with a key derived from \
                 JWT_SECRET, so whoever holds that secret can also make tickets; set its own key"
            );
            let digest = Sha256::new()
                .chain_update(b"moviebook ticket signing key v1\0")
                .chain_update(jwt_secret.as_bytes())
                .finalize();
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&digest);
            seed
        });
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The verification key, base64url (RFC 8037 `x` of an OKP JWK).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The signed ticket of a booking (only confirmed bookings get one: see the resolver).
    pub fn sign(&self, b: &TicketClaims<'_>) -> String {
        let header =
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": &self.public_key()[..8]});
        let claims = serde_json::json!({
            "iss": "moviebook",
            "sub": b.booking_id,
            "uid": b.user_id,
            "sid": b.showtime_id,
            "seats": b.seats,
            "st": b.start_time,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    fn verify(ticket: &str, public: &str) -> Option<serde_json::Value> {
        let (input, sig) = ticket.rsplit_once('.')?;
        let key: [u8; 32] = URL_SAFE_NO_PAD.decode(public).ok()?.try_into().ok()?;
        let sig: [u8; 64] = URL_SAFE_NO_PAD.decode(sig).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&key)
            .ok()?
            .verify(input.as_bytes(), &Signature::from_bytes(&sig))
            .ok()?;
        let payload = input.split('.').nth(1)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    #[test]
    fn keys_come_from_the_seed_or_the_jwt_secret() {
        let a = TicketSigner::new(None, "secret-one");
        let b = TicketSigner::new(None, "secret-one");
        let c = TicketSigner::new(None, "secret-two");
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), c.public_key());
        let seed = parse_seed(&STANDARD.encode([7u8; 32])).unwrap();
        let seeded = TicketSigner::new(Some(seed), "x");
        assert_ne!(seeded.public_key(), a.public_key());
        assert!(parse_seed("c2hvcnQ=").is_err());
        assert!(parse_seed("not base64!").is_err());
    }

    #[test]
    fn a_ticket_verifies_with_the_public_key_only_and_tampering_breaks_it() {
        let signer = TicketSigner::new(None, "secret");
        let seats = vec!["A1".to_owned(), "A2".to_owned()];
        let b = TicketClaims {
            booking_id: "b-1",
            user_id: "u-1",
            showtime_id: "s-1",
            seats: &seats,
            start_time: 1_800_000_000,
        };
        let t = signer.sign(&b);
        let claims = verify(&t, &signer.public_key()).expect("verifies");
        assert_eq!(claims["sub"], "b-1");
        assert_eq!(claims["seats"], serde_json::json!(["A1", "A2"]));
        let other = TicketSigner::new(None, "other");
        assert!(verify(&t, &other.public_key()).is_none());
        let mut forged = t.clone();
        forged.insert(t.find('.').unwrap() + 2, 'x');
        assert!(verify(&forged, &signer.public_key()).is_none());
    }
}
