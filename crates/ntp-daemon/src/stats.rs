//! The server's counters: datagrams received, answered, and dropped by
//! reason. Atomics only (no locks); each serving thread adds its batch's
//! counts once per batch. `/metrics` and `/status` read them (see `metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use ntp_proto::responder::IgnoreReason;
use serde::{Deserialize, Serialize};

use crate::policy::Decision;

/// Totals since start-up, shared by every serving thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams read from the sockets.
    pub received: AtomicU64,
    /// Requests answered with time.
    pub answered: AtomicU64,
    /// Of those, answered in interleaved mode.
    pub answered_interleaved: AtomicU64,
    /// RATE kiss-o'-death replies sent.
    pub kissed_rate: AtomicU64,
    /// DENY kiss-o'-death replies sent.
    pub kissed_deny: AtomicU64,
    /// Dropped: not an NTP packet we read (short, bad version, bad extension, truncated).
    pub dropped_malformed: AtomicU64,
    /// Dropped: a mode other than client (control and private queries among them).
    pub dropped_not_request: AtomicU64,
    /// Dropped: a client request with a zero transmit timestamp.
    pub dropped_zero_transmit: AtomicU64,
    /// Dropped silently by the access lists.
    pub dropped_denied: AtomicU64,
    /// Dropped silently by the rate limit.
    pub dropped_rate_limited: AtomicU64,
    /// Replies the kernel would not take.
    pub send_errors: AtomicU64,
}

/// One batch's counts, kept in plain integers and added to [`Stats`] at
/// the end of the batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// See [`Stats::received`].
    pub received: u64,
    /// See [`Stats::answered`].
    pub answered: u64,
    /// See [`Stats::answered_interleaved`].
    #[serde(default)]
    pub answered_interleaved: u64,
    /// See [`Stats::kissed_rate`].
    pub kissed_rate: u64,
    /// See [`Stats::kissed_deny`].
    pub kissed_deny: u64,
    /// See [`Stats::dropped_malformed`].
    pub dropped_malformed: u64,
    /// See [`Stats::dropped_not_request`].
    pub dropped_not_request: u64,
    /// See [`Stats::dropped_zero_transmit`].
    pub dropped_zero_transmit: u64,
    /// See [`Stats::dropped_denied`].
    pub dropped_denied: u64,
    /// See [`Stats::dropped_rate_limited`].
    pub dropped_rate_limited: u64,
    /// See [`Stats::send_errors`].
    pub send_errors: u64,
}

impl Counts {
    /// Counts a datagram that got no reply.
    pub fn ignored(&mut self, reason: IgnoreReason, decision: Decision) {
        match reason {
            IgnoreReason::Malformed(_) => self.dropped_malformed += 1,
            IgnoreReason::NotARequest(_) => self.dropped_not_request += 1,
            IgnoreReason::ZeroTransmit => self.dropped_zero_transmit += 1,
            IgnoreReason::Denied if decision == Decision::RateDrop => self.dropped_rate_limited += 1,
            IgnoreReason::Denied => self.dropped_denied += 1,
        }
    }

    /// Counts a reply: time, or a kiss.
    pub fn replied(&mut self, decision: Decision) {
        match decision {
            Decision::DenyKiss => self.kissed_deny += 1,
            Decision::RateKiss => self.kissed_rate += 1,
            _ => self.answered += 1,
        }
    }
}

impl Stats {
    /// Adds a batch's counts.
    pub fn add(&self, counts: &Counts) {
        let pairs = [
            (&self.received, counts.received),
            (&self.answered, counts.answered),
            (&self.answered_interleaved, counts.answered_interleaved),
            (&self.kissed_rate, counts.kissed_rate),
            (&self.kissed_deny, counts.kissed_deny),
            (&self.dropped_malformed, counts.dropped_malformed),
            (&self.dropped_not_request, counts.dropped_not_request),
            (&self.dropped_zero_transmit, counts.dropped_zero_transmit),
            (&self.dropped_denied, counts.dropped_denied),
            (&self.dropped_rate_limited, counts.dropped_rate_limited),
            (&self.send_errors, counts.send_errors),
        ];
        for (counter, value) in pairs {
            if value != 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        }
    }

    /// A copy of the totals now.
    #[must_use]
    pub fn read(&self) -> Counts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            received: load(&self.received),
            answered: load(&self.answered),
            answered_interleaved: load(&self.answered_interleaved),
            kissed_rate: load(&self.kissed_rate),
            kissed_deny: load(&self.kissed_deny),
            dropped_malformed: load(&self.dropped_malformed),
            dropped_not_request: load(&self.dropped_not_request),
            dropped_zero_transmit: load(&self.dropped_zero_transmit),
            dropped_denied: load(&self.dropped_denied),
            dropped_rate_limited: load(&self.dropped_rate_limited),
            send_errors: load(&self.send_errors),
        }
    }
}
