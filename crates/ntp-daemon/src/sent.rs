//! A serving thread's record of the replies it sent: which ones ask the
//! kernel for their transmit timestamp, each of those numbered as the
//! kernel numbers them, matched with the timestamp when it comes back on
//! the error queue, and kept in the interleaved table (receive time and
//! client to transmit time). The same timestamps measure, on the serving
//! socket itself, how long a reply takes from the clock read for T3 to
//! leaving: what a basic reply's T3 is moved on by.
//!
//! A timestamp costs the kernel more than the rest of a reply (a buffer
//! queued on the error queue, a wake-up, a read), so only the replies that
//! need one ask: those to clients in interleaved mode, and the first of
//! each batch, for the latency estimate. That one must be every batch's
//! first: a datagram that asks carries a control message the kernel reads
//! before it sends, so a latency measured on a few would be longer than
//! the others' and would put their T3 after they left; the rest of a batch
//! leaves after its first. Under load a batch holds tens of replies, so a
//! basic client's reply costs about what it cost before interleaved mode.
//!
//! Only the serving thread touches it: no locks. The error queue is read
//! in one batch after each send (loopback queues a timestamp within the
//! send call; a network card soon after), and before a batch is answered
//! if timestamps are still outstanding.

use std::collections::VecDeque;
use std::net::{IpAddr, UdpSocket};

use ntp_proto::interleave::TransmitTable;
use ntp_proto::{NtpDuration, NtpTimestamp};
use ntp_udp::{
    disable_transmit_timestamps, enable_numbered_transmit_timestamps, SendBatch, TransmitQueue, TransmitStamp,
};
use tracing::debug;

use crate::clock::ClockSnapshot;

/// Replies remembered while their timestamps are awaited: more than a
/// few batches' worth, so a slow timestamp is not lost behind later ones.
const IN_FLIGHT: usize = 1024;
/// Send latencies the estimate is the least of: the last this many.
const LATENCY_WINDOW: u64 = 1024;
/// Measurements before the estimate is used: the first sends on a socket
/// are the slowest (cold caches), and T3 moved on by the least of a few
/// would be later than a warm reply leaves. Measured with chronyd polling
/// 8 times a second: the least of the first 8 was 0.38 µs above the
/// least of 200, which it reached at the 25th (chronyd then read delays
/// of 0.07 µs where the wire's least is 0.20); 64 leaves a margin.
const LATENCY_WARM_UP: u32 = 64;
/// The estimate is the least latency less this fraction of it (1/8): a
/// send faster than any in the window (the host became quicker) leaves
/// before a T3 moved on by the least, by as much as the least drops. Seen
/// here: drops of 0.29 µs from a least of 1.95 µs when a neighbour's load
/// went; an eighth of it is 0.24 µs, and costs a basic client 0.12 µs of
/// offset.
const LATENCY_GUARD: i64 = 8;
/// A latency beyond this is a measurement gone wrong (the thread was
/// preempted between the clock read and the send), not kept.
const MAX_LATENCY: NtpDuration = NtpDuration::from_bits(1 << 22); // ~1 ms

/// One datagram of the batch being answered.
#[derive(Debug, Clone, Copy)]
struct Queued {
    /// What [`InFlight::reply`] will be.
    reply: Option<(NtpTimestamp, IpAddr)>,
    /// Whether it asks for its transmit timestamp.
    asked: bool,
}

/// What is known of one datagram that asked for its timestamp, by its number.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u32,
    /// The receive time and client of a reply to remember; `None` for a
    /// datagram asked only for the latency (a basic reply, a kiss, an NTS
    /// reply: interleaved mode does not cover those).
    reply: Option<(NtpTimestamp, IpAddr)>,
    /// The system time read for T3 of its batch: no timestamp of this
    /// datagram can be earlier (one that is belongs to a datagram numbered
    /// before the numbering restarted).
    read_for_transmit: NtpTimestamp,
    /// Whether it was its batch's first: the one the send latency is
    /// measured on.
    first: bool,
}

