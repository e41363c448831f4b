//! Coalesced read barriers: one leadership confirmation serves every read that arrived before
//! it began.
//!
//! A read on any node must see every write acknowledged before the read started, so it needs a
//! read index from a leadership confirmation that *began after it arrived*. Reads arriving
//! while a confirmation is in flight therefore wait for the next one, which starts as soon as
//! the current one ends; any number of reads share it. However many reads a region serves,
//! the leader confirms its leadership one round at a time.

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

/// The outcome of one confirmation: the read index, or why there is none.
pub type Round = Shared<BoxFuture<'static, Result<u64, String>>>;

/// Runs read-index rounds, at most one at a time, each shared by every waiter it can serve.
#[derive(Default)]
pub struct Coalescer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The round in flight, or the last one.
    current: Option<Round>,
    /// The round that begins once `current` has finished, shared by the waiters that arrived
    /// while `current` was in flight.
    next: Option<Round>,
}

impl Coalescer {
    /// A round whose confirmation begins after this call; `start` begins one confirmation.
    pub fn round(
        &self,
        start: impl Fn() -> BoxFuture<'static, Result<u64, String>> + Send + 'static,
    ) -> Round {
        let mut state = self.state.lock();
        let finished = state
            .current
            .as_ref()
            .is_none_or(|round| round.peek().is_some());
        if finished {
            // The queued round may already have begun (when the current one finished): it is
            // the one in flight now, not one this waiter may join.
            state.current = state.next.take();
        }
        match state.current.clone() {
            Some(current) if current.peek().is_none() => {
                if let Some(next) = &state.next {
                    return next.clone();
                }
                let next = async move {
                    let _ = current.await;
                    start().await
                }
                .boxed()
                .shared();
                state.next = Some(next.clone());
                next
            }
            _ => {
                let round = start().shared();
                state.current = Some(round.clone());
                round
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn reads_share_rounds_and_none_uses_a_round_that_began_before_it() {
        let coalescer = Arc::new(Coalescer::default());
        let started = Arc::new(AtomicU64::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(0u64);
        let start = {
            let started = started.clone();
            move || {
                let started = started.clone();
                let mut release = release_rx.clone();
                async move {
                    let round = started.fetch_add(1, Ordering::SeqCst) + 1;
                    while *release.borrow_and_update() < round {
                        if release.changed().await.is_err() {
                            return Err("closed".to_string());
                        }
                    }
                    Ok(round)
                }
                .boxed()
            }
        };
        // The first read starts round 1.
        let first = coalescer.round(start.clone());
        let first_task = tokio::spawn(first);
        tokio::task::yield_now().await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Reads arriving during round 1 all share round 2, which has not begun.
        let during: Vec<_> = (0..50)
            .map(|_| tokio::spawn(coalescer.round(start.clone())))
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "round 2 waits for round 1"
        );
        release_tx.send_replace(1);
        assert_eq!(first_task.await.expect("join"), Ok(1));
        release_tx.send_replace(2);
        for task in during {
            assert_eq!(
                task.await.expect("join"),
                Ok(2),
                "served by a round that began after it"
            );
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "51 reads, 2 confirmations"
        );
    }
}
