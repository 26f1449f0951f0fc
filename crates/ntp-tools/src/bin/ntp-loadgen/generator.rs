//! The load generator: K client sockets driven by one thread, each request
//! carrying a unique transmit timestamp so every reply's origin can be
//! matched and its round trip timed. Closed loop (a window of requests in
//! flight per socket) or open loop (a fixed total rate).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ntp_proto::clock::Clock as _;
use ntp_proto::packet::{write_transmit, Header, Mode, Version, HEADER_LEN};
use ntp_proto::{NtpDuration, NtpTimestamp};
use ntp_udp::{wait_readable, RecvBatch, SendBatch, SystemClock};

use crate::bad;
use crate::report::Tally;
use crate::RunArgs;

const BATCH: usize = 64;
/// Outstanding requests remembered per socket in open loop: a slot is
/// reused (and its request counted lost) after OPEN_LOOP_SLOTS × sockets
/// requests, which should be longer than LOSS_TIMEOUT at the rates used
/// (over a second at 200,000/s on 4 sockets), so a late reply still counts.
const OPEN_LOOP_SLOTS: usize = 65536;
/// Low bits of a request's transmit timestamp that name its slot.
const SLOT_BITS: u32 = 20;
/// A request unanswered this long is lost (and, in closed loop, replaced).
const LOSS_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u64,
    sent: Option<Instant>,
    /// Sent while measuring: counted in `sent`, so a loss counts too.
    measured: bool,
}

struct Flow {
    socket: UdpSocket,
    slots: Vec<Slot>,
}

struct Generator<'a> {
    args: &'a RunArgs,
    flows: Vec<Flow>,
    next_seq: u64,
    received: RecvBatch,
    requests: SendBatch,
    tally: Tally,
    measuring: bool,
    version: Version,
    /// Every request but its transmit timestamp (which names its slot).
    request: [u8; HEADER_LEN],
    expected_offset: NtpDuration,
    tolerance: NtpDuration,
    /// Bad datagrams owed to the mix (see `--bad-ratio`), and sent so far.
    bad_credit: f64,
    bad_seq: u64,
}

