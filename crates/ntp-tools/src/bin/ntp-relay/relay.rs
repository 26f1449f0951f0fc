//! The relay itself: datagrams from clients to the listening socket go to
//! the upstream from a socket of that client's own (so replies find their
//! way back), replies go back to the client from the listening socket (so
//! they come from the address the client asked), each after what the
//! direction's [`Impairment`] decides. A datagram's delay counts from the
//! kernel's receive timestamp, so a relay thread woken late does not add to
//! it; one scheduler thread sends what is due, waking a little early and
//! spinning to the deadline. With `--exchange-log` it writes what each leg
//! of each NTP exchange really took, so tests can judge a client against
//! the path it actually had.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, LineWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ntp_proto::{Header, NtpTimestamp};
use ntp_udp::{enable_receive_timestamps, Datagram, RecvBatch};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::impairment::Impairment;

/// A client forgotten after this long without traffic.
const IDLE: Duration = Duration::from_secs(60);
/// Most clients relayed at once (each has a socket and a thread).
const MAX_CLIENTS: usize = 256;

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where clients send.
    pub listen: SocketAddr,
    /// Where the relay forwards to.
    pub upstream: SocketAddr,
    /// Client to upstream.
    pub out: Impairment,
    /// Upstream back to client.
    pub back: Impairment,
    /// Seed of the random decisions.
    pub seed: u64,
    /// Where to write each exchange's measured legs, if anywhere.
    pub exchange_log: Option<PathBuf>,
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// Client to upstream.
    Out,
    /// Upstream back to client.
    Back,
}

/// A datagram waiting for its time.
#[derive(Debug)]
struct Pending {
    due: Instant,
    seq: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
    leg: Leg,
    client: SocketAddr,
    /// When the kernel received it (the relay's own wake-up does not count).
    arrived: SystemTime,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The delivery queue shared by the receiving threads and the scheduler.
#[derive(Debug)]
struct Queue {
    heap: Mutex<(BinaryHeap<Pending>, u64, ChaCha8Rng)>,
    changed: Condvar,
}

/// The scheduler wakes this long before a datagram is due and spins the
/// rest, so a late wake-up of the thread does not lengthen the leg.
const SPIN: Duration = Duration::from_micros(200);
/// Requests remembered while their replies are awaited, per exchange log.
const MAX_OPEN_EXCHANGES: usize = 4096;

impl Queue {
    fn new(seed: u64) -> Self {
        Self { heap: Mutex::new((BinaryHeap::new(), 0, ChaCha8Rng::seed_from_u64(seed))), changed: Condvar::new() }
    }

    /// Schedules the copies `impairment` decides on, each due its delay
    /// after the kernel received the datagram.
    fn impair(
        &self,
        impairment: &Impairment,
        leg: Leg,
        client: SocketAddr,
        socket: &Arc<UdpSocket>,
        to: SocketAddr,
        datagram: &Datagram<'_>,
    ) {
        let arrived = datagram.kernel_receive.map_or_else(SystemTime::now, NtpTimestamp::to_system_time);
        let (now, system_now) = (Instant::now(), SystemTime::now());
        let mut guard = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let (heap, seq, rng) = &mut *guard;
        for delay in impairment.deliveries(rng) {
            *seq += 1;
            let left = (arrived + delay).duration_since(system_now).unwrap_or(Duration::ZERO);
            let bytes = datagram.payload.to_vec();
            heap.push(Pending {
                due: now + left,
                seq: *seq,
                socket: Arc::clone(socket),
                to,
                bytes,
                leg,
                client,
                arrived,
            });
        }
        self.changed.notify_one();
    }

