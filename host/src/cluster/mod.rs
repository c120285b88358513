//! What makes several `serve` processes one cluster: the durable outbox's delivery
//! workers, which send the queued mail of their node's data center, and the probes that
//! run Test Mail from the account's data center.

pub mod outbox;
pub mod probes;

use std::time::Duration;

/// How long a worker that found nothing to do waits before it asks the store again: 250
/// ms after work, doubling while there is none, up to `max`. An idle node then asks a few
/// times a second at first and about once every `max` later, instead of four times a
/// second per worker for as long as it is idle.
pub struct IdleBackoff {
    next: Duration,
    max: Duration,
}

impl IdleBackoff {
    const FIRST: Duration = Duration::from_millis(250);

    pub fn new(max: Duration) -> Self {
        Self {
            next: Self::FIRST,
            max,
        }
    }

    /// The wait after a look that found nothing.
    pub fn idle(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// A look found work: the next idle wait is short again.
    pub fn worked(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_waits_double_up_to_the_most_and_work_makes_them_short_again() {
        let mut b = IdleBackoff::new(Duration::from_secs(2));
        let waits: Vec<u64> = (0..6).map(|_| b.idle().as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
        b.worked();
        assert_eq!(b.idle(), Duration::from_millis(250));
    }
}
