//! Argon2id hashing on a few dedicated threads, off the async runtime, each reusing one working
//! buffer. Argon2 needs ~19 MiB per hash; allocated per call on whichever of tokio's blocking
//! threads was free, glibc kept those buffers in per-thread arenas and an instance grew to ~500 MB
//! under a login burst (measured). Fixed threads with a buffer each hold memory to threads x 19 MiB.
use std::{
    cell::RefCell,
    sync::{Arc, Mutex},
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot};

use crate::error::AppError;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct PasswordHasher {
    jobs: mpsc::Sender<Job>,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    /// Starts `threads` hashing threads; they end when the last clone of the hasher is dropped.
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        // Computed once, on the caller's thread: not worth a reusable buffer there.
        let dummy_hash = {
            use argon2::password_hash::PasswordHasher as _;
            Argon2::default()
                .hash_password(b"not a real password, only a timing decoy")
                .map_err(|error| anyhow::anyhow!("argon2 hashing failed: {error}"))?
                .to_string()
        };
        // Bounded: when hashing falls behind, callers wait here instead of queueing without limit.
        let (jobs, queue) = mpsc::channel::<Job>(threads * 64);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(mut queue) => queue.blocking_recv(),
                            Err(_) => None,
                        };
                        match job {
                            Some(job) => job(),
                            None => break,
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs,
            dummy_hash: dummy_hash.into(),
        })
    }

    pub async fn hash(&self, password: SecretString) -> Result<String, AppError> {
        self.run(move || hash_blocking(password.expose_secret().as_bytes()))
            .await?
            .map_err(AppError::internal)
    }

    /// Checks `password` against `stored_hash`, or against the decoy when there is no such user.
    pub async fn verify(
        &self,
        password: SecretString,
        stored_hash: Option<String>,
    ) -> Result<bool, AppError> {
        let user_exists = stored_hash.is_some();
        let hash = stored_hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(move || verify_blocking(password.expose_secret().as_bytes(), &hash))
            .await?;
        Ok(user_exists && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The requester may have gone away (client disconnected); nothing to do then.
            let _ = reply.send(work());
        });
        self.jobs.send(job).await.map_err(|_| {
            AppError::internal(anyhow::anyhow!("password hashing threads are gone"))
        })?;
        answer
            .await
            .map_err(|_| AppError::internal(anyhow::anyhow!("password hashing thread panicked")))
    }
}

thread_local! {
    /// Argon2's working memory, allocated once per hashing thread and reused by every hash.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

fn with_memory<T>(block_count: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() != block_count {
            *memory = vec![Block::default(); block_count];
        }
        work(memory)
    })
}

/// Argon2id with OWASP's parameters (19 MiB, t=2, p=1), as a PHC string.
fn hash_blocking(password: &[u8]) -> anyhow::Result<String> {
    let fail = |error: &dyn std::fmt::Display| anyhow::anyhow!("argon2 hashing failed: {error}");
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = Salt::generate();
    let mut output = [0_u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, &salt, &mut output, memory)
    })
    .map_err(|error| fail(&error))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|error| fail(&error))?,
        salt: Some(salt),
        hash: Some(Output::new(&output).map_err(|error| fail(&error))?),
    };
    Ok(hash.to_string())
}

/// Recomputes the hash with the stored parameters and salt; `Output` compares in constant time.
fn verify_blocking(password: &[u8], stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut output = vec![0_u8; expected.len()];
    let computed = with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, salt, &mut output, memory)
    });
    computed.is_ok() && Output::new(&output).is_ok_and(|output| output == *expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let hash = hash_blocking(b"correct horse").expect("hashed");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_blocking(b"correct horse", &hash));
        assert!(!verify_blocking(b"wrong horse", &hash));
        assert!(!verify_blocking(b"correct horse", "not a phc string"));
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_itself_still_verify() {
        use argon2::password_hash::PasswordHasher as _;
        let hash = Argon2::default()
            .hash_password(b"legacy")
            .expect("hashed")
            .to_string();
        assert!(verify_blocking(b"legacy", &hash));
    }
}
