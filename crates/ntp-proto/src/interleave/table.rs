//! The server's memory of the replies it sent: for each, the receive
//! timestamp it carried (T2, unique, which the client's next interleaved
//! request names as its origin), the client it went to, and when the
//! kernel says it left. Bounded: at most a fixed number of entries, two-way
//! set associative (an entry competes with one other for its slot pair, and
//! the older of the two goes), so memory and time per request are bounded
//! and a flood of clients only costs the others their interleaved mode. It
//! starts small and doubles while three quarters of it are in use, up to
//! its bound, so a server with few clients keeps a few kilobytes.
//!
//! Unlike chrony, which keys by the receive timestamp alone, an entry is
//! only given to the address it was sent to: a request naming another
//! client's T2 gets a basic reply, not that client's transmit time.

use std::net::IpAddr;

use crate::time::NtpTimestamp;

/// Entries kept at most by default, as chrony's timestamp map at most
/// holds; about 640 KiB when full.
pub const DEFAULT_CAPACITY: usize = 16384;
/// Entries a table starts with.
const INITIAL_CAPACITY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    receive: NtpTimestamp,
    client: IpAddr,
    transmit: NtpTimestamp,
}

/// Receive timestamp and client of a reply sent, to its transmit time.
#[derive(Debug, Clone)]
pub struct TransmitTable {
    /// Pairs of slots; in each pair the first is the newer.
    slots: Vec<[Option<Entry>; 2]>,
    /// Slots in use.
    used: usize,
    /// Pairs it may grow to.
    max_pairs: usize,
}

impl Default for TransmitTable {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl TransmitTable {
    /// A table of at most about `capacity` entries (rounded up to an even
    /// power of two, at least two).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let max_pairs = (capacity.max(2) / 2).next_power_of_two();
        let pairs = max_pairs.min(INITIAL_CAPACITY / 2);
        Self { slots: vec![[None; 2]; pairs], used: 0, max_pairs }
    }

    /// Entries the table can hold now.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.slots.len() * 2
    }

    /// Entries the table may grow to.
    #[must_use]
    pub fn max_capacity(&self) -> usize {
        self.max_pairs * 2
    }

    fn grow(&mut self) {
        let grown = vec![[None; 2]; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, grown);
        self.used = 0;
        // Older entries first, so each pair keeps its newer one first.
        for entry in old.iter().flat_map(|pair| [pair[1], pair[0]]).flatten() {
            self.insert(entry.receive, entry.client, entry.transmit);
        }
    }

    fn pair(&self, receive: NtpTimestamp) -> usize {
        // The low bits of a receive timestamp are the fraction of a second:
        // spread evenly, and not chosen by the client.
        let bits = receive.to_bits();
        let mixed = (bits ^ (bits >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 32) as usize & (self.slots.len() - 1)
    }

    /// `receive`, moved on by the smallest steps until no entry holds it,
    /// so that every reply's T2 names one reply only (two requests can
    /// arrive within one tick, or at a time already used before a step).
    #[must_use]
    pub fn unique_receive(&self, mut receive: NtpTimestamp) -> NtpTimestamp {
        while self.slots[self.pair(receive)].iter().flatten().any(|e| e.receive == receive) {
            receive = NtpTimestamp::from_bits(receive.to_bits().wrapping_add(1));
        }
        receive
    }

    /// Remembers that the reply carrying `receive` went to `client` and
    /// left at `transmit` (on the served clock).
    pub fn insert(&mut self, receive: NtpTimestamp, client: IpAddr, transmit: NtpTimestamp) {
        if self.slots.len() < self.max_pairs && self.used * 4 >= self.capacity() * 3 {
            self.grow();
        }
        let index = self.pair(receive);
        let pair = &mut self.slots[index];
        let entry = Some(Entry { receive, client, transmit });
        match pair {
            [Some(newer), _] if newer.receive == receive => pair[0] = entry,
            // The older entry goes (or the same receive time, if it is that one).
            _ => {
                self.used += usize::from(pair[1].is_none());
                *pair = [entry, pair[0]];
            }
        }
    }

    /// When the reply carrying `receive` to `client` left, if remembered.
    #[must_use]
    pub fn transmit_of(&self, receive: NtpTimestamp, client: IpAddr) -> Option<NtpTimestamp> {
        if receive.is_zero() {
            return None;
        }
        self.slots[self.pair(receive)]
            .iter()
            .flatten()
            .find(|e| e.receive == receive && e.client == client)
            .map(|e| e.transmit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn t(bits: u64) -> NtpTimestamp {
        NtpTimestamp::from_bits(bits)
    }

    #[test]
    fn a_transmit_time_is_given_only_to_its_client() {
        let mut table = TransmitTable::new(8);
        table.insert(t(1000), A, t(2000));
        assert_eq!(table.transmit_of(t(1000), A), Some(t(2000)));
        assert_eq!(table.transmit_of(t(1000), B), None, "another client naming A's T2");
        assert_eq!(table.transmit_of(t(1001), A), None);
        assert_eq!(table.transmit_of(NtpTimestamp::ZERO, A), None);
    }

    #[test]
    fn receive_times_are_made_unique() {
        let mut table = TransmitTable::new(8);
        table.insert(t(1000), A, t(2000));
        assert_eq!(table.unique_receive(t(999)), t(999));
        assert_eq!(table.unique_receive(t(1000)), t(1001));
        table.insert(t(1001), B, t(2001));
        assert_eq!(table.unique_receive(t(1000)), t(1002));
        // Re-inserting the same receive time replaces, never duplicates.
        table.insert(t(1000), A, t(2002));
        assert_eq!(table.transmit_of(t(1000), A), Some(t(2002)));
    }

    #[test]
    fn it_grows_to_its_bound_keeping_what_it_holds() {
        let mut table = TransmitTable::new(DEFAULT_CAPACITY);
        assert_eq!((table.capacity(), table.max_capacity()), (INITIAL_CAPACITY, DEFAULT_CAPACITY));
        let step = 0x1_0000_0000u64 / 1_000_000; // a microsecond
        for n in 0..100_000u64 {
            table.insert(t((1 << 40) + n * step), A, t(n));
            if n == 99 {
                assert_eq!(table.capacity(), INITIAL_CAPACITY, "a hundred replies fit as it is");
            }
        }
        assert_eq!(table.capacity(), DEFAULT_CAPACITY);
        let newest = (99_900..100_000u64).filter(|n| table.transmit_of(t((1 << 40) + n * step), A).is_some()).count();
        assert!(newest >= 95, "the newest are kept through the growth: {newest}");
    }

    #[test]
    fn memory_is_bounded_and_the_newest_stay() {
        let mut table = TransmitTable::new(64);
        assert_eq!(table.capacity(), 64);
        let step = 0x1_0000_0000u64 / 1000; // a millisecond
        for n in 0..10_000u64 {
            table.insert(t((1 << 40) + n * step), A, t(n));
        }
        assert_eq!(table.slots.len(), 32);
        let kept = (0..10_000u64).filter(|n| table.transmit_of(t((1 << 40) + n * step), A).is_some()).count();
        assert!(kept <= 64, "{kept}");
        let newest = (9_990..10_000u64).filter(|n| table.transmit_of(t((1 << 40) + n * step), A).is_some()).count();
        assert!(newest >= 8, "most of the last ten kept: {newest}");
    }
}
