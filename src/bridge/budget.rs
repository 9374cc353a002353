//! [`RequestBudget`]: the bridge-wide bound on request body bytes buffered at once.
//!
//! Every bridged request buffers its whole body (it is parsed, edited and re-sent on
//! retries and tool-loop turns). Without a bound, many concurrent bodies just under
//! `max_request_body` exhaust memory. The budget is a semaphore counted in KiB: a request
//! takes its declared `Content-Length` before reading anything, or grows chunk by chunk when
//! no length is declared, and waits at most [`RequestBudget::wait`] in all for what is
//! missing; a request that cannot get it is refused with a provider-shaped 503 (see
//! [`BridgeError::request_buffer_full`](crate::error::BridgeError::request_buffer_full)).
//!
//! The budget is released when the buffered bytes are freed: [`RequestBudget::attach`]
//! makes the permit the owner of the body's [`Bytes`], so it is held for exactly as long as
//! any part of the body is referenced (by the interception: until its last upstream call
//! can no longer be retried and its tool loop, if any, is done) and no longer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Default wait for buffer budget before a request is refused: 1 s.
pub(crate) const DEFAULT_BUDGET_WAIT: Duration = Duration::from_secs(1);

/// Default budget as a multiple of `max_request_body`: 8 (256 MiB with the default 32 MiB).
pub(crate) const DEFAULT_BUDGET_FACTOR: usize = 8;

/// Bytes per permit.
const UNIT: usize = 1024;

/// The bridge-wide budget of buffered request bytes.
#[derive(Debug)]
pub(crate) struct RequestBudget {
    permits: Arc<Semaphore>,
    /// Notified whenever budget is given back.
    released: Arc<Notify>,
    wait: Duration,
}

/// The budget one request holds so far.
#[derive(Debug)]
pub(crate) struct Held {
    permit: Option<Permit>,
    units: usize,
    /// What is left of the request's wait.
    wait_left: Duration,
}

/// Held budget that wakes the waiting requests when it is given back.
#[derive(Debug)]
struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    released: Arc<Notify>,
}

/// Not enough budget came free within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request buffer budget exhausted")]
pub(crate) struct Exhausted;

/// The body bytes together with the budget they hold.
struct Budgeted {
    bytes: Bytes,
    _permit: Permit,
}

// === impl RequestBudget ===

impl RequestBudget {
    /// A budget of `bytes` (rounded up to whole KiB); a request waits at most `wait` in all.
    pub(crate) fn new(bytes: usize, wait: Duration) -> Self {
        let units = bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(units)),
            released: Arc::new(Notify::new()),
            wait,
        }
    }

    /// Budget not held by any request, in bytes (a multiple of 1 KiB).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }

    /// An empty hold for one request.
    pub(crate) fn hold(&self) -> Held {
        Held {
            permit: None,
            units: 0,
            wait_left: self.wait,
        }
    }

    /// Grows `held` to cover `total` bytes. Takes free budget at once when there is enough,
    /// otherwise waits for budget to be given back, at most what is left of the request's
    /// wait. A request that waits holds nothing back from others (a semaphore's fair queue
    /// would let one large waiter take every free permit and hold up all the small
    /// requests behind it); a large request can therefore lose to a stream of small ones,
    /// and is then refused when its wait is spent.
    pub(crate) async fn grow(&self, held: &mut Held, total: usize) -> Result<(), Exhausted> {
        let needed = total.div_ceil(UNIT);
        if needed <= held.units {
            return Ok(());
        }
        let extra = u32::try_from(needed - held.units).map_err(|_| Exhausted)?;
        let permit = loop {
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            // Registered before the attempt, so a release right after it is not missed.
            released.as_mut().enable();
            match self.permits.clone().try_acquire_many_owned(extra) {
                Ok(p) => break p,
                Err(TryAcquireError::Closed) => return Err(Exhausted),
                Err(TryAcquireError::NoPermits) => {}
            }
            if held.wait_left.is_zero() {
                return Err(Exhausted);
            }
            let start = tokio::time::Instant::now();
            let woken = tokio::time::timeout(held.wait_left, released).await;
            held.wait_left = held.wait_left.saturating_sub(start.elapsed());
            if woken.is_err() {
                return Err(Exhausted);
            }
        };
        match held.permit.as_mut().and_then(|p| p.permit.as_mut()) {
            Some(p) => p.merge(permit),
            None => {
                held.permit = Some(Permit {
                    permit: Some(permit),
                    released: self.released.clone(),
                });
            }
        }
        held.units = needed;
        Ok(())
    }

    /// The body, owning the budget it holds: the budget is released when the last
    /// reference to these bytes (clones and slices included) is dropped.
    pub(crate) fn attach(held: Held, bytes: Bytes) -> Bytes {
        match held.permit {
            Some(permit) => Bytes::from_owner(Budgeted {
                bytes,
                _permit: permit,
            }),
            None => bytes,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            drop(permit);
            self.released.notify_waiters();
        }
    }
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_lives_as_long_as_the_bytes() {
        let budget = RequestBudget::new(10 * 1024, Duration::from_secs(1));
        let mut held = budget.hold();
        budget.grow(&mut held, 3000).await.unwrap();
        budget.grow(&mut held, 3072).await.unwrap(); // still 3 KiB
        assert_eq!(budget.available(), 7 * 1024);
        budget.grow(&mut held, 3073).await.unwrap();
        assert_eq!(budget.available(), 6 * 1024);
        let body = RequestBudget::attach(held, Bytes::from(vec![b'x'; 3073]));
        let part = body.slice(10..20);
        drop(body);
        assert_eq!(budget.available(), 6 * 1024, "a slice still holds the body");
        assert_eq!(&part[..], b"xxxxxxxxxx");
        drop(part);
        assert_eq!(budget.available(), 10 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_at_most_its_wait_in_all() {
        let budget = RequestBudget::new(4 * 1024, Duration::from_secs(1));
        let mut big = budget.hold();
        budget.grow(&mut big, 4 * 1024).await.unwrap();
        let mut other = budget.hold();
        let start = tokio::time::Instant::now();
        assert_eq!(budget.grow(&mut other, 1).await, Err(Exhausted));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // The wait is spent: a later growth of the same request fails at once.
        assert_eq!(budget.grow(&mut other, 1).await, Err(Exhausted));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        drop(big);
        budget.grow(&mut other, 4096).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_the_budget_when_it_comes_free() {
        let budget = Arc::new(RequestBudget::new(4 * 1024, Duration::from_secs(5)));
        let mut first = budget.hold();
        budget.grow(&mut first, 4 * 1024).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut held = budget.hold();
                budget.grow(&mut held, 2048).await.map(|()| held)
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(first);
        let held = waiter.await.unwrap().unwrap();
        assert_eq!(held.wait_left, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn small_requests_pass_a_large_one_that_waits() {
        let budget = Arc::new(RequestBudget::new(8 * 1024, Duration::from_secs(5)));
        let mut first = budget.hold();
        budget.grow(&mut first, 6 * 1024).await.unwrap();
        let large = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut held = budget.hold();
                budget.grow(&mut held, 4 * 1024).await
            })
        };
        tokio::task::yield_now().await;
        let mut small = budget.hold();
        let start = tokio::time::Instant::now();
        budget.grow(&mut small, 1024).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(!large.is_finished());
        drop((first, small));
        large.await.unwrap().unwrap();
    }
}
