//! One client/server exchange (RFC 5905 §8): send a request stamped with a
//! random nonce, wait for the reply that echoes it, and read the four
//! timestamps against a given clock.
//!
//! The local clock is a parameter, so `ntp-query` passes the system clock
//! and the daemon passes its disciplined virtual clock.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use ntp_proto::clock::Clock;
use ntp_proto::interleave::client::InterleaveError;
use ntp_proto::interleave::ExchangeMode;
use ntp_proto::nts::ntp::ReplyError as NtsReplyError;
use ntp_proto::packet::{Header, KissCode, Mode, Version};
use ntp_proto::request::{Refusal, SentRequest};
use ntp_proto::{DecodeError, NtpDuration, NtpTimestamp, Packet, ReplyError, Sample, Timestamps};
use thiserror::Error;
use tokio::time::Instant;

use crate::interleaved::InterleavedSession;
use crate::nts::NtsSession;
use ntp_udp::TimestampedSocket;

/// How to conduct one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeOptions {
    /// The protocol version of the request (servers answer in kind).
    pub version: Version,
    /// How long to wait for the reply.
    pub timeout: Duration,
    /// The local clock's precision exponent, part of each sample's error.
    pub local_precision: i8,
}

/// What one exchange measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// The server's reply, validated.
    pub reply: Header,
    /// The nonce of our request that the reply's origin echoed (its
    /// transmit timestamp, or in interleaved mode its receive field): what
    /// a later check of the reply compares the origin with.
    pub request_transmit: NtpTimestamp,
    /// T1 and T4 on the local clock, T2 and T3 from the reply; in
    /// interleaved mode those of the previous exchange, which this reply
    /// completes.
    pub timestamps: Timestamps,
    /// Basic, or interleaved.
    pub mode: ExchangeMode,
    /// How long before this reply arrived the measured exchange ended
    /// (its T4): zero in basic mode, about a poll interval in interleaved.
    pub age: NtpDuration,
    /// Offset, delay and dispersion of this exchange.
    pub sample: Sample,
    /// Whether T1 is the kernel's transmit timestamp (otherwise it was read
    /// right before the send).
    pub kernel_transmit: bool,
    /// Whether T4 is the kernel's receive timestamp (otherwise it was read
    /// after the process woke up).
    pub kernel_receive: bool,
    /// Whether the reply was NTS-authenticated (RFC 8915).
    pub authenticated: bool,
}

/// Why an exchange gave no measurement.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// Nothing came back in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// Only undecodable datagrams came back before the timeout.
    #[error("undecodable reply: {0}")]
    Decode(DecodeError),
    /// Only replies that do not answer our request came back (wrong mode,
    /// origin not our nonce) before the timeout.
    #[error("bogus reply: {0}")]
    Bogus(ReplyError),
    /// Only replies that failed NTS authentication came back (or an NTS
    /// NAK, which is unauthenticated too) before the timeout.
    #[error("NTS: {0}")]
    Nts(NtsReplyError),
    /// An interleaved answer whose times do not fit the exchange it
    /// completes: not used.
    #[error("interleaved: {0}")]
    Interleave(InterleaveError),
    /// The NTS session has no cookie left: NTS-KE must be run again.
    #[error("NTS: no cookie left, a new NTS-KE is needed")]
    NoCookies,
    /// Only datagrams from another address came back before the timeout.
    #[error("reply came from {got}, not from {expected}")]
    WrongSource {
        /// The address asked.
        expected: SocketAddr,
        /// The address that answered.
        got: SocketAddr,
    },
    /// The server answered our request, but with no time to use: a
    /// kiss-o'-death, an unsynchronized clock, a zero timestamp.
    #[error("{error}")]
    Rejected {
        /// The reply, for its stratum, reference ID and the like.
        reply: Box<Header>,
        /// What makes it unusable.
        error: ReplyError,
    },
}

