//! The one MongoDB transaction helper of the MongoDB services, with the driver's retry rules
//! (the "convenient transaction API" of the MongoDB driver specifications):
//!
//! - an error labelled `TransientTransactionError` (a write conflict, a lost primary, a network
//!   error before the commit) aborted the whole transaction: run the body again;
//! - a commit that fails with `UnknownTransactionCommitResult` may have committed: retry the
//!   **commit alone** (the server answers a repeated commit of a committed transaction with
//!   success). Running the body again instead could apply a change twice or, worse, make the
//!   caller compensate a change that happened (createBooking releasing the hold of a booking
//!   that exists);
//! - anything else fails the transaction as it is.
//!
//! When the commit's outcome is still unknown after the retries, the caller gets
//! [`TxnFailure::CommitUnknown`] and must find out by reading (never assume it failed).

use std::time::Duration;

use futures::future::BoxFuture;
use mongodb::{
    Client, ClientSession,
    error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT},
};

/// The retry labels of an error, as the driver attaches them.
pub trait Labelled {
    /// `TransientTransactionError`: the transaction was aborted; the whole of it may run again.
    fn transient(&self) -> bool;
    /// `UnknownTransactionCommitResult`: the commit may or may not have happened.
    fn unknown_commit(&self) -> bool;
}

impl Labelled for mongodb::error::Error {
    fn transient(&self) -> bool {
        self.contains_label(TRANSIENT_TRANSACTION_ERROR)
    }

    fn unknown_commit(&self) -> bool {
        self.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
    }
}

/// Where a transaction attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Starting it or running the body (nothing is durable yet).
    Body,
    /// The commit.
    Commit,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Abort and run the whole transaction again.
    RetryBody,
    /// Send the commit again (the body is NOT run again).
    RetryCommit,
    /// Stop: the error is final.
    Fail,
}

/// The driver's rules as a pure decision: `body_attempts` / `commit_attempts` are how many
/// attempts of each were made so far, bounded by `policy`.
pub fn next(
    step: Step,
    err: &impl Labelled,
    body_attempts: u32,
    commit_attempts: u32,
    policy: &Policy,
) -> Next {
    match step {
        Step::Commit if err.unknown_commit() => {
            if commit_attempts < policy.commit_attempts {
                Next::RetryCommit
            } else {
                Next::Fail
            }
        }
        _ if err.transient() && body_attempts < policy.body_attempts => Next::RetryBody,
        _ => Next::Fail,
    }
}

/// How often to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Runs of the body at most (write conflicts under contention need a few).
    pub body_attempts: u32,
    /// Commits per run of the body at most.
    pub commit_attempts: u32,
    /// Base of the jittered exponential pause between attempts.
    pub backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            body_attempts: 8,
            commit_attempts: 5,
            backoff: Duration::from_millis(5),
        }
    }
}

impl Policy {
    fn pause(&self, attempt: u32) -> Duration {
        let base = self.backoff.saturating_mul(1 << attempt.min(6));
        let jitter_ms = u64::try_from(base.as_millis())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        base + Duration::from_millis(rand::random::<u64>() % jitter_ms)
    }
}

/// How a transaction failed.
#[derive(Debug)]
pub enum TxnFailure<E> {
    /// It did not commit (the body failed, or the commit was refused).
    Failed(E),
    /// The commit was sent but its outcome is still unknown after the retries: it may have
    /// committed. Read to find out; do not compensate blindly.
    CommitUnknown(E),
}

impl<E> TxnFailure<E> {
    pub fn into_inner(self) -> E {
        match self {
            Self::Failed(e) | Self::CommitUnknown(e) => e,
        }
    }
}

/// The session operations the helper needs: a seam so that the retry loop itself is tested
/// with a scripted session (real servers cannot be made to lose a commit answer on demand).
pub trait TxnSession: Send {
    type Error: Labelled + Send;
    fn start(&mut self) -> BoxFuture<'_, Result<(), Self::Error>>;
    fn commit(&mut self) -> BoxFuture<'_, Result<(), Self::Error>>;
    fn abort(&mut self) -> BoxFuture<'_, ()>;
}