/// One serving socket's replies and their transmit times.
#[derive(Debug)]
pub struct SentReplies {
    /// False where the kernel gives no numbered transmit timestamps: then
    /// every reply is basic and T3 is not moved on.
    numbered: bool,
    next_id: u32,
    in_flight: Vec<Option<InFlight>>,
    outstanding: usize,
    queue: TransmitQueue,
    stamps: Vec<TransmitStamp>,
    table: TransmitTable,
    latency: LeastLatency,
    /// The batch being answered: one entry per datagram queued, in order.
    batch: Vec<Queued>,
}

impl SentReplies {
    /// Turns on numbered transmit timestamps on `socket`.
    pub fn new(socket: &UdpSocket, capacity: usize) -> Self {
        let numbered = match enable_numbered_transmit_timestamps(socket) {
            Ok(()) => true,
            Err(error) => {
                debug!(%error, "no transmit timestamps on the serving socket: basic mode only, T3 read before the send");
                // Half enabled would queue timestamps nobody reads, in the
                // receive buffer's memory.
                let _ = disable_transmit_timestamps(socket);
                false
            }
        };
        Self {
            numbered,
            next_id: 0,
            in_flight: vec![None; IN_FLIGHT],
            outstanding: 0,
            queue: TransmitQueue::new(64),
            stamps: Vec::with_capacity(64),
            table: TransmitTable::new(capacity),
            latency: LeastLatency::default(),
            batch: Vec::with_capacity(64),
        }
    }

    /// `receive` made unique among the replies remembered and those of the
    /// batch being answered, to be a reply's T2 (two datagrams without a
    /// kernel timestamp share the time read for the batch).
    #[must_use]
    pub fn unique_receive(&self, receive: NtpTimestamp) -> NtpTimestamp {
        if !self.numbered {
            return receive;
        }
        let mut receive = self.table.unique_receive(receive);
        while self.batch.iter().filter_map(|queued| queued.reply).any(|(queued, _)| queued == receive) {
            receive = self.table.unique_receive(NtpTimestamp::from_bits(receive.to_bits().wrapping_add(1)));
        }
        receive
    }

    /// When the reply that carried `receive` to `client` left, if known.
    #[must_use]
    pub fn transmit_of(&self, receive: NtpTimestamp, client: IpAddr) -> Option<NtpTimestamp> {
        self.table.transmit_of(receive, client)
    }

    /// What a basic reply's T3 is moved on by: about the least send
    /// latency measured on this socket (zero until one is), so T3 is not
    /// later than the reply really leaves and no delay reads shorter than
    /// the wire's (see [`LeastLatency`]).
    #[must_use]
    pub fn transmit_latency(&self) -> NtpDuration {
        self.latency.estimate()
    }

    /// Notes the next datagram queued for the send: a reply carrying
    /// `receive` to `client` whose transmit time the client will ask for
    /// ([`ntp_proto::ReplyKind::to_remember`]), or (`None`) any other.
    /// It has just been pushed onto `replies`; it asks the kernel for its
    /// transmit timestamp ([`SendBatch::ask_transmit_timestamp`]) if it is
    /// one to remember or the batch's first, which measures the send
    /// latency. Returns whether it asked.
    pub fn queued(&mut self, replies: &mut SendBatch, reply: Option<(NtpTimestamp, IpAddr)>) -> bool {
        let asked = self.numbered && (reply.is_some() || self.batch.is_empty());
        if asked {
            replies.ask_transmit_timestamp();
        }
        self.batch.push(Queued { reply, asked });
        asked
    }