impl ExchangeError {
    /// The server answered, and said not to ask again soon (RATE) or at
    /// all (DENY, RSTR), or that it has no time to give: further requests
    /// in the same burst are pointless.
    #[must_use]
    pub fn is_answer(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// A RATE kiss-o'-death: the server wants fewer requests.
    #[must_use]
    pub fn is_rate_kiss(&self) -> bool {
        matches!(self, Self::Rejected { error: ReplyError::Kiss(KissCode::Rate), .. })
    }

    /// The error a refused datagram from `got` makes, for a request to `expected`.
    fn refused(refusal: Refusal<(IpAddr, u16), NtsReplyError>, expected: SocketAddr, got: SocketAddr) -> Self {
        match refusal {
            Refusal::WrongSource(_) => Self::WrongSource { expected, got },
            Refusal::Decode(error) => Self::Decode(error),
            Refusal::Unauthenticated(error) => Self::Nts(error),
            Refusal::Bogus(error) => Self::Bogus(error),
            Refusal::Unusable { reply, error } => Self::Rejected { reply, error },
        }
    }

    /// How informative the error is, to report the best of several.
    #[must_use]
    pub fn rank(&self) -> u8 {
        match self {
            Self::Timeout(_) => 0,
            Self::Io(_) | Self::NoCookies => 1,
            Self::WrongSource { .. } => 2,
            Self::Decode(_) => 3,
            Self::Bogus(_) => 4,
            Self::Nts(_) | Self::Interleave(_) => 4,
            Self::Rejected { .. } => 5,
        }
    }
}

/// One exchange with `server` over `socket`. T1 is read from `clock` right
/// before the send, then replaced by the kernel's transmit timestamp mapped
/// into `clock` where the platform gives one (as chrony does: it leaves out
/// the system call, tens of µs on an idle host). T4 is the kernel receive
/// timestamp mapped into `clock`, or `clock.now()` right after the receive
/// where there is none.
///
/// Each datagram is judged by [`ntp_proto::request::SentRequest`], as the
/// simulator judges its replies. Datagrams that are not the answer (from
/// another address, undecodable, not echoing our nonce) are ignored, so a
/// forged packet cannot end the exchange; if nothing better arrives before the timeout, the last of them
/// is the error. The request's transmit timestamp is a random nonce, so the
/// request reveals nothing of the local clock.
///
/// The socket must not be shared by exchanges running at the same time:
/// each reads every datagram that arrives and drops what is not its own.
/// Use one socket per exchange (as [`crate::query`] does, which also gives
/// each request a fresh source port) or per upstream.
pub async fn exchange(
    socket: &TimestampedSocket,
    server: SocketAddr,
    clock: &impl Clock,
    options: &ExchangeOptions,
) -> Result<Measurement, ExchangeError> {
    exchange_with(socket, server, clock, options, None, None).await
}

/// [`exchange`] protected by NTS (RFC 8915 §5): the request carries a
/// cookie of `session` and is authenticated; only a reply that echoes its
/// unique identifier and verifies under the session's key is accepted
/// (any other is ignored like a forged one), and its cookies go back into
/// `session`.
pub async fn exchange_nts(
    socket: &TimestampedSocket,
    server: SocketAddr,
    clock: &impl Clock,
    options: &ExchangeOptions,
    session: &NtsSession,
) -> Result<Measurement, ExchangeError> {
    exchange_with(socket, server, clock, options, Some(session), None).await
}

/// [`exchange`] in interleaved mode (see [`ntp_proto::interleave`]): asks
/// for when the server's previous reply to us really left, and falls back
/// by itself: a basic answer is an ordinary measurement. `session` holds
/// what the exchanges with this server share; its first request opens
/// interleaved mode and is answered basic.
pub async fn exchange_interleaved(
    socket: &TimestampedSocket,
    server: SocketAddr,
    clock: &impl Clock,
    options: &ExchangeOptions,
    session: &InterleavedSession,
) -> Result<Measurement, ExchangeError> {
    exchange_with(socket, server, clock, options, None, Some(session)).await
}

async fn exchange_with(
    socket: &TimestampedSocket,
    server: SocketAddr,
    clock: &impl Clock,
    options: &ExchangeOptions,
    nts: Option<&NtsSession>,
    interleave: Option<&InterleavedSession>,
) -> Result<Measurement, ExchangeError> {
    let (request, interleaved) = match interleave {
        Some(session) => {
            let sent = session.request(options.version);
            (sent.header, Some(sent))
        }
        None => {
            let nonce = loop {
                let candidate = NtpTimestamp::from_bits(rand::random());
                if !candidate.is_zero() {
                    break candidate;
                }
            };
            (Header { version: options.version, mode: Mode::Client, transmit: nonce, ..Header::default() }, None)
        }
    };
    let nonce = request.transmit;
    let sent = SentRequest {
        server: endpoint(server),
        transmit: nonce,
        interleaved: interleaved.and_then(|sent| sent.interleaved),
    };
    let (bytes, pending) = match nts {
        None => (request.encode().to_vec(), None),
        Some(session) => {
            let (bytes, pending) = session.request(&request).ok_or(ExchangeError::NoCookies)?;
            (bytes, Some((session, pending)))
        }
    };
    let deadline = Instant::now() + options.timeout;
    let (t1_read, sent_system) = socket
        .send_to_stamped(&bytes, server, || (clock.now(), NtpTimestamp::from_system_time(SystemTime::now())))
        .await?;

    let mut ignored: Option<ExchangeError> = None;
    let mut buf = [0u8; 2048];
    loop {
        let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await else {
            return Err(ignored.unwrap_or(ExchangeError::Timeout(options.timeout)));
        };
        let datagram = received?;
        let t4 = match datagram.kernel_receive {
            Some(system) => clock.at_system_time(system),
            None => clock.now(),
        };
        let bytes = &buf[..datagram.len];
        let source = endpoint(datagram.source);
        let verify = pending.as_ref().map(|(session, pending)| {
            move |bytes: &[u8], packet: &Packet| session.accept_reply(bytes, packet, pending)
        });
        let reply = match sent.accept_with(source, bytes, verify) {
            Ok(reply) => reply,
            Err(refusal) => {
                let answered = refusal.is_answer();
                let error = ExchangeError::refused(refusal, server, datagram.source);
                if answered {
                    return Err(error);
                }
                tracing::debug!(%server, source = %datagram.source, %error, "ignoring a datagram that is not the answer");
                ignored = Some(error);
                continue;
            }
        };
        // The kernel's transmit timestamp, if it is this request's: not
        // before the clock was read for the send, nor long after.
        let kernel_transmit = socket.last_transmit_timestamp().filter(|&stamp| {
            let after_read = stamp - sent_system;
            after_read >= NtpDuration::ZERO && after_read < NtpDuration::ONE_SECOND
        });
        let t1 = kernel_transmit.map_or(t1_read, |stamp| clock.at_system_time(stamp));
        let (mode, timestamps) = match (interleave, &interleaved) {
            (Some(session), Some(sent)) => session.complete(sent, &reply, t1, t4).map_err(ExchangeError::Interleave)?,
            _ => (ExchangeMode::Basic, Timestamps { t1, t2: reply.receive, t3: reply.transmit, t4 }),
        };
        let sample = Sample::new(&timestamps, reply.precision, options.local_precision);
        tracing::trace!(
            %server,
            outbound = %(timestamps.t2 - timestamps.t1),
            inbound = %(timestamps.t4 - timestamps.t3),
            kernel_transmit = kernel_transmit.is_some(),
            kernel_receive = datagram.kernel_receive.is_some(),
            mode = mode.as_str(),
            "measured"
        );
        return Ok(Measurement {
            reply,
            request_transmit: reply.origin,
            timestamps,
            mode,
            age: t4 - timestamps.t4,
            sample,
            kernel_transmit: kernel_transmit.is_some(),
            kernel_receive: datagram.kernel_receive.is_some(),
            authenticated: pending.is_some(),
        });
    }
}

/// Address and port, what a reply's source is compared by; an IPv6 scope
/// is left out (the kernel may fill it in on replies to a request sent
/// without one).
fn endpoint(address: SocketAddr) -> (IpAddr, u16) {
    (address.ip(), address.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::packet::{ReferenceId, Stratum};

    /// A clock `ahead` of the system clock, kernel timestamps mapped alike.
    #[derive(Debug, Clone, Copy)]
    struct AheadClock(NtpDuration);

    impl Clock for AheadClock {
        fn now(&self) -> NtpTimestamp {
            NtpTimestamp::from_system_time(SystemTime::now()) + self.0
        }
        fn at_system_time(&self, system: NtpTimestamp) -> NtpTimestamp {
            system + self.0
        }
    }

    /// Answers one request with `answer(request)` datagrams, from a thread.
    fn serve_once(answer: impl Fn(&Header) -> Vec<Header> + Send + 'static) -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            let (len, peer) = socket.recv_from(&mut buf).unwrap();
            let request = Header::decode(&buf[..len]).unwrap();
            for reply in answer(&request) {
                socket.send_to(&reply.encode(), peer).unwrap();
            }
        });
        address
    }

