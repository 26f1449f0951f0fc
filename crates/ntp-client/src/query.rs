//! A burst of exchanges with one address, reduced to one estimate as the
//! RFC 5905 clock filter does (§10): the sample with the lowest delay is
//! used, and the spread of the others about it is the jitter.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ntp_proto::clock::Clock;
use ntp_proto::exchange::log2_seconds;
use ntp_proto::packet::Header;
use ntp_proto::{NtpDuration, Sample, Timestamps};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::exchange::{exchange, exchange_interleaved, exchange_nts, ExchangeError, ExchangeOptions, Measurement};
use crate::interleaved::InterleavedSession;
use crate::nts::NtsSession;
use ntp_proto::interleave::ExchangeMode;
use ntp_udp::TimestampedSocket;

/// How to query one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOptions {
    /// Requests to send (at least one).
    pub samples: u32,
    /// Spacing between the requests' send times, as iburst spaces them.
    pub interval: Duration,
    /// Each exchange's options, its timeout among them.
    pub exchange: ExchangeOptions,
}

/// The best estimate from a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The reply of the chosen (lowest-delay) exchange.
    pub reply: Header,
    /// Its four timestamps.
    pub timestamps: Timestamps,
    /// Its offset, delay and dispersion.
    pub sample: Sample,
    /// RMS of the other samples' offsets about the chosen one, at least the
    /// local precision (RFC 5905 §10).
    pub jitter: NtpDuration,
    /// How many exchanges gave a measurement.
    pub samples: usize,
    /// The server sent a RATE kiss-o'-death after answering some requests:
    /// the burst was cut short, the samples before it stand.
    pub rate_limited: bool,
    /// Every sample was NTS-authenticated.
    pub authenticated: bool,
    /// The samples reduced were interleaved ones (see [`query_interleaved`]).
    pub interleaved: bool,
}

/// Reduces measurements to the estimate the clock filter would make:
/// `None` for none.
#[must_use]
pub fn best_of(measurements: &[Measurement], local_precision: i8) -> Option<Estimate> {
    let best = measurements.iter().min_by_key(|m| m.sample.delay)?;
    let others = measurements.len() - 1;
    let floor = log2_seconds(local_precision);
    let jitter = if others == 0 {
        floor
    } else {
        let sum: f64 =
            measurements.iter().map(|m| (m.sample.offset - best.sample.offset).to_seconds_f64().powi(2)).sum();
        (sum / others as f64).sqrt().max(floor)
    };
    Some(Estimate {
        reply: best.reply,
        timestamps: best.timestamps,
        sample: best.sample,
        jitter: NtpDuration::from_seconds_f64(jitter),
        samples: measurements.len(),
        rate_limited: false,
        authenticated: measurements.iter().all(|m| m.authenticated),
        interleaved: measurements.iter().all(|m| m.mode == ExchangeMode::Interleaved),
    })
}

/// Queries `server` in interleaved mode: `options.samples + 1` requests in
/// sequence, each from a socket of its own, each sent `interval` after the
/// previous one was answered (or timed out). The first opens interleaved
/// mode and is answered basic (its reply is what the second asks about);
/// from the second on, a server that interleaves answers with when its
/// previous reply really left. If any answer came
/// interleaved, only interleaved samples are reduced; otherwise (a server
/// that answers basic only) the basic ones are, so it falls back by itself.
/// A kiss-o'-death or an unsynchronized answer ends the sequence as
/// [`query`] ends a burst.
pub async fn query_interleaved<C>(
    server: SocketAddr,
    clock: C,
    options: QueryOptions,
) -> Result<Estimate, ExchangeError>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    let session = InterleavedSession::new();
    let mut measurements: Vec<Measurement> = Vec::new();
    let mut worst: Option<ExchangeError> = None;
    for i in 0..=options.samples.max(1) {
        if i > 0 {
            tokio::time::sleep(options.interval).await;
        }
        // A socket of its own for each exchange, as for basic queries: it
        // sends before it joins the reactor, whose waiter would otherwise
        // be woken between T1 and the server's T2 on loopback (see
        // TimestampedSocket). The server keys interleaved mode by address,
        // not port.
        let exchanged = match TimestampedSocket::bind_for(server).await {
            Ok(socket) => exchange_interleaved(&socket, server, &clock, &options.exchange, &session).await,
            Err(error) => Err(ExchangeError::Io(error)),
        };
        match exchanged {
            Ok(measurement) => measurements.push(measurement),
            Err(error) if error.is_answer() => {
                let estimate = reduce_interleaved(&measurements, options.exchange.local_precision);
                return match estimate {
                    Some(estimate) if error.is_rate_kiss() => Ok(Estimate { rate_limited: true, ..estimate }),
                    _ => Err(error),
                };
            }
            Err(error) => {
                tracing::debug!(%server, %error, "exchange failed");
                if worst.as_ref().is_none_or(|w| error.rank() >= w.rank()) {
                    worst = Some(error);
                }
            }
        }
    }
    reduce_interleaved(&measurements, options.exchange.local_precision)
        .ok_or_else(|| worst.unwrap_or(ExchangeError::Timeout(options.exchange.timeout)))
}

/// The interleaved samples if there are any, else the basic ones.
fn reduce_interleaved(measurements: &[Measurement], local_precision: i8) -> Option<Estimate> {
    let interleaved: Vec<Measurement> =
        measurements.iter().filter(|m| m.mode == ExchangeMode::Interleaved).copied().collect();
    if interleaved.is_empty() {
        best_of(measurements, local_precision)
    } else {
        best_of(&interleaved, local_precision)
    }
}