    /// Takes the timestamps that came back, if any are awaited.
    pub fn collect(&mut self, socket: &UdpSocket, snapshot: &ClockSnapshot) {
        if self.outstanding == 0 {
            return;
        }
        self.stamps.clear();
        if let Err(error) = self.queue.drain(socket, &mut self.stamps) {
            debug!(%error, "reading transmit timestamps failed");
            return;
        }
        for stamp in &self.stamps {
            let slot = &mut self.in_flight[stamp.id as usize % IN_FLIGHT];
            // A timestamp from before its datagram's T3 was read is another
            // datagram's, numbered before a restart and late to come back.
            let latency = stamp.sent - slot.map_or(stamp.sent, |sent| sent.read_for_transmit);
            let Some(sent) = slot.take_if(|sent| sent.id == stamp.id && latency >= NtpDuration::ZERO) else {
                continue;
            };
            self.outstanding -= 1;
            if let Some((receive, client)) = sent.reply {
                self.table.insert(receive, client, snapshot.served_at(stamp.sent));
            }
            if sent.first && latency < MAX_LATENCY {
                self.latency.add(latency);
            }
        }
    }

    /// Records the send of the batch noted with [`SentReplies::queued`]:
    /// `sent` of them taken by the kernel (`None`: the send failed), in
    /// one `sendmmsg` call or, `split`, more; T3 read at
    /// `read_for_transmit`. Then takes their timestamps. After a failed,
    /// partial or split send the kernel's count may include a datagram
    /// that never left, so the numbering is started again.
    pub fn sent(
        &mut self,
        socket: &UdpSocket,
        sent: Option<usize>,
        split: bool,
        read_for_transmit: NtpTimestamp,
        snapshot: &ClockSnapshot,
    ) {
        let queued = std::mem::take(&mut self.batch);
        if !self.numbered {
            self.batch = queued;
            self.batch.clear();
            return;
        }
        let count = sent.unwrap_or(0);
        for (n, queued) in queued.iter().take(count).enumerate().filter(|(_, queued)| queued.asked) {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            let slot = &mut self.in_flight[id as usize % IN_FLIGHT];
            if slot.is_some() {
                self.outstanding -= 1; // its timestamp never came
            }
            *slot = Some(InFlight { id, reply: queued.reply, read_for_transmit, first: n == 0 });
            self.outstanding += 1;
        }
        self.collect(socket, snapshot);
        if count < queued.len() || split {
            self.restart_numbering(socket);
        }
        self.batch = queued;
        self.batch.clear();
    }

    /// Basic mode only from now on: timestamps off, so none is queued
    /// unread in the receive buffer's memory.
    fn give_up(&mut self, socket: &UdpSocket) {
        if let Err(error) = disable_transmit_timestamps(socket) {
            tracing::warn!(%error, "transmit timestamps could not be switched off");
        }
        self.numbered = false;
        self.in_flight.iter_mut().for_each(|slot| *slot = None);
        self.outstanding = 0;
    }

    fn restart_numbering(&mut self, socket: &UdpSocket) {
        self.stamps.clear();
        let _ = self.queue.drain(socket, &mut self.stamps);
        self.in_flight.iter_mut().for_each(|slot| *slot = None);
        self.outstanding = 0;
        self.next_id = 0;
        if let Err(error) = enable_numbered_transmit_timestamps(socket) {
            debug!(%error, "transmit timestamps could not be restarted: basic mode only");
            self.give_up(socket);
        }
    }
}

/// The least of the last [`LATENCY_WINDOW`] send latencies measured, kept
/// as a sliding-window minimum (each sample enters and leaves the queue
/// once). A median would put T3 after the real send for every faster reply
/// (and a client that keeps its lowest-delay sample picks exactly those);
/// the least keeps T3 before it, so the error goes into a longer delay and
/// a few hundred nanoseconds of offset, never a shorter delay. A host that
/// became slower is followed once the faster samples have left the window;
/// a faster send pulls it down at once. Zero until [`LATENCY_WARM_UP`]
/// samples.
#[derive(Debug, Default)]
pub struct LeastLatency {
    /// Increasing values, each with the number of the sample it came from.
    window: VecDeque<(u64, NtpDuration)>,
    samples: u64,
}