    fn reply_to(request: &Header) -> Header {
        let now = NtpTimestamp::from_system_time(SystemTime::now());
        Header {
            mode: Mode::Server,
            stratum: Stratum(1),
            reference_id: ReferenceId(*b"GPS\0"),
            origin: request.transmit,
            receive: now,
            transmit: now,
            ..Header::default()
        }
    }

    const OPTIONS: ExchangeOptions =
        ExchangeOptions { version: Version::V4, timeout: Duration::from_secs(2), local_precision: -20 };

    #[tokio::test]
    async fn times_are_read_from_the_clock_given() {
        // A bogus reply first: ignored, the real one after it is used.
        let server = serve_once(|request| {
            let bogus = Header { origin: NtpTimestamp::from_bits(7), ..reply_to(request) };
            vec![bogus, reply_to(request)]
        });
        let socket = TimestampedSocket::bind_for(server).await.unwrap();
        let clock = AheadClock(NtpDuration::from_seconds(1000));
        let measured = exchange(&socket, server, &clock, &OPTIONS).await.unwrap();
        let offset = measured.sample.offset.to_seconds_f64();
        assert!((offset + 1000.0).abs() < 0.05, "server is 1000 s behind this clock: {offset}");
        assert!(measured.sample.delay.to_seconds_f64() < 0.05);
        assert_eq!(measured.kernel_receive, cfg!(target_os = "linux"));
        assert_eq!(measured.kernel_transmit, cfg!(target_os = "linux"));
        // The request's transmit timestamp is kept, for the daemon's
        // synchronizer to check the origin against (not against itself).
        assert_eq!(measured.request_transmit, measured.reply.origin);
        assert!(!measured.request_transmit.is_zero());
    }