pub fn run(args: &RunArgs) -> std::io::Result<Tally> {
    let bind: SocketAddr = if args.server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse().expect("literal");
    let slots = if args.rate.is_some() { OPEN_LOOP_SLOTS } else { args.window };
    let flows = (0..args.sockets)
        .map(|_| {
            let socket = UdpSocket::bind(bind)?;
            socket.set_nonblocking(true)?;
            // The generator's own replies queue too: as much room as the server has.
            let _ = ntp_udp::set_receive_buffer(&socket, args.receive_buffer);
            Ok(Flow { socket, slots: vec![Slot::default(); slots] })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let version = if args.version == 3 { Version::V3 } else { Version::V4 };
    let mut generator = Generator {
        args,
        flows,
        next_seq: 1,
        received: RecvBatch::new(BATCH),
        // Room for a bad datagram after each valid one.
        requests: SendBatch::new(2 * BATCH),
        tally: Tally::default(),
        measuring: false,
        version,
        request: Header { version, mode: Mode::Client, poll: 6, ..Header::default() }.encode(),
        expected_offset: NtpDuration::from_seconds_f64(args.expect_offset),
        tolerance: NtpDuration::from_seconds_f64(args.tolerance),
        bad_credit: 0.0,
        bad_seq: 0,
    };
    match args.rate {
        Some(rate) => generator.open_loop(rate)?,
        None => generator.closed_loop()?,
    }
    Ok(generator.tally)
}

impl Generator<'_> {
    fn closed_loop(&mut self) -> std::io::Result<()> {
        for flow in 0..self.flows.len() {
            let slots: Vec<usize> = (0..self.args.window).collect();
            self.send(flow, &slots)?;
        }
        let start = Instant::now();
        let (measure_from, end) = self.window(start);
        let mut last_sweep = start;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.measuring = now >= measure_from;
            let mut any = false;
            for flow in 0..self.flows.len() {
                let answered = self.receive(flow)?;
                any |= !answered.is_empty();
                self.send(flow, &answered)?;
            }
            if now - last_sweep > Duration::from_millis(100) {
                last_sweep = now;
                for flow in 0..self.flows.len() {
                    let expired = self.expire(flow, now);
                    self.send(flow, &expired)?;
                }
            }
            if !any {
                let sockets: Vec<&UdpSocket> = self.flows.iter().map(|f| &f.socket).collect();
                wait_readable(&sockets, Duration::from_millis(10))?;
            }
        }
    }

    fn open_loop(&mut self, rate: f64) -> std::io::Result<()> {
        let start = Instant::now();
        let (measure_from, end) = self.window(start);
        let mut sent_total: u64 = 0;
        let mut next_flow = 0;
        let mut cursor = vec![0usize; self.flows.len()];
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.measuring = now >= measure_from;
            let due = ((now - start).as_secs_f64() * rate) as u64;
            while sent_total < due {
                let flow = next_flow;
                next_flow = (next_flow + 1) % self.flows.len();
                let slot = cursor[flow];
                cursor[flow] = (slot + 1) % OPEN_LOOP_SLOTS;
                let old = self.flows[flow].slots[slot];
                self.tally.lost += u64::from(old.sent.is_some() && old.measured);
                self.send(flow, &[slot])?;
                sent_total += 1;
            }
            for flow in 0..self.flows.len() {
                self.receive(flow)?;
            }
            std::hint::spin_loop();
        }
        // Replies still on their way are given the loss timeout to arrive.
        let drain_end = Instant::now() + LOSS_TIMEOUT;
        while Instant::now() < drain_end {
            for flow in 0..self.flows.len() {
                self.receive(flow)?;
            }
        }
        // What is still unanswered now is lost.
        let outstanding = self.flows.iter().flat_map(|f| &f.slots).filter(|s| s.sent.is_some() && s.measured).count();
        self.tally.lost += outstanding as u64;
        Ok(())
    }

    fn window(&self, start: Instant) -> (Instant, Instant) {
        let measure_from = start + Duration::from_secs_f64(self.args.warmup);
        (measure_from, measure_from + Duration::from_secs_f64(self.args.duration))
    }

    /// Sends a fresh request from each of `slots` of `flow`.
    fn send(&mut self, flow: usize, slots: &[usize]) -> std::io::Result<()> {
        for chunk in slots.chunks(BATCH) {
            let now = Instant::now();
            for &slot in chunk {
                // The slot rides in the low bits, so a reply finds it directly.
                let seq = (self.next_seq << SLOT_BITS) | slot as u64;
                self.next_seq += 1;
                self.flows[flow].slots[slot] = Slot { seq, sent: Some(now), measured: self.measuring };
                let mut request = self.request;
                write_transmit(&mut request, NtpTimestamp::from_bits(seq));
                let _ = self.requests.push(self.args.server, None, &request);
                self.bad_credit += self.args.bad_ratio;
                if self.bad_credit >= 1.0 {
                    self.bad_credit -= 1.0;
                    self.bad_seq += 1;
                    let _ = self.requests.push(self.args.server, None, &bad::datagram(self.bad_seq));
                    self.tally.bad_sent += u64::from(self.measuring);
                }
            }
            if self.measuring {
                self.tally.sent += chunk.len() as u64;
            }
            match self.requests.send(&self.flows[flow].socket) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what `flow` has received; returns the slots answered.
    fn receive(&mut self, flow: usize) -> std::io::Result<Vec<usize>> {
        let mut answered = Vec::new();
        loop {
            let count = match self.received.recv(&self.flows[flow].socket, false) {
                Ok(0) => return Ok(answered),
                Ok(count) => count,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(answered),
                Err(e) => return Err(e),
            };
            let arrived = Instant::now();
            let system_now = SystemClock.now();
            let slots = &mut self.flows[flow].slots;
            for datagram in self.received.iter() {
                // A proper reply to a request still outstanding in its slot.
                let reply =
                    valid_reply(datagram.payload, self.version, system_now + self.expected_offset, self.tolerance);
                let outstanding = reply.and_then(|seq| {
                    let index = (seq & ((1 << SLOT_BITS) - 1)) as usize;
                    let slot = slots.get_mut(index).filter(|slot| slot.seq == seq)?;
                    Some((index, slot.sent.take()?, slot.measured))
                });
                let Some((index, sent, measured)) = outstanding else {
                    self.tally.invalid += u64::from(self.measuring);
                    continue;
                };
                answered.push(index);
                if measured {
                    self.tally.valid += 1;
                    self.tally.latencies.push((arrived - sent).as_nanos().min(u128::from(u32::MAX)) as u32);
                }
            }
            if count < BATCH {
                return Ok(answered);
            }
        }
    }

    /// Slots of `flow` whose request went unanswered too long.
    fn expire(&mut self, flow: usize, now: Instant) -> Vec<usize> {
        let mut expired = Vec::new();
        for (index, slot) in self.flows[flow].slots.iter_mut().enumerate() {
            if slot.sent.is_some_and(|sent| now - sent > LOSS_TIMEOUT) {
                slot.sent = None;
                expired.push(index);
                self.tally.lost += u64::from(slot.measured);
            }
        }
        expired
    }
}

/// The request sequence number a reply answers, if it is a proper server
/// reply in our version whose receive and transmit times are ordered and
/// near `expected` (our clock plus the server's expected offset).
fn valid_reply(payload: &[u8], version: Version, expected: NtpTimestamp, tolerance: NtpDuration) -> Option<u64> {
    let reply = Header::decode(payload).ok()?;
    let sane = reply.mode == Mode::Server
        && reply.version == version
        && reply.stratum.is_synchronized()
        && !reply.receive.is_zero()
        && reply.transmit - reply.receive >= NtpDuration::ZERO
        && (reply.transmit - expected).abs() <= tolerance;
    sane.then(|| reply.origin.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::packet::Stratum;

    fn reply(version: Version, mode: Mode, t3: NtpTimestamp) -> Vec<u8> {
        let header = Header {
            version,
            mode,
            stratum: Stratum(1),
            origin: NtpTimestamp::from_bits(42),
            receive: t3 - NtpDuration::from_nanos(1000),
            transmit: t3,
            ..Header::default()
        };
        header.encode().to_vec()
    }

    #[test]
    fn only_proper_timely_replies_count() {
        let now = SystemClock.now();
        let tolerance = NtpDuration::from_seconds_f64(0.5);
        let check = |bytes: &[u8]| valid_reply(bytes, Version::V4, now, tolerance);
        assert_eq!(check(&reply(Version::V4, Mode::Server, now)), Some(42));
        assert_eq!(check(&reply(Version::V3, Mode::Server, now)), None, "wrong version");
        assert_eq!(check(&reply(Version::V4, Mode::Client, now)), None, "not a server reply");
        assert_eq!(check(&reply(Version::V4, Mode::Server, now + NtpDuration::from_seconds(2))), None, "wrong time");
        assert_eq!(check(&[0u8; 12]), None, "too short");
    }
}
