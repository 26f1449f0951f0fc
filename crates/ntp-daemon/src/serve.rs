//! The serving loop: one thread per socket receives a batch with kernel
//! timestamps, asks the policy and the responder about each datagram,
//! stamps the transmit time into the basic replies and sends them in one
//! batch, then reads the kernel's transmit timestamps of what it sent
//! ([`crate::sent`]): interleaved replies carry them, and basic ones are
//! stamped ahead by the send latency they measure.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ntp_proto::nts::respond::{respond_nts, NtsReplyKind, NtsRequest, NtsResponse, Unsealed};
use ntp_proto::packet::{write_transmit, HEADER_LEN};
use ntp_proto::responder::{respond_interleaved, ReplyKind, Response};
use thiserror::Error;
use tracing::{debug, warn};

use crate::clock::SharedClock;
use crate::nts::{fill_random, NtsKeys};
use crate::policy::{AccessConfig, Decision, Policy, RateLimitConfig};
use crate::sent::SentReplies;
use crate::stats::{Counts, Stats};
use crate::ClockSnapshot;
use ntp_udp::{RecvBatch, SendBatch};

/// Datagrams handled per system call.
pub const BATCH: usize = 64;
/// Replies each serving thread remembers for interleaved mode.
pub const INTERLEAVED_TABLE: usize = ntp_proto::interleave::table::DEFAULT_CAPACITY;

/// Who is served and how often: what each serving thread's [`Policy`] is
/// built from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyConfig {
    /// Access lists.
    pub access: AccessConfig,
    /// Per-client rate limit.
    pub rate_limit: RateLimitConfig,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// A socket could not be set up.
    #[error("socket {address:?}: {source}")]
    Socket {
        /// The socket's address, if known.
        address: Option<SocketAddr>,
        /// The OS error.
        source: io::Error,
    },
    /// No sockets to serve on.
    #[error("no sockets to serve on")]
    NoSockets,
    /// A serving thread failed.
    #[error("serving thread failed: {0}")]
    Thread(String),
}

/// A running server: its serving threads and counters.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
    addresses: Vec<SocketAddr>,
}

impl Server {
    /// Starts one serving thread per socket (sockets already bound, e.g. to
    /// `127.0.0.1:0` in tests).
    pub fn start(sockets: Vec<UdpSocket>, policy: &PolicyConfig, clock: Arc<SharedClock>) -> Result<Self, ServeError> {
        Self::start_with_nts(sockets, policy, clock, None)
    }

    /// [`Server::start`], also answering NTS requests (RFC 8915 §5) with
    /// cookies sealed under `nts`'s keys. Plain requests take the same
    /// fast path as without NTS.
    pub fn start_with_nts(
        sockets: Vec<UdpSocket>,
        policy: &PolicyConfig,
        clock: Arc<SharedClock>,
        nts: Option<Arc<NtsKeys>>,
    ) -> Result<Self, ServeError> {
        if sockets.is_empty() {
            return Err(ServeError::NoSockets);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut addresses = Vec::new();
        let mut threads = Vec::new();
        for socket in sockets {
            let address = socket.local_addr().ok();
            ntp_udp::prepare(&socket).map_err(|source| ServeError::Socket { address, source })?;
            addresses.extend(address);
            let sent = SentReplies::new(&socket, INTERLEAVED_TABLE);
            let worker = Worker {
                sent,
                socket,
                clock: Arc::clone(&clock),
                policy: Policy::new(policy.access.clone(), &policy.rate_limit, Instant::now()),
                stats: Arc::clone(&stats),
                stop: Arc::clone(&stop),
                nts: nts.clone(),
            };
            let name = format!("ntp-serve-{}", address.map(|a| a.to_string()).unwrap_or_default());
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker.run())
                .map_err(|source| ServeError::Socket { address, source })?;
            threads.push(thread);
        }
        Ok(Self { stop, threads, stats, addresses })
    }

    /// The counters, live.
    #[must_use]
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The addresses served.
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Stops the serving threads (within [`ntp_udp::READ_TIMEOUT`]) and waits for them.
    pub fn stop(mut self) -> Result<Arc<Stats>, ServeError> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().map_err(|_| ServeError::Thread("a serving thread panicked".into()))?;
        }
        Ok(Arc::clone(&self.stats))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves on `sockets` until `shutdown` completes, then stops cleanly and