    #[tokio::test]
    async fn only_bogus_replies_end_as_their_error_at_the_timeout() {
        let server = serve_once(|request| vec![Header { origin: NtpTimestamp::from_bits(7), ..reply_to(request) }]);
        let socket = TimestampedSocket::bind_for(server).await.unwrap();
        let options = ExchangeOptions { timeout: Duration::from_millis(200), ..OPTIONS };
        let error = exchange(&socket, server, &ntp_udp::SystemClock, &options).await.unwrap_err();
        assert!(matches!(error, ExchangeError::Bogus(ReplyError::OriginMismatch)), "{error}");
    }

    #[tokio::test]
    async fn a_kiss_is_an_answer() {
        let server = serve_once(|request| {
            vec![Header { stratum: Stratum(0), reference_id: ReferenceId(*b"DENY"), ..reply_to(request) }]
        });
        let socket = TimestampedSocket::bind_for(server).await.unwrap();
        let error = exchange(&socket, server, &ntp_udp::SystemClock, &OPTIONS).await.unwrap_err();
        assert!(error.is_answer() && !error.is_rate_kiss());
        assert_eq!(error.to_string(), "kiss-o'-death DENY");
    }

    #[tokio::test]
    async fn garbage_and_strangers_are_ignored() {
        // A well-formed reply from another address is not the server's.
        let socket = TimestampedSocket::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let ours = socket.local_addr().unwrap();
        let server = serve_once(move |request| {
            let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            stranger.send_to(&reply_to(request).encode(), ours).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            vec![]
        });
        let error = exchange(
            &socket,
            server,
            &ntp_udp::SystemClock,
            &ExchangeOptions { timeout: Duration::from_millis(300), ..OPTIONS },
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ExchangeError::WrongSource { expected, .. } if expected == server), "{error}");

        // A short datagram and an unknown version are skipped; the proper
        // reply after them counts.
        let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = raw.local_addr().unwrap();
        let serving = std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            let (len, peer) = raw.recv_from(&mut buf).unwrap();
            let request = Header::decode(&buf[..len]).unwrap();
            raw.send_to(&[0x24; 10], peer).unwrap();
            let mut bad_version = reply_to(&request).encode();
            bad_version[0] = 0x3c; // version 7
            raw.send_to(&bad_version, peer).unwrap();
            raw.send_to(&reply_to(&request).encode(), peer).unwrap();
        });
        let measured = exchange(&socket, server, &ntp_udp::SystemClock, &OPTIONS).await.unwrap();
        assert_eq!(measured.reply.stratum, Stratum(1));
        serving.join().unwrap();
    }

    #[tokio::test]
    async fn an_nts_request_never_accepts_a_plain_reply() {
        use ntp_proto::nts::{Key, SessionKeys, KEY_LEN};
        let session =
            NtsSession::new(SessionKeys { c2s: Key([1; KEY_LEN]), s2c: Key([2; KEY_LEN]) }, vec![vec![9; 100]]);
        // The fake server answers the header correctly but without NTS.
        let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = raw.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let (len, peer) = raw.recv_from(&mut buf).unwrap();
            assert!(len > 48, "the request carries NTS fields");
            let request = Header::decode(&buf[..len]).unwrap();
            raw.send_to(&reply_to(&request).encode(), peer).unwrap();
        });
        let socket = TimestampedSocket::bind_for(server).await.unwrap();
        let options = ExchangeOptions { timeout: Duration::from_millis(300), ..OPTIONS };
        let error = exchange_nts(&socket, server, &ntp_udp::SystemClock, &options, &session).await.unwrap_err();
        assert!(matches!(error, ExchangeError::Nts(_)), "{error}");
        // The one cookie is spent: the next request needs a new NTS-KE.
        let error = exchange_nts(&socket, server, &ntp_udp::SystemClock, &options, &session).await.unwrap_err();
        assert!(matches!(error, ExchangeError::NoCookies), "{error}");
    }
}