impl TxnSession for ClientSession {
    type Error = mongodb::error::Error;

    fn start(&mut self) -> BoxFuture<'_, Result<(), Self::Error>> {
        Box::pin(async move { self.start_transaction().await })
    }

    fn commit(&mut self) -> BoxFuture<'_, Result<(), Self::Error>> {
        Box::pin(async move { self.commit_transaction().await })
    }

    fn abort(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.abort_transaction().await {
                tracing::debug!(error = %e, "abort of a failed transaction");
            }
        })
    }
}

/// Runs `body` in a transaction on `session` with the rules above. `ctx` is handed to every run
/// of the body (so the body's future may borrow it); the body must be safe to run again after
/// a transient error (it runs inside a transaction that was aborted, so nothing of the earlier
/// run is left).
pub async fn run_on<S, C, T, E, F>(
    session: &mut S,
    ctx: &C,
    policy: Policy,
    mut body: F,
) -> Result<T, TxnFailure<E>>
where
    S: TxnSession,
    C: Sync + ?Sized,
    E: Labelled + From<S::Error>,
    F: for<'a> FnMut(&'a mut S, &'a C) -> BoxFuture<'a, Result<T, E>>,
{
    let mut body_attempts = 0;
    'body: loop {
        body_attempts += 1;
        let ran = match session.start().await {
            Ok(()) => body(session, ctx).await,
            Err(e) => Err(E::from(e)),
        };
        let value = match ran {
            Ok(v) => v,
            Err(e) => {
                session.abort().await;
                match next(Step::Body, &e, body_attempts, 0, &policy) {
                    Next::RetryBody => {
                        tokio::time::sleep(policy.pause(body_attempts)).await;
                        continue 'body;
                    }
                    _ => return Err(TxnFailure::Failed(e)),
                }
            }
        };
        let mut commit_attempts = 0;
        loop {
            commit_attempts += 1;
            let e = match session.commit().await {
                Ok(()) => return Ok(value),
                Err(e) => E::from(e),
            };
            match next(Step::Commit, &e, body_attempts, commit_attempts, &policy) {
                Next::RetryCommit => tokio::time::sleep(policy.pause(commit_attempts)).await,
                Next::RetryBody => {
                    tokio::time::sleep(policy.pause(body_attempts)).await;
                    continue 'body;
                }
                Next::Fail if e.unknown_commit() => return Err(TxnFailure::CommitUnknown(e)),
                Next::Fail => return Err(TxnFailure::Failed(e)),
            }
        }
    }
}

