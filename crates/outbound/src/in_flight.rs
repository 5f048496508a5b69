//! A bound on the calls in progress to one origin.
//!
//! An organization's REST authentication service is called once for every
//! sign-in of its users. Without a bound, a burst of sign-ins (or a service
//! that stops answering while sign-ins keep arriving) opens one connection
//! per sign-in in progress: a thousand sockets at the other end, which a
//! small service may not survive, and a thousand here, each holding a
//! connection's task and buffers (about 11 KB; docs/benchmarks.md, "The
//! peak on SQLite, looked at again") and a file descriptor that every other
//! organization's sign-ins need as well. Only `pool_max_idle_per_host` of
//! those connections would be kept afterwards; the rest were opened (with
//! their TLS handshakes) to be closed.
//!
//! So at most `per_origin` calls to one origin (scheme, host and port) are
//! in progress at once, as many as the pool keeps idle: every connection
//! opened is one the pool can keep. The calls beyond wait their turn, in
//! the order they came (tokio's semaphore is fair), inside the caller's own
//! timeout: a call that is still waiting when its time is up fails as
//! `UpstreamError::TooManyInFlight`, without having been sent.
//!
//! An origin is forgotten as soon as no call to it is in progress or
//! waiting, so the table holds only origins in use, however many an
//! organization's templates or a hostile configuration name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::UpstreamError;

/// The origins with calls in progress or waiting.
#[derive(Debug)]
pub(crate) struct InFlight {
    per_origin: usize,
    origins: Mutex<HashMap<String, Origin>>,
}

#[derive(Debug)]
struct Origin {
    turns: Arc<Semaphore>,
    /// Calls that hold or await one of `turns`: the origin is forgotten
    /// when the last of them ends.
    users: usize,
}

/// A call's turn: while it lives, the call counts against its origin.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    _permit: OwnedSemaphorePermit,
    _user: User<'a>,
}

/// A call registered with its origin, holding a turn or waiting for one.
#[derive(Debug)]
struct User<'a> {
    in_flight: &'a InFlight,
    origin: String,
}

impl InFlight {
    pub(crate) fn new(per_origin: usize) -> Self {
        assert!(per_origin > 0, "an origin must allow one call at least");
        Self { per_origin, origins: Mutex::new(HashMap::new()) }
    }

    /// Waits, for at most `wait`, for a turn to call `url`'s origin.
    pub(crate) async fn turn(&self, url: &Url, wait: Duration) -> Result<Turn<'_>, UpstreamError> {
        let origin = origin(url);
        let turns = {
            let mut origins = self.origins();
            let entry = origins
                .entry(origin.clone())
                .or_insert_with(|| Origin { turns: Arc::new(Semaphore::new(self.per_origin)), users: 0 });
            entry.users += 1;
            entry.turns.clone()
        };
        // Registered first, so that a caller that stops waiting (its
        // timeout, or its future dropped) is counted out all the same.
        let user = User { in_flight: self, origin };
        match tokio::time::timeout(wait, turns.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn { _permit: permit, _user: user }),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => Err(UpstreamError::TooManyInFlight),
        }
    }

    fn origins(&self) -> std::sync::MutexGuard<'_, HashMap<String, Origin>> {
        // Nothing panics while holding the lock; and if something did, the
        // counts it guards would still be whole.
        self.origins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Origins with a call in progress or waiting.
    #[cfg(test)]
    pub(crate) fn origins_in_use(&self) -> usize {
        self.origins().len()
    }
}

/// `url`'s scheme, host and port, as `scheme://host[:port]`: the URL's
/// own text, which leaves out a default port, so each origin has one
/// form. (Cheaper than `Url::origin`'s serialization, which formats it.)
fn origin(url: &Url) -> String {
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let mut origin = String::with_capacity(url.scheme().len() + 3 + authority.len());
    origin.push_str(url.scheme());
    origin.push_str("://");
    origin.push_str(authority);
    origin
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        let mut origins = self.in_flight.origins();
        if let Some(entry) = origins.get_mut(&self.origin) {
            entry.users -= 1;
            if entry.users == 0 {
                origins.remove(&self.origin);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn an_origin_is_its_scheme_host_and_port_and_nothing_else() {
        for (a, b) in [
            ("https://a.example/auth", "https://u:p@a.example:443/other?x=1#f"),
            ("http://A.Example:80/", "http://a.example"),
            ("https://[::1]:8443/x", "https://[0:0::1]:8443/y"),
        ] {
            assert_eq!(origin(&url(a)), origin(&url(b)), "{a} and {b}");
        }
        assert_eq!(origin(&url("https://u:p@a.example:8443/p")), "https://a.example:8443", "no credentials");
        for (a, b) in [
            ("https://a.example/", "http://a.example/"),
            ("https://a.example/", "https://a.example:8443/"),
            ("https://a.example/", "https://b.example/"),
        ] {
            assert_ne!(origin(&url(a)), origin(&url(b)), "{a} and {b}");
        }
    }

    #[tokio::test]
    async fn an_origin_has_at_most_its_turns_and_the_next_caller_waits_for_one() {
        let in_flight = InFlight::new(2);
        let a = in_flight.turn(&url("https://a.example/auth"), Duration::ZERO).await.unwrap();
        // Another path, query or user on the same origin is the same origin.
        let b = in_flight.turn(&url("https://u:p@a.example:443/other?x=1"), Duration::ZERO).await.unwrap();
        assert_eq!(
            in_flight.turn(&url("https://a.example/"), Duration::from_millis(20)).await.unwrap_err(),
            UpstreamError::TooManyInFlight
        );
        // Other origins (scheme, host, port) have turns of their own.
        for other in ["http://a.example/", "https://a.example:8443/", "https://b.example/"] {
            drop(in_flight.turn(&url(other), Duration::ZERO).await.unwrap());
        }
        // The waiter gets the turn a finished call gives back.
        let a_url = url("https://a.example/");
        let waiting = in_flight.turn(&a_url, Duration::from_secs(30));
        tokio::pin!(waiting);
        assert!(waiting.as_mut().now_or_never().is_none(), "no turn is free yet");
        drop(a);
        waiting.await.unwrap();
        drop(b);
    }

    #[tokio::test]
    async fn origins_are_forgotten_when_their_last_call_ends_however_it_ends() {
        let in_flight = InFlight::new(1);
        for port in 1..=500 {
            drop(in_flight.turn(&url(&format!("https://a.example:{port}/")), Duration::ZERO).await.unwrap());
        }
        assert_eq!(in_flight.origins_in_use(), 0, "finished calls");

        let a_url = url("https://a.example/");
        let held = in_flight.turn(&a_url, Duration::ZERO).await.unwrap();
        // A caller whose wait timed out, and one whose future was dropped
        // while it waited.
        assert!(in_flight.turn(&url("https://a.example/"), Duration::from_millis(10)).await.is_err());
        {
            let waiting = in_flight.turn(&a_url, Duration::from_secs(30));
            tokio::pin!(waiting);
            assert!(waiting.as_mut().now_or_never().is_none());
        }
        assert_eq!(in_flight.origins_in_use(), 1);
        drop(held);
        assert_eq!(in_flight.origins_in_use(), 0, "timed-out and abandoned waiters");
    }
}
