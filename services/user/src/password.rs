//! Password hashing with argon2id at configurable parameters.
//!
//! Hashing is deliberately slow (tens of milliseconds and `memory_kib` of RAM per hash), so it
//! runs on tokio's blocking pool and at most `hash_concurrency` hashes run at once: a burst of
//! logins queues instead of starving the async workers or exhausting memory.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use tokio::sync::Semaphore;

/// argon2id cost parameters (PHC string `m=..,t=..,p=..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP Password Storage Cheat Sheet, argon2id option 2: 19 MiB, 2 iterations, 1 lane.
    pub const OWASP: HashParams = HashParams {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    /// Whether argon2 accepts these parameters; the reason otherwise.
    pub fn validate(&self) -> Result<(), String> {
        self.argon2().map(|_| ())
    }

    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| format!("argon2 rejects these parameters: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl std::fmt::Display for HashParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "argon2id m={} KiB, t={}, p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed: {0}")]
    Task(String),
}

/// Hashes and verifies passwords off the async workers.
#[derive(Clone)]
pub struct PasswordHashing {
    params: HashParams,
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password with the current parameters: verified against when the email
    /// is unknown, so an unknown email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

impl PasswordHashing {
    pub async fn new(params: HashParams, concurrency: usize) -> Result<Self, HashError> {
        let argon2 = params.argon2().map_err(HashError::Hash)?;
        let random: [u8; 24] = rand::random();
        let dummy_password = hex_string(&random);
        let a = argon2.clone();
        let dummy_hash = tokio::task::spawn_blocking(move || hash_with(&a, &dummy_password))
            .await
            .map_err(|e| HashError::Task(e.to_string()))??;
        Ok(Self {
            params,
            argon2,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    pub fn params(&self) -> HashParams {
        self.params
    }

    /// A PHC string (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`) for `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError::Task(e.to_string()))?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || hash_with(&argon2, &password))
            .await
            .map_err(|e| HashError::Task(e.to_string()))?
    }

    /// Whether `password` matches `stored`; `None` verifies against the dummy hash (and answers
    /// false) so that the caller spends the same time whether or not the account exists.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError::Task(e.to_string()))?;
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let argon2 = self.argon2.clone();
        let matched = tokio::task::spawn_blocking(move || verify_with(&argon2, &password, &stored))
            .await
            .map_err(|e| HashError::Task(e.to_string()))?;
        Ok(known && matched)
    }

    /// Whether a stored hash was made with other parameters than the current ones (it is then
    /// re-hashed at the next successful login).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        !stored.starts_with(&self.phc_prefix())
    }

    fn phc_prefix(&self) -> String {
        format!(
            "$argon2id$v=19$m={},t={},p={}$",
            self.params.memory_kib, self.params.iterations, self.params.parallelism
        )
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, HashError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| HashError::Hash(e.to_string()))?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Verifies with the parameters recorded in the stored hash (older parameters keep working).
fn verify_with(argon2: &Argon2<'_>, password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => argon2.verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes `count` passwords on one thread and answers hashes per second (the benchmark's raw
/// hash rate).
pub fn raw_hash_rate(params: HashParams, count: u32) -> Result<f64, HashError> {
    let argon2 = params.argon2().map_err(HashError::Hash)?;
    let start = std::time::Instant::now();
    for i in 0..count.max(1) {
        hash_with(&argon2, &format!("benchmark-password-{i}"))?;
    }
    Ok(f64::from(count.max(1)) / start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashParams = HashParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn hash_then_verify() {
        let h = PasswordHashing::new(CHEAP, 2).await.unwrap();
        let stored = h.hash("correct horse".into()).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
            "{stored}"
        );
        assert!(
            h.verify("correct horse".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !h.verify("wrong horse".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(!h.needs_rehash(&stored));
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let h = PasswordHashing::new(CHEAP, 1).await.unwrap();
        assert!(!h.verify("anything".into(), None).await.unwrap());
        assert!(
            !h.verify("x".into(), Some("not a phc string".into()))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn old_parameters_still_verify_and_are_flagged() {
        let old = PasswordHashing::new(CHEAP, 1).await.unwrap();
        let stored = old.hash("pw-123456".into()).await.unwrap();
        let new = PasswordHashing::new(
            HashParams {
                memory_kib: 512,
                ..CHEAP
            },
            1,
        )
        .await
        .unwrap();
        assert!(
            new.verify("pw-123456".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(new.needs_rehash(&stored));
    }

    #[test]
    fn owasp_defaults_are_valid_and_bad_ones_are_not() {
        assert!(HashParams::OWASP.validate().is_ok());
        assert_eq!(
            HashParams::OWASP.to_string(),
            "argon2id m=19456 KiB, t=2, p=1"
        );
        let bad = HashParams {
            memory_kib: 1,
            iterations: 0,
            parallelism: 1,
        };
        assert!(bad.validate().is_err());
    }
}