/// returns the final counters. While it runs, a primary server's reference
/// time follows its clock (see [`crate::daemon`]); the caller owns `clock`
/// and may discipline it concurrently.
pub async fn run(
    sockets: Vec<UdpSocket>,
    policy: PolicyConfig,
    clock: Arc<SharedClock>,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<Stats>, ServeError> {
    let server = Server::start(sockets, &policy, clock)?;
    shutdown.await;
    tokio::task::spawn_blocking(move || server.stop()).await.map_err(|e| ServeError::Thread(e.to_string()))?
}

/// One socket's serving thread.
struct Worker {
    socket: UdpSocket,
    sent: SentReplies,
    clock: Arc<SharedClock>,
    policy: Policy,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    nts: Option<Arc<NtsKeys>>,
}

impl Worker {
    fn run(mut self) {
        let mut received = RecvBatch::new(BATCH);
        let mut replies = SendBatch::new(BATCH);
        while !self.stop.load(Ordering::Relaxed) {
            match received.recv(&self.socket, true) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                Err(e) => {
                    warn!(error = %e, "receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let counts = self.answer(&received, &mut replies);
            self.stats.add(&counts);
        }
        debug!("serving thread stopped");
    }

    /// Decides about every datagram of the batch, then seals the NTS time
    /// replies, each with its T3 read just before, and stamps and sends the
    /// replies. A basic reply's transmit timestamp (T3) is read once, right
    /// before the send, and moved on by the least send latency measured on
    /// this socket ([`SentReplies::transmit_latency`]); an interleaved one
    /// carries when the previous reply to its client left; kiss-o'-death
    /// replies keep the client's timestamps.
    fn answer(&mut self, received: &RecvBatch, replies: &mut SendBatch) -> Counts {
        let snapshot = self.clock.snapshot();
        self.sent.collect(&self.socket, &snapshot);
        let state = snapshot.advertised_at(SharedClock::system_now());
        let arrival = Instant::now();
        let mut fallback_system_time = None;
        // The NTS master keys, loaded at most once a batch, and only if it holds an NTS request.
        let mut masters = None;
        let mut counts = Counts::default();
        // The batch's authenticated NTS replies, sealed last (each with its
        // T3 read just before), after every other datagram is answered.
        let mut unsealed: Vec<(SocketAddr, Option<IpAddr>, Decision, Unsealed)> = Vec::new();
        for datagram in received.iter() {
            counts.received += 1;
            let Some(source) = datagram.source else {
                counts.dropped_malformed += 1;
                continue;
            };
            let system_receive = match datagram.kernel_receive {
                Some(kernel) => kernel,
                None => *fallback_system_time.get_or_insert_with(SharedClock::system_now),
            };
            let decision = self.policy.admit(source.ip(), arrival);
            let receive = self.sent.unique_receive(snapshot.served_at(system_receive));
            // NTS requests are longer than a header; plain ones never leave the fast path.
            let nts_request = match &self.nts {
                Some(_) if datagram.payload.len() > HEADER_LEN => {
                    NtsRequest::decode(datagram.payload).ok().filter(NtsRequest::has_nts_fields)
                }
                _ => None,
            };
            if let (Some(keys), Some(request)) = (&self.nts, nts_request) {
                let masters = masters.get_or_insert_with(|| keys.current());
                match respond_nts(&request, receive, &state, decision.admission(), masters, &mut fill_random) {
                    NtsResponse::Ignore(reason) => counts.ignored(reason, decision),
                    NtsResponse::Time(reply) => unsealed.push((source, datagram.local, decision, reply)),
                    NtsResponse::Reply { bytes, kind } => {
                        if replies.push_final(source, datagram.local, &bytes) {
                            self.sent.queued(replies, None);
                            match kind {
                                // An NTS NAK is a kiss-o'-death (NTSN): counted with the refusals.
                                NtsReplyKind::Nak => counts.kissed_deny += 1,
                                NtsReplyKind::Kiss => counts.replied(decision),
                            }
                        }
                    }
                }
                continue;
            }
            let sent = &self.sent;
            let transmit_of = |origin| sent.transmit_of(origin, source.ip());
            match respond_interleaved(datagram.payload, receive, &state, decision.admission(), transmit_of) {
                Response::Ignore(reason) => counts.ignored(reason, decision),
                Response::Reply { bytes, kind } => {
                    // Never full: a batch's replies fit in a batch. Only a
                    // basic reply is stamped at the send.
                    let queued = if kind.to_stamp() {
                        replies.push(source, datagram.local, &bytes)
                    } else {
                        replies.push_final(source, datagram.local, &bytes)
                    };
                    if queued {
                        counts.replied(decision);
                        counts.answered_interleaved += u64::from(kind == ReplyKind::Interleaved);
                        self.sent.queued(replies, kind.to_remember().then_some((receive, source.ip())));
                    }
                }
            }
        }
        // T3 is inside what an NTS reply's seal covers: read for each just
        // before its seal, the costly work (cookies) long done, the send next.
        for (source, local, decision, reply) in unsealed {
            let transmit = snapshot.served_at(SharedClock::system_now() + self.sent.transmit_latency());
            if replies.push_final(source, local, &reply.seal(transmit)) {
                self.sent.queued(replies, None);
                counts.replied(decision);
            }
        }
        self.send(replies, &snapshot, &mut counts);
        counts
    }

    /// Stamps the queued basic replies (T3: read now, plus the least
    /// latency to the kernel's send) and sends everything queued.
    fn send(&mut self, replies: &mut SendBatch, snapshot: &ClockSnapshot, counts: &mut Counts) {
        if replies.is_empty() {
            return;
        }
        let queued = replies.len() as u64;
        // T3: read now, plus the least latency to the kernel's send.
        let read = SharedClock::system_now();
        let transmit = snapshot.served_at(read + self.sent.transmit_latency());
        for payload in replies.to_stamp_mut() {
            write_transmit(payload, transmit);
        }
        let sent = match replies.send(&self.socket) {
            Ok(sent) => {
                counts.send_errors += queued - sent as u64;
                Some(sent)
            }
            Err(e) => {
                counts.send_errors += queued;
                debug!(error = %e, "send failed");
                None
            }
        };
        self.sent.sent(&self.socket, sent, replies.was_split(), read, snapshot);
    }
}