/// Queries `server` with `options.samples` requests, the i-th sent at
/// `i * interval` after the first whether or not earlier ones were
/// answered, each on a socket of its own (a fresh source port). So a silent
/// server costs `(samples - 1) * interval + timeout`, and one request
/// answers at once with `--samples 1`. A kiss-o'-death or an
/// unsynchronized answer stops the burst and is the result, except that a
/// RATE kiss after some good samples leaves those standing (marked
/// [`Estimate::rate_limited`]).
pub async fn query<C>(server: SocketAddr, clock: C, options: QueryOptions) -> Result<Estimate, ExchangeError>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    query_with(server, clock, options, None).await
}

/// [`query`] with every exchange protected by NTS under `session`.
pub async fn query_nts<C>(
    server: SocketAddr,
    clock: C,
    options: QueryOptions,
    session: Arc<NtsSession>,
) -> Result<Estimate, ExchangeError>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    query_with(server, clock, options, Some(session)).await
}

async fn query_with<C>(
    server: SocketAddr,
    clock: C,
    options: QueryOptions,
    nts: Option<Arc<NtsSession>>,
) -> Result<Estimate, ExchangeError>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut exchanges = JoinSet::new();
    for i in 0..options.samples.max(1) {
        let (clock, stop, nts) = (clock.clone(), Arc::clone(&stop), nts.clone());
        let send_at = start + options.interval * i;
        exchanges.spawn(async move {
            tokio::time::sleep_until(send_at).await;
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let socket = match TimestampedSocket::bind_for(server).await {
                Ok(socket) => socket,
                Err(error) => return Some(Err(ExchangeError::Io(error))),
            };
            let result = match &nts {
                None => exchange(&socket, server, &clock, &options.exchange).await,
                Some(session) => exchange_nts(&socket, server, &clock, &options.exchange, session).await,
            };
            if result.as_ref().is_err_and(ExchangeError::is_answer) {
                stop.store(true, Ordering::Relaxed);
            }
            Some(result)
        });
    }

    let mut measurements = Vec::new();
    let mut worst: Option<ExchangeError> = None;
    let mut answer: Option<ExchangeError> = None;
    while let Some(joined) = exchanges.join_next().await {
        match joined {
            Ok(Some(Ok(measurement))) => measurements.push(measurement),
            Ok(Some(Err(error))) if error.is_answer() => {
                // The server's own word (a kiss, "unsynchronized"): stop asking.
                tracing::debug!(%server, %error, "server refused; burst stopped");
                exchanges.abort_all();
                answer = Some(error);
            }
            Ok(Some(Err(error))) => {
                tracing::debug!(%server, %error, "exchange failed");
                if worst.as_ref().is_none_or(|w| error.rank() >= w.rank()) {
                    worst = Some(error);
                }
            }
            Ok(None) => {}
            Err(join_error) if join_error.is_cancelled() => {}
            Err(join_error) => worst = Some(ExchangeError::Io(std::io::Error::other(join_error.to_string()))),
        }
    }
    let estimate = best_of(&measurements, options.exchange.local_precision);
    match (answer, estimate) {
        // Rate limiting cut the burst short; what was answered before stands.
        (Some(answer), Some(estimate)) if answer.is_rate_kiss() => Ok(Estimate { rate_limited: true, ..estimate }),
        (Some(answer), _) => Err(answer),
        (None, Some(estimate)) => Ok(estimate),
        (None, None) => Err(worst.unwrap_or(ExchangeError::Timeout(options.exchange.timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::NtpTimestamp;

    fn measured(offset_ms: f64, delay_ms: f64) -> Measurement {
        let t1 = NtpTimestamp::from_unix(1_800_000_000, 0);
        let half = NtpDuration::from_seconds_f64(delay_ms / 2000.0);
        let offset = NtpDuration::from_seconds_f64(offset_ms / 1000.0);
        let t2 = t1 + half + offset;
        let timestamps = Timestamps { t1, t2, t3: t2, t4: t1 + half + half };
        Measurement {
            reply: Header::default(),
            request_transmit: NtpTimestamp::ZERO,
            timestamps,
            mode: ExchangeMode::Basic,
            age: NtpDuration::ZERO,
            sample: Sample::new(&timestamps, -20, -20),
            kernel_transmit: true,
            kernel_receive: true,
            authenticated: false,
        }
    }

    #[test]
    fn lowest_delay_wins_and_the_rest_make_the_jitter() {
        let samples = [measured(5.0, 30.0), measured(1.0, 10.0), measured(-2.0, 20.0), measured(3.0, 11.0)];
        let estimate = best_of(&samples, -20).unwrap();
        assert!((estimate.sample.offset.to_seconds_f64() - 0.001).abs() < 1e-9);
        assert!((estimate.sample.delay.to_seconds_f64() - 0.010).abs() < 1e-9);
        // Differences 4, -3, 2 ms: sqrt((16 + 9 + 4) / 3) ms.
        let expected = (29.0f64 / 3.0).sqrt() / 1000.0;
        assert!((estimate.jitter.to_seconds_f64() - expected).abs() < 1e-9);
        assert_eq!(estimate.samples, 4);
    }

    #[test]
    fn one_sample_has_the_precision_as_jitter() {
        let estimate = best_of(&[measured(1.0, 1.0)], -10).unwrap();
        assert!((estimate.jitter.to_seconds_f64() - 2f64.powi(-10)).abs() < 1e-9);
        assert!(best_of(&[], -10).is_none());
    }
}