impl LeastLatency {
    /// Takes one measured latency.
    pub fn add(&mut self, latency: NtpDuration) {
        while self.window.back().is_some_and(|&(_, kept)| kept >= latency) {
            self.window.pop_back();
        }
        self.window.push_back((self.samples, latency));
        self.samples += 1;
        while self.window.front().is_some_and(|&(n, _)| n + LATENCY_WINDOW < self.samples) {
            self.window.pop_front();
        }
    }

    /// The estimate.
    #[must_use]
    pub fn estimate(&self) -> NtpDuration {
        match self.window.front() {
            Some(&(_, least)) if self.samples >= u64::from(LATENCY_WARM_UP) => {
                least - NtpDuration::from_bits(least.to_bits() / LATENCY_GUARD)
            }
            _ => NtpDuration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_time_is_unique_within_the_batch_being_answered() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = SentReplies::new(&socket, 64);
        let t2 = NtpTimestamp::from_unix(1_800_000_000, 0);
        let client = IpAddr::from([192, 0, 2, 1]);
        // Two datagrams without kernel timestamps share the batch's time.
        assert_eq!(sent.unique_receive(t2), t2);
        let mut batch = SendBatch::new(4);
        assert!(sent.queued(&mut batch, Some((t2, client))), "a reply to remember asks for its timestamp");
        let second = sent.unique_receive(t2);
        assert_ne!(second, t2);
        assert!(sent.queued(&mut batch, Some((second, client))));
        let third = sent.unique_receive(t2);
        assert!(third != t2 && third != second);
    }

    #[test]
    fn a_batch_asks_for_its_first_timestamp_and_those_of_replies_to_remember() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = SentReplies::new(&socket, 64);
        let client = IpAddr::from([127, 0, 0, 1]);
        let config = crate::config::ServeConfig::merge(Default::default(), &Default::default()).unwrap();
        let snapshot = crate::daemon::primary_snapshot(&config, -20);
        let mut batch = SendBatch::new(8);
        let t2 = |n: u64| NtpTimestamp::from_bits(n);
        for round in 0..2u64 {
            // The first measures the latency; of the rest, only a reply
            // to remember asks.
            let mut asked = Vec::new();
            for reply in [None, None, Some((t2(round + 1), client))] {
                assert!(batch.push(to.local_addr().unwrap(), None, &[0; 48]));
                asked.push(sent.queued(&mut batch, reply));
            }
            assert_eq!(asked, [true, false, true], "round {round}");
            let read = crate::clock::SharedClock::system_now();
            let count = batch.send(&socket).unwrap();
            sent.sent(&socket, Some(count), batch.was_split(), read, &snapshot);
            assert_eq!(sent.outstanding, 0, "loopback stamps within the send: both came back");
        }
        assert!(sent.transmit_of(t2(1), client).is_some() && sent.transmit_of(t2(2), client).is_some());
    }

    #[test]
    fn the_estimate_is_the_least_of_the_window_after_the_warm_up() {
        let us = |n: i64| NtpDuration::from_nanos(n * 1000);
        let mut least = LeastLatency::default();
        // The first sends are the slowest: not used until the warm-up is
        // over.
        let first = [30, 12, 9, 10, 11, 10, 9];
        for n in 0..LATENCY_WARM_UP - 1 {
            least.add(us(first[n as usize % first.len()]));
            assert_eq!(least.estimate(), NtpDuration::ZERO);
        }
        least.add(us(10));
        let guarded = |n: i64| us(n) - NtpDuration::from_bits(us(n).to_bits() / LATENCY_GUARD);
        assert_eq!(least.estimate(), guarded(9));
        // A faster send pulls it down at once.
        least.add(us(4));
        assert_eq!(least.estimate(), guarded(4));
        // Slower ones raise it only once the fast one has left the window.
        for _ in 0..LATENCY_WINDOW - 1 {
            least.add(us(7));
        }
        assert_eq!(least.estimate(), guarded(4));
        least.add(us(7));
        assert_eq!(least.estimate(), guarded(7));
        assert!(least.window.len() <= 2, "one entry per distinct step: {}", least.window.len());
    }
}