/// [`run_on`] on a new session of `client` with the default [`Policy`].
pub async fn transaction<C, T, E, F>(client: &Client, ctx: &C, body: F) -> Result<T, TxnFailure<E>>
where
    C: Sync + ?Sized,
    E: Labelled + From<mongodb::error::Error>,
    F: for<'a> FnMut(&'a mut ClientSession, &'a C) -> BoxFuture<'a, Result<T, E>>,
{
    let mut session = client
        .start_session()
        .await
        .map_err(|e| TxnFailure::Failed(E::from(e)))?;
    run_on(&mut session, ctx, Policy::default(), body).await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fake {
        Transient,
        UnknownCommit,
        Other,
    }

    impl Labelled for Fake {
        fn transient(&self) -> bool {
            *self == Fake::Transient
        }
        fn unknown_commit(&self) -> bool {
            *self == Fake::UnknownCommit
        }
    }

    /// A session whose commits answer a script; it counts what it was asked to do.
    #[derive(Default)]
    struct Scripted {
        commits: VecDeque<Result<(), Fake>>,
        starts: u32,
        commit_calls: u32,
        aborts: u32,
    }

    impl TxnSession for Scripted {
        type Error = Fake;
        fn start(&mut self) -> BoxFuture<'_, Result<(), Fake>> {
            self.starts += 1;
            Box::pin(async { Ok(()) })
        }
        fn commit(&mut self) -> BoxFuture<'_, Result<(), Fake>> {
            self.commit_calls += 1;
            let r = self.commits.pop_front().unwrap_or(Ok(()));
            Box::pin(async move { r })
        }
        fn abort(&mut self) -> BoxFuture<'_, ()> {
            self.aborts += 1;
            Box::pin(async {})
        }
    }

    fn fast() -> Policy {
        Policy {
            body_attempts: 3,
            commit_attempts: 3,
            backoff: Duration::from_millis(1),
        }
    }

    /// Runs a transaction whose body fails with `body_errors` in turn, then succeeds; returns
    /// the outcome, the session and how often the body ran.
    async fn scenario(
        commits: Vec<Result<(), Fake>>,
        body_errors: Vec<Fake>,
    ) -> (Result<u32, TxnFailure<Fake>>, Scripted, u32) {
        let mut s = Scripted {
            commits: commits.into(),
            ..Scripted::default()
        };
        let runs = std::sync::atomic::AtomicU32::new(0);
        let errors = std::sync::Mutex::new(VecDeque::from(body_errors));
        let r = run_on(&mut s, &(), fast(), |_, _| {
            let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let e = errors.lock().ok().and_then(|mut q| q.pop_front());
            Box::pin(async move { e.map_or(Ok(n), Err) })
        })
        .await;
        (r, s, runs.into_inner())
    }

    #[tokio::test]
    async fn unknown_commit_result_retries_the_commit_alone() {
        let (r, s, runs) = scenario(
            vec![Err(Fake::UnknownCommit), Err(Fake::UnknownCommit), Ok(())],
            vec![],
        )
        .await;
        assert_eq!(r.ok(), Some(1));
        assert_eq!(runs, 1, "the body ran once");
        assert_eq!(s.commit_calls, 3);
        assert_eq!(s.aborts, 0);
    }

    #[tokio::test]
    async fn a_commit_still_unknown_says_so() {
        let (r, _, runs) = scenario(vec![Err(Fake::UnknownCommit); 5], vec![]).await;
        assert!(
            matches!(r, Err(TxnFailure::CommitUnknown(Fake::UnknownCommit))),
            "{r:?}"
        );
        assert_eq!(runs, 1);
    }

    #[tokio::test]
    async fn transient_errors_rerun_the_body() {
        let (r, s, runs) =
            scenario(vec![Err(Fake::Transient), Ok(())], vec![Fake::Transient]).await;
        // Run 1 fails in the body, run 2 fails at commit (transient), run 3 commits.
        assert_eq!(r.ok(), Some(3));
        assert_eq!(runs, 3);
        assert_eq!(s.starts, 3);
        assert_eq!(s.aborts, 1, "a failed body is aborted");
    }

    #[tokio::test]
    async fn other_errors_fail_at_once_and_transient_ones_run_out() {
        let (r, _, runs) = scenario(vec![], vec![Fake::Other]).await;
        assert!(matches!(r, Err(TxnFailure::Failed(Fake::Other))));
        assert_eq!(runs, 1);
        let (r, _, runs) = scenario(vec![Err(Fake::Other)], vec![]).await;
        assert!(matches!(r, Err(TxnFailure::Failed(Fake::Other))));
        assert_eq!(runs, 1);
        let (r, _, runs) = scenario(vec![], vec![Fake::Transient; 10]).await;
        assert!(matches!(r, Err(TxnFailure::Failed(Fake::Transient))));
        assert_eq!(runs, 3, "bounded by the policy");
    }

    #[test]
    fn the_rules() {
        let p = fast();
        assert_eq!(
            next(Step::Commit, &Fake::UnknownCommit, 1, 1, &p),
            Next::RetryCommit
        );
        assert_eq!(
            next(Step::Commit, &Fake::UnknownCommit, 1, 3, &p),
            Next::Fail
        );
        assert_eq!(
            next(Step::Commit, &Fake::Transient, 1, 1, &p),
            Next::RetryBody
        );
        assert_eq!(
            next(Step::Body, &Fake::Transient, 1, 0, &p),
            Next::RetryBody
        );
        assert_eq!(next(Step::Body, &Fake::Transient, 3, 0, &p), Next::Fail);
        assert_eq!(next(Step::Body, &Fake::UnknownCommit, 1, 0, &p), Next::Fail);
        assert_eq!(next(Step::Body, &Fake::Other, 1, 0, &p), Next::Fail);
    }
}
