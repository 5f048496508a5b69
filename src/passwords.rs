//! Local passwords: argon2id hashing off the async runtime, with bounded
//! concurrency and a bounded queue.
//!
//! Each hash takes about 19 MiB and tens of milliseconds of CPU, so a burst of
//! logins must queue rather than exhaust memory or starve the runtime; and
//! the queue is bounded too, so that a flood is told at once that the service
//! is busy (503) instead of piling up requests that would wait for seconds.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use async_trait::async_trait;
use gatehouse_core::{ConnectorError, LoginOutcome, PasswordAttempt, PasswordConnector, RejectReason};
use tokio::sync::Semaphore;

pub struct PasswordHasher {
    /// Jobs running or waiting to run; a job that finds none left is
    /// refused at once.
    admission: Arc<Semaphore>,
    /// Jobs running.
    permits: Arc<Semaphore>,
    /// Verified against when a user has no hash, so that "no such user"
    /// costs as much time as "wrong password" (`decoy`).
    decoy: String,
}

/// A hash to verify against when a user has none: the parameters every
/// real hash has (so that verifying against it costs what a real one
/// costs), a random salt and a random output, which no password hashes to.
/// It used to be the hash of a random password, computed as the service
/// started: tens of milliseconds of start-up and 19 MiB that bought
/// nothing a random output does not (docs/benchmarks.md, "Start-up").
fn decoy() -> String {
    use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
    let hasher = Argon2::default();
    let salt: [u8; 16] = rand::random();
    let output: [u8; 32] = rand::random();
    // None of these can fail: the parameters are the defaults, and the
    // salt's and output's lengths are within what PHC strings allow.
    fn fixed<T>(e: impl std::fmt::Display) -> T {
        unreachable!("a decoy hash with default parameters: {e}")
    }
    let decoy = PasswordHash {
        algorithm: argon2::Algorithm::default().ident(),
        version: Some(argon2::Version::default().into()),
        params: ParamsString::try_from(hasher.params()).unwrap_or_else(fixed),
        salt: Some(Salt::new(&salt).unwrap_or_else(fixed)),
        hash: Some(Output::new(&output).unwrap_or_else(fixed)),
    };
    decoy.to_string()
}

impl PasswordHasher {
    /// Runs `concurrency` hashes at once, with at most `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            admission: Arc::new(Semaphore::new(concurrency + queue)),
            permits: Arc::new(Semaphore::new(concurrency)),
            decoy: decoy(),
        }
    }

    /// Hashes a new password (argon2id, default parameters, random salt).
    pub async fn hash(&self, password: &str) -> Result<String, ConnectorError> {
        let password = password.to_owned();
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| ConnectorError::Internal(format!("argon2: {e}")))
        })
        .await?
    }

    /// Checks `password` against `hash`; with no hash, spends the same time
    /// and answers no.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, ConnectorError> {
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.decoy.clone(), false),
        };
        let password = password.to_owned();
        let matched = self
            .run(move || Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok())
            .await?;
        Ok(real && matched)
    }

    /// Spends a verification's worth of time for a user that does not exist.
    pub async fn burn(&self, password: &str) -> Result<(), ConnectorError> {
        self.verify(password, None).await.map(|_| ())
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ConnectorError> {
        let _admitted = self.admission.try_acquire().map_err(|_| ConnectorError::Busy)?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ConnectorError::Internal("password hasher closed".into()))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| ConnectorError::Internal(format!("hash task: {e}")))
    }
}

/// The platform's own password store as a [`PasswordConnector`].
pub(crate) struct LocalPasswords<'a>(pub &'a PasswordHasher);

#[async_trait]
impl PasswordConnector for LocalPasswords<'_> {
    async fn login(&self, attempt: PasswordAttempt<'_>) -> Result<LoginOutcome, ConnectorError> {
        let hash = attempt.user.password_hash.as_deref();
        let ok = self.0.verify(attempt.password.expose(), hash).await?;
        Ok(match (hash, ok) {
            (_, true) => LoginOutcome::Authenticated,
            (None, false) => LoginOutcome::Rejected(RejectReason::NoCredential),
            (Some(_), false) => LoginOutcome::Rejected(RejectReason::WrongPassword),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// The decoy has every parameter of a real hash, so that verifying
    /// against it is a full verification (a decoy the verifier could not
    /// read would be refused at once, and "no such user" would answer
    /// faster than "wrong password"); and each hasher has its own.
    #[test]
    fn the_decoy_costs_what_a_real_hash_costs() {
        use argon2::password_hash::phc::PasswordHash;
        let real = Argon2::default().hash_password(b"a real password").unwrap().to_string();
        let (real, decoy_text) = (PasswordHash::new(&real).unwrap(), decoy());
        let decoy = PasswordHash::new(&decoy_text).unwrap();
        assert_eq!(decoy.algorithm, real.algorithm);
        assert_eq!(decoy.version, real.version);
        assert_eq!(decoy.params, real.params);
        assert_eq!(decoy.salt.map(|s| s.len()), real.salt.map(|s| s.len()));
        assert_eq!(decoy.hash.map(|h| h.len()), real.hash.map(|h| h.len()));
        assert_eq!(
            Argon2::default().verify_password(b"a real password", &decoy),
            Err(argon2::password_hash::Error::PasswordInvalid),
            "verified in full, and refused"
        );
        assert_ne!(decoy_text, super::decoy());
    }

    /// A hash runs off the async runtime: on a single-threaded runtime, a job
    /// that waits for a message from an async task only gets it if the job is
    /// not occupying the runtime's one thread.
    #[test]
    fn hashing_runs_off_the_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let hasher = PasswordHasher::new(1, 8);
            let (signal, wait) = mpsc::channel::<()>();
            let job = hasher.run(move || wait.recv_timeout(Duration::from_secs(10)).is_ok());
            let nudge = async move {
                tokio::task::yield_now().await;
                signal.send(()).unwrap();
            };
            let (got_signal, ()) = tokio::join!(job, nudge);
            assert!(got_signal.unwrap(), "the hash job blocked the runtime thread");
        });
    }

    /// No more hashes run at once than the configured concurrency.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_concurrency_is_bounded() {
        let hasher = Arc::new(PasswordHasher::new(2, 16));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs = (0..12).map(|_| {
            let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Real work in between, so that jobs overlap if allowed to.
                        let _ = Argon2::default().hash_password(b"overlap");
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            })
        });
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "{} hashes ran at once", most.load(Ordering::SeqCst));
        assert!(most.load(Ordering::SeqCst) >= 1);
    }

    /// Past the running jobs and the queue, a job is refused at once rather
    /// than left to wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once() {
        let hasher = Arc::new(PasswordHasher::new(1, 2));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        // One runs (held until released) and two wait: the queue is full.
        let held: Vec<_> = (0..3)
            .map(|_| {
                let (hasher, wait) = (hasher.clone(), wait.clone());
                tokio::spawn(async move { hasher.run(move || wait.lock().unwrap().recv().is_ok()).await })
            })
            .collect();
        while hasher.admission.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(hasher.verify("x", None).await, Err(ConnectorError::Busy)));
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for job in held {
            assert!(job.await.unwrap().unwrap());
        }
        // And once they are done, there is room again.
        assert!(!hasher.verify("x", None).await.unwrap());
    }

    #[tokio::test]
    async fn verify_accepts_the_right_password_only() {
        let hasher = PasswordHasher::new(2, 8);
        let hash = hasher.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(
            !hasher.verify("anything", None).await.unwrap(),
            "no hash never matches, not even the decoy's"
        );
    }
}
