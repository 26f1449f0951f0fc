//! Transmit-timestamp compensation. A server reads its transmit timestamp
//! (T3) just before the send system call, but the reply leaves some
//! microseconds later, after the system call and the UDP/IP stack, while the
//! client's request was stamped by the kernel on both ends. The difference
//! makes every measurement of this server read late by half that latency,
//! and in a chain the bias adds up hop by hop.
//!
//! This module measures the latency from reading the clock to the kernel's
//! software transmit timestamp of a datagram, on a probe socket off the fast
//! path, and publishes its median; the serving threads add it to T3. The
//! estimate is refreshed periodically and bounded, so a bad measurement
//! cannot push T3 far.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ntp_proto::clock::Clock as _;
use ntp_proto::NtpDuration;
use ntp_udp::{SystemClock, TimestampedSocket};
use tokio::sync::watch;
use tracing::debug;

use crate::clock::SharedClock;

/// Probes per measurement; the median is kept.
const PROBES: usize = 31;
/// How often the estimate is refreshed.
const REFRESH: Duration = Duration::from_secs(60);
/// No estimate beyond this is believed.
const MAX_LATENCY: Duration = Duration::from_micros(200);

/// Measures the send latency once: the median over [`PROBES`] datagrams
/// from a probe socket to a sink on loopback. `None` where the platform
/// gives no transmit timestamps.
pub async fn measure() -> Option<NtpDuration> {
    let sink = UdpSocket::bind("127.0.0.1:0").ok()?;
    let target: SocketAddr = sink.local_addr().ok()?;
    let probe = TimestampedSocket::bind("127.0.0.1:0".parse().ok()?).await.ok()?;
    let payload = [0u8; 48];
    let mut samples = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let read = probe.send_to_stamped(&payload, target, || SystemClock.now()).await.ok()?;
        // The timestamp comes back on the error queue as soon as the
        // datagram has left; give it a moment.
        tokio::time::sleep(Duration::from_micros(200)).await;
        if let Some(sent) = probe.last_transmit_timestamp() {
            let latency = sent - read;
            if latency >= NtpDuration::ZERO {
                samples.push(latency);
            }
        }
    }
    samples.sort();
    samples.get(samples.len() / 2).copied()
}

/// Keeps `clock`'s transmit latency up to date until `stopped` turns true.
pub async fn calibrate(clock: Arc<SharedClock>, mut stopped: watch::Receiver<bool>) {
    loop {
        match measure().await {
            Some(measured) => {
                let bounded = measured.min(NtpDuration::from_nanos(MAX_LATENCY.as_nanos() as i64));
                debug!(latency = %bounded, "transmit latency measured");
                clock.transmit_latency().set(bounded);
            }
            None => debug!("no transmit timestamps: T3 is not compensated"),
        }
        tokio::select! {
            _ = stopped.wait_for(|&stop| stop) => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_send_latency_is_measured_and_plausible() {
        let latency = measure().await.expect("Linux gives software transmit timestamps");
        assert!(latency > NtpDuration::ZERO && latency < NtpDuration::from_nanos(1_000_000), "{latency}");
    }
}
