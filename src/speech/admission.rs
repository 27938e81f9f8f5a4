//! Admission control: a bound on the requests waiting for their first audio.
//!
//! Every request admitted but not yet given its first audio holds a
//! [`Ticket`]. Beyond `PIPER_MAX_QUEUE` of them a new request is refused at
//! once (`overloaded`, with `Retry-After`) instead of waiting behind all the
//! others, so that a load balancer can send it to another replica. Requests
//! already speaking are not counted: the scheduler shares the engine between
//! them, and what a newcomer waits for is the first sentences of those
//! ahead of it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use metrics::{counter, gauge};

use super::error::SpeechError;
use crate::metrics as m;

#[derive(Debug)]
pub struct Admission {
    waiting: Arc<AtomicUsize>,
    max: usize,
}

/// A place in the queue, given back when dropped (or at the first audio).
#[derive(Debug)]
pub struct Ticket {
    waiting: Arc<AtomicUsize>,
}

impl Admission {
    /// At most `max` requests waiting for their first audio (0: no bound).
    pub fn new(max: usize) -> Admission {
        gauge!(m::QUEUE_WAITING).set(0.0);
        counter!(m::ADMISSION_REFUSED).absolute(0);
        Admission {
            waiting: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A ticket, or `Overloaded` when the queue is full.
    pub fn admit(&self) -> Result<Ticket, SpeechError> {
        let taken = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (self.max == 0 || n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(n) => {
                gauge!(m::QUEUE_WAITING).set((n + 1) as f64);
                Ok(Ticket {
                    waiting: self.waiting.clone(),
                })
            }
            Err(n) => {
                counter!(m::ADMISSION_REFUSED).increment(1);
                Err(SpeechError::Overloaded { waiting: n })
            }
        }
    }

    /// Requests waiting for their first audio now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let before = self.waiting.fetch_sub(1, Ordering::AcqRel);
        gauge!(m::QUEUE_WAITING).set(before.saturating_sub(1) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_bound_and_frees_on_drop() {
        let admission = Admission::new(2);
        let a = admission.admit().unwrap();
        let _b = admission.admit().unwrap();
        assert_eq!(
            admission.admit().unwrap_err(),
            SpeechError::Overloaded { waiting: 2 }
        );
        drop(a);
        assert_eq!(admission.waiting(), 1);
        assert!(admission.admit().is_ok());
    }

    #[test]
    fn zero_means_no_bound() {
        let admission = Admission::new(0);
        let tickets: Vec<_> = (0..1000).map(|_| admission.admit().unwrap()).collect();
        assert_eq!(admission.waiting(), 1000);
        drop(tickets);
        assert_eq!(admission.waiting(), 0);
    }
}
