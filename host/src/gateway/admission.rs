//! A provider's concurrency limit (`max_concurrency`): beyond it a request waits for a slot
//! up to `queue_timeout_ms`, then is answered `503 provider_busy` (or, in a chain, goes to
//! the next candidate).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one provider; none to take when it has no limit.
#[derive(Debug, Clone)]
pub struct Admission {
    limit: Option<(u32, Arc<Semaphore>)>,
    queue_timeout: Duration,
}

/// A slot, held until the exchange ends (a stream's last chunk).
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// No slot freed up within the queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub limit: u32,
    pub waited: Duration,
}

impl Admission {
    /// `max` slots shared through `semaphore` (sized `max`), or no limit.
    pub fn new(limit: Option<(u32, Arc<Semaphore>)>, queue_timeout: Duration) -> Admission {
        Admission {
            limit,
            queue_timeout,
        }
    }

    /// No limit.
    pub fn unlimited() -> Admission {
        Admission::new(None, Duration::ZERO)
    }

    /// Takes a slot, waiting up to the queue timeout.
    pub async fn enter(&self) -> Result<Slot, Busy> {
        let Some((limit, semaphore)) = &self.limit else {
            return Ok(Slot(None));
        };
        // The semaphore is never closed, so acquiring fails only by timing out.
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Ok(Slot(Some(permit)));
        }
        match tokio::time::timeout(self.queue_timeout, semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(Some(permit))),
            _ => Err(Busy {
                limit: *limit,
                waited: self.queue_timeout,
            }),
        }
    }

    /// Slots in use and the limit, when there is one.
    pub fn usage(&self) -> Option<(u32, u32)> {
        self.limit.as_ref().map(|(limit, semaphore)| {
            let free = u32::try_from(semaphore.available_permits()).unwrap_or(*limit);
            (limit.saturating_sub(free), *limit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_limit_a_request_waits_then_is_busy() {
        let admission = Admission::new(
            Some((2, Arc::new(Semaphore::new(2)))),
            Duration::from_millis(20),
        );
        let a = admission.enter().await.unwrap();
        let _b = admission.enter().await.unwrap();
        assert_eq!(admission.usage(), Some((2, 2)));
        let busy = admission.enter().await.unwrap_err();
        assert_eq!(busy.limit, 2);
        // A slot freed while waiting is taken.
        let patient = Admission {
            queue_timeout: Duration::from_secs(60),
            ..admission.clone()
        };
        let waiting = tokio::spawn(async move { patient.enter().await.is_ok() });
        tokio::task::yield_now().await;
        drop(a);
        assert!(waiting.await.unwrap());
        assert!(Admission::unlimited().enter().await.is_ok());
        assert_eq!(Admission::unlimited().usage(), None);
    }
}
