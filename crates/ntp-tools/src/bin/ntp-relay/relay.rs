//! The relay itself: datagrams from clients to the listening socket go to
//! the upstream from a socket of that client's own (so replies find their
//! way back), replies go back to the client from the listening socket (so
//! they come from the address the client asked), each after what the
//! direction's [`Impairment`] decides. One scheduler thread sends what is
//! due, so delays are kept to tens of microseconds.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
}

/// A datagram waiting for its time.
#[derive(Debug)]
struct Pending {
    due: Instant,
    seq: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
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
#[derive(Debug, Default)]
struct Queue {
    heap: Mutex<(BinaryHeap<Pending>, u64, Option<ChaCha8Rng>)>,
    changed: Condvar,
}

impl Queue {
    /// Schedules the copies `impairment` decides on.
    fn impair(&self, impairment: &Impairment, socket: &Arc<UdpSocket>, to: SocketAddr, bytes: &[u8]) {
        let now = Instant::now();
        let mut guard = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let (heap, seq, rng) = &mut *guard;
        let Some(rng) = rng.as_mut() else { return };
        for delay in impairment.deliveries(rng) {
            *seq += 1;
            heap.push(Pending { due: now + delay, seq: *seq, socket: Arc::clone(socket), to, bytes: bytes.to_vec() });
        }
        self.changed.notify_one();
    }

    /// Sends each datagram when it is due, forever.
    fn run(&self) {
        let mut guard = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            match guard.0.peek().map(|p| p.due) {
                Some(due) if due <= now => {
                    if let Some(p) = guard.0.pop() {
                        drop(guard);
                        if let Err(e) = p.socket.send_to(&p.bytes, p.to) {
                            tracing::debug!(to = %p.to, error = %e, "send failed");
                        }
                        guard = self.heap.lock().unwrap_or_else(|e| e.into_inner());
                    }
                }
                Some(due) => guard = self.changed.wait_timeout(guard, due - now).unwrap_or_else(|e| e.into_inner()).0,
                None => guard = self.changed.wait(guard).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// Relays until the process ends.
pub fn run(config: &RelayConfig) -> io::Result<()> {
    let listen = Arc::new(UdpSocket::bind(config.listen)?);
    let queue = Arc::new(Queue::default());
    queue.heap.lock().unwrap_or_else(|e| e.into_inner()).2 = Some(ChaCha8Rng::seed_from_u64(config.seed));
    let scheduler = Arc::clone(&queue);
    std::thread::Builder::new().name("relay-scheduler".into()).spawn(move || scheduler.run())?;
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    tracing::info!(listen = %config.listen, upstream = %config.upstream, out = ?config.out, back = ?config.back, "relaying");
    let mut buf = [0u8; 2048];
    loop {
        let (len, client) = match listen.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "receive failed");
                continue;
            }
        };
        let known = clients.lock().unwrap_or_else(|e| e.into_inner()).get(&client).cloned();
        let upstream_socket = match known {
            Some(socket) => socket,
            None => {
                if clients.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_CLIENTS {
                    tracing::debug!(%client, "too many clients: dropped");
                    continue;
                }
                let socket = Arc::new(UdpSocket::bind((config.listen.ip(), 0))?);
                socket.set_read_timeout(Some(IDLE))?;
                clients.lock().unwrap_or_else(|e| e.into_inner()).insert(client, Arc::clone(&socket));
                let (socket2, listen, queue, clients) =
                    (Arc::clone(&socket), Arc::clone(&listen), Arc::clone(&queue), Arc::clone(&clients));
                let (back, upstream) = (config.back, config.upstream);
                std::thread::Builder::new().name(format!("relay-{client}")).spawn(move || {
                    let mut buf = [0u8; 2048];
                    // Replies from the upstream only; the thread ends when the client goes quiet.
                    while let Ok((len, from)) = socket2.recv_from(&mut buf) {
                        if from == upstream {
                            queue.impair(&back, &listen, client, &buf[..len]);
                        }
                    }
                    clients.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
                })?;
                socket
            }
        };
        queue.impair(&config.out, &upstream_socket, config.upstream, &buf[..len]);
    }
}
