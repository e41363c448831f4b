//! `npm login`: the web flow (`POST /-/v1/login` → a login URL to approve and a done URL npm
//! polls, which works without a terminal) and the legacy CouchDB user PUT. Both end with an
//! Arca access token scoped to the repository, issued through Raft like any other.
//!
//! Web login sessions live in the memory of the node that started them (bounded, ten
//! minutes): behind a load balancer, npm's poll must reach the same node (session affinity),
//! or use the legacy flow.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};

use crate::names::RepoName;

/// Most web login sessions pending at once on a node.
pub const MAX_SESSIONS: usize = 1_000;
/// How long a session may wait for its approval.
pub const SESSION_TTL: Duration = Duration::from_secs(600);

struct Session {
    repo: RepoName,
    started: Instant,
    token: Option<String>,
}

/// Where a polled session stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    Pending,
    Done(String),
    Unknown,
}

/// The pending web logins of this node.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `repo`; `None` when [`MAX_SESSIONS`] are pending.
    pub fn start(&self, repo: &RepoName) -> Option<String> {
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.started.elapsed() < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            return None;
        }
        let id = Alphanumeric.sample_string(&mut rand::rng(), 40);
        sessions.insert(
            id.clone(),
            Session {
                repo: repo.clone(),
                started: Instant::now(),
                token: None,
            },
        );
        Some(id)
    }

    /// Whether `id` is a pending session of `repo`.
    pub fn pending(&self, repo: &RepoName, id: &str) -> bool {
        self.sessions.lock().get(id).is_some_and(|s| {
            s.repo == *repo && s.token.is_none() && s.started.elapsed() < SESSION_TTL
        })
    }

    /// Completes a pending session with `token`; false when it is unknown or expired.
    pub fn approve(&self, repo: &RepoName, id: &str, token: String) -> bool {
        let mut sessions = self.sessions.lock();
        match sessions.get_mut(id) {
            Some(s)
                if s.repo == *repo && s.token.is_none() && s.started.elapsed() < SESSION_TTL =>
            {
                s.token = Some(token);
                true
            }
            _ => false,
        }
    }

    /// What npm's poll of the done URL gets; a completed session answers once.
    pub fn poll(&self, repo: &RepoName, id: &str) -> Poll {
        let mut sessions = self.sessions.lock();
        let Some(session) = sessions.get(id) else {
            return Poll::Unknown;
        };
        if session.repo != *repo || session.started.elapsed() >= SESSION_TTL {
            return Poll::Unknown;
        }
        if session.token.is_none() {
            return Poll::Pending;
        }
        match sessions.remove(id).and_then(|s| s.token) {
            Some(token) => Poll::Done(token),
            None => Poll::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_approved_once_and_answers_once() {
        let sessions = Sessions::default();
        let repo = RepoName::parse("npm").expect("test value");
        let other = RepoName::parse("other").expect("test value");
        let id = sessions.start(&repo).expect("test value");
        assert_eq!(sessions.poll(&repo, &id), Poll::Pending);
        assert!(sessions.pending(&repo, &id));
        assert!(!sessions.approve(&other, &id, "t".into()));
        assert!(sessions.approve(&repo, &id, "t".into()));
        assert!(!sessions.approve(&repo, &id, "u".into()));
        assert_eq!(sessions.poll(&other, &id), Poll::Unknown);
        assert_eq!(sessions.poll(&repo, &id), Poll::Done("t".into()));
        assert_eq!(sessions.poll(&repo, &id), Poll::Unknown);
        assert_eq!(sessions.poll(&repo, "nope"), Poll::Unknown);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let repo = RepoName::parse("npm").expect("test value");
        for _ in 0..MAX_SESSIONS {
            assert!(sessions.start(&repo).is_some());
        }
        assert!(sessions.start(&repo).is_none());
    }
}
