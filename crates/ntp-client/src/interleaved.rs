//! Interleaved mode on the client: one server's [`Interleaved`] memory,
//! shared by the exchanges with it, which take turns (a daemon's upstream
//! polls one at a time; `ntp-query --interleaved` asks in sequence).

use std::sync::Mutex;

use ntp_proto::interleave::client::InterleaveError;
use ntp_proto::interleave::{ExchangeMode, Interleaved, InterleavedRequest};
use ntp_proto::packet::{Header, Version};
use ntp_proto::{NtpTimestamp, Timestamps};

/// What an interleaved client keeps of one server.
#[derive(Debug, Default)]
pub struct InterleavedSession {
    state: Mutex<Interleaved>,
}

impl InterleavedSession {
    /// A session whose first request opens interleaved mode (answered basic).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The next request, with fresh random nonces.
    #[must_use]
    pub fn request(&self, version: Version) -> InterleavedRequest {
        let nonces = loop {
            let [a, b] = [rand::random::<u64>(), rand::random::<u64>()];
            if a != 0 && b != 0 && a != b {
                break [NtpTimestamp::from_bits(a), NtpTimestamp::from_bits(b)];
            }
        };
        self.lock().request(version, nonces)
    }

    /// Reads a validated reply to `sent` (see [`Interleaved::complete`]).
    pub fn complete(
        &self,
        sent: &InterleavedRequest,
        reply: &Header,
        t1: NtpTimestamp,
        t4: NtpTimestamp,
    ) -> Result<(ExchangeMode, Timestamps), InterleaveError> {
        self.lock().complete(sent, reply, t1, t4)
    }

    /// Whether the next request asks for interleaved mode.
    #[must_use]
    pub fn will_interleave(&self) -> bool {
        self.lock().will_interleave()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Interleaved> {
        // The state is a few timestamps, consistent between any two calls.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
