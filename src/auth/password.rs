use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Verified instead of a real hash when the username is unknown, so that "no such user" costs the
/// same argon2 work as "wrong password" and timing does not reveal which usernames exist.
/// Its parameters must equal `Argon2::default()`'s (a unit test checks); its password is random.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$YPbG8l/iCo3kcVj/w+0aeg$2pIUOxBhNAMvf0es0NUvqvFAw3L3JZFA8tRyK0LSyrA";

/// Argon2id with OWASP's parameters (m=19 MiB, t=2, p=1), run on the blocking pool and never more
/// at once than one fewer than the cores (at least one), so a login flood queues here and leaves a
/// core to every other request.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Passwords {
    pub fn new(max_concurrent: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_concurrent.max(1))) }
    }

    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |cores| usize::from(cores) - 1))
    }

    /// A PHC string (`$argon2id$v=19$...`) with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| Error::Internal(format!("hashing a password failed: {e}")))
        })
        .await
    }

    /// Whether `password` matches `stored`; with no stored hash, does the same work and says no.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool> {
        let password = password.to_owned();
        let is_known = stored.is_some();
        self.run(move || {
            let phc = stored.as_deref().unwrap_or(DUMMY_HASH);
            let hash = PasswordHash::new(phc)
                .map_err(|e| Error::Internal(format!("stored password hash is malformed: {e}")))?;
            let matches = Argon2::default().verify_password(password.as_bytes(), &hash).is_ok();
            Ok(is_known && matches)
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("password hashing is shut down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_costs_the_same_as_a_real_one() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real_hash = Argon2::default().hash_password(b"whatever").unwrap().to_string();
        let real = PasswordHash::new(&real_hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
        assert_eq!(real.algorithm.as_str(), "argon2id");
    }

    #[tokio::test]
    async fn hashes_are_salted_argon2id_and_verify() {
        let passwords = Passwords::new(2);
        let first = passwords.hash("correct horse").await.unwrap();
        let second = passwords.hash("correct horse").await.unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(passwords.verify("correct horse", Some(first.clone())).await.unwrap());
        assert!(!passwords.verify("wrong horse", Some(first)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        assert!(!Passwords::new(1).verify("anything", None).await.unwrap());
    }
}