    /// Sends each datagram when it is due, forever; with `exchanges`,
    /// writes a line per request and reply relayed.
    fn run(&self, mut exchanges: Option<ExchangeLog>) {
        let mut guard = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            match guard.0.peek().map(|p| p.due) {
                Some(due) if due <= now + SPIN => {
                    let Some(p) = guard.0.pop() else { continue };
                    drop(guard);
                    while Instant::now() < p.due {
                        std::hint::spin_loop();
                    }
                    match p.socket.send_to(&p.bytes, p.to) {
                        Ok(_) => {
                            if let Some(log) = exchanges.as_mut() {
                                log.sent(&p);
                            }
                        }
                        Err(e) => tracing::debug!(to = %p.to, error = %e, "send failed"),
                    }
                    guard = self.heap.lock().unwrap_or_else(|e| e.into_inner());
                }
                Some(due) => {
                    let wait = due.saturating_duration_since(now + SPIN);
                    guard = self.changed.wait_timeout(guard, wait).unwrap_or_else(|e| e.into_inner()).0;
                }
                None => guard = self.changed.wait(guard).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// `--exchange-log`: one line per NTP exchange relayed,
/// `UNIX_TIME OUT BACK SERVER_OUT SERVER_BACK`, in seconds:
/// - `OUT`, `BACK`: what the request and the reply spent in the relay, from
///   the kernel's receive timestamp to the relay's send;
/// - `SERVER_OUT`, `SERVER_BACK`: the legs as the server's own timestamps
///   draw them: from the request entering the relay to the server's receive
///   timestamp (T2), and from the server's transmit timestamp (T3) to the
///   reply leaving the relay. They are right only when the server's clock
///   is this host's (a primary on the same host), and they then hold what
///   the relay cannot see: a server that stamps T3 and sends late makes
///   its reply's leg longer by that much.
///
/// A reply is matched to its request by the client and the request's
/// transmit timestamp, which the reply carries as its origin.
struct ExchangeLog {
    file: LineWriter<File>,
    /// Per open request: when it entered the relay, and what it spent there.
    open: HashMap<(SocketAddr, NtpTimestamp), (SystemTime, f64)>,
}

impl std::fmt::Debug for ExchangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeLog").field("open", &self.open.len()).finish_non_exhaustive()
    }
}

impl ExchangeLog {
    fn sent(&mut self, p: &Pending) {
        let now = SystemTime::now();
        let took = seconds_between(p.arrived, now);
        let Ok(header) = Header::decode(&p.bytes) else { return };
        match p.leg {
            Leg::Out => {
                if self.open.len() >= MAX_OPEN_EXCHANGES {
                    self.open.clear();
                }
                self.open.insert((p.client, header.transmit), (p.arrived, took));
            }
            Leg::Back => {
                let Some((entered, out)) = self.open.remove(&(p.client, header.origin)) else { return };
                let unix = seconds_between(UNIX_EPOCH, now);
                let server_out = seconds_between(entered, header.receive.to_system_time());
                let server_back = seconds_between(header.transmit.to_system_time(), now);
                let line = format!("{unix:.6} {out:.9} {took:.9} {server_out:.9} {server_back:.9}");
                if let Err(e) = writeln!(self.file, "{line}") {
                    tracing::debug!(error = %e, "exchange log not written");
                }
            }
        }
    }
}

/// `to - from` in seconds, negative if `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(later) => later.as_secs_f64(),
        Err(earlier) => -earlier.duration().as_secs_f64(),
    }
}

/// Relays until the process ends.
pub fn run(config: &RelayConfig) -> io::Result<()> {
    let listen = Arc::new(UdpSocket::bind(config.listen)?);
    enable_receive_timestamps(&*listen)?;
    let queue = Arc::new(Queue::new(config.seed));
    let exchanges = match &config.exchange_log {
        Some(path) => Some(ExchangeLog { file: LineWriter::new(File::create(path)?), open: HashMap::new() }),
        None => None,
    };
    let scheduler = Arc::clone(&queue);
    std::thread::Builder::new().name("relay-scheduler".into()).spawn(move || scheduler.run(exchanges))?;
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    tracing::info!(listen = %config.listen, upstream = %config.upstream, out = ?config.out, back = ?config.back, "relaying");
    let mut batch = RecvBatch::new(BATCH);
    loop {
        if let Err(e) = batch.recv(&*listen, true) {
            tracing::debug!(error = %e, "receive failed");
            continue;
        }
        for datagram in batch.iter() {
            let Some(client) = datagram.source else { continue };
            match upstream_socket(config, &clients, &listen, &queue, client) {
                Ok(Some(socket)) => queue.impair(&config.out, Leg::Out, client, &socket, config.upstream, &datagram),
                Ok(None) => tracing::debug!(%client, "too many clients: dropped"),
                Err(e) => tracing::debug!(%client, error = %e, "no socket for the client"),
            }
        }
    }
}

/// Datagrams read per receive call.
const BATCH: usize = 16;

/// The socket that relays `client`'s datagrams to the upstream, made (with
/// a thread relaying the upstream's replies back) on its first datagram;
/// `None` when too many clients are relayed already.
fn upstream_socket(
    config: &RelayConfig,
    clients: &Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    listen: &Arc<UdpSocket>,
    queue: &Arc<Queue>,
    client: SocketAddr,
) -> io::Result<Option<Arc<UdpSocket>>> {
    let mut known = clients.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(socket) = known.get(&client) {
        return Ok(Some(Arc::clone(socket)));
    }
    if known.len() >= MAX_CLIENTS {
        return Ok(None);
    }
    let socket = Arc::new(UdpSocket::bind((config.listen.ip(), 0))?);
    enable_receive_timestamps(&*socket)?;
    socket.set_read_timeout(Some(IDLE))?;
    known.insert(client, Arc::clone(&socket));
    drop(known);
    let (socket2, listen, queue, clients) =
        (Arc::clone(&socket), Arc::clone(listen), Arc::clone(queue), Arc::clone(clients));
    let (back, upstream) = (config.back, config.upstream);
    std::thread::Builder::new().name(format!("relay-{client}")).spawn(move || {
        let mut batch = RecvBatch::new(BATCH);
        // Replies from the upstream only; the thread ends when the client goes quiet.
        while batch.recv(&*socket2, true).is_ok() {
            for datagram in batch.iter().filter(|d| d.source == Some(upstream)) {
                queue.impair(&back, Leg::Back, client, &listen, client, &datagram);
            }
        }
        clients.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
    })?;
    Ok(Some(socket))
}
