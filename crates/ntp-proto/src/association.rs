//! One upstream server as a client sees it (RFC 5905 §9 and §13): the
//! reachability register, the poll schedule with its start-up burst and
//! kiss-o'-death back-off, the clock filter, and what the server last said
//! about itself.

use crate::exchange::{ReplyError, Sample};
use crate::filter::{ClockFilter, FilterOutput};
use crate::packet::{Header, KissCode, LeapIndicator, ReferenceId, Stratum};
use crate::time::{NtpDuration, NtpShort, NtpTimestamp};

/// Exchanges in the start-up burst (like chrony's iburst).
pub const BURST_LEN: u8 = 4;

/// How an association polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// Shortest poll interval, log2 seconds.
    pub min_poll: i8,
    /// Longest poll interval, log2 seconds.
    pub max_poll: i8,
    /// Start with a burst of quick exchanges, and again whenever the server
    /// has become unreachable.
    pub iburst: bool,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self { min_poll: 6, max_poll: 10, iburst: true }
    }
}

/// What the server said about itself in its last good reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo {
    /// Leap indicator.
    pub leap: LeapIndicator,
    /// Its stratum.
    pub stratum: Stratum,
    /// Its precision exponent.
    pub precision: i8,
    /// Its root delay.
    pub root_delay: NtpShort,
    /// Its root dispersion.
    pub root_dispersion: NtpShort,
    /// What it is synchronized to.
    pub reference_id: ReferenceId,
}

impl ServerInfo {
    fn from_header(header: &Header) -> Self {
        Self {
            leap: header.leap,
            stratum: header.stratum,
            precision: header.precision,
            root_delay: header.root_delay,
            root_dispersion: header.root_dispersion,
            reference_id: header.reference_id,
        }
    }
}

/// The client side of one upstream server.
#[derive(Debug, Clone)]
pub struct Association {
    config: PollConfig,
    reach: u8,
    poll: i8,
    /// Extra poll exponent imposed by RATE kisses.
    backoff: i8,
    burst_left: u8,
    next_poll: NtpTimestamp,
    filter: ClockFilter,
    info: Option<ServerInfo>,
    stopped: Option<KissCode>,
    last_error: Option<ReplyError>,
    kind: AssociationKind,
}

/// A network server, or a reference clock with its selection options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssociationKind {
    /// An NTP server, polled over the network.
    #[default]
    Server,
    /// A reference clock (stratum 0): its samples come from a driver.
    Refclock {
        /// Chosen as system peer whenever it survives selection.
        prefer: bool,
        /// Shown, never selected.
        noselect: bool,
        /// Always true (chrony's `trust`): voted out only by other trusted
        /// sources, and the others must agree with the trusted ones.
        trust: bool,
    },
}

impl Association {
    /// A new association whose first poll is due at `now`.
    #[must_use]
    pub fn new(config: PollConfig, now: NtpTimestamp) -> Self {
        let max_poll = config.max_poll.max(config.min_poll);
        let config = PollConfig { max_poll, ..config };
        Self {
            config,
            reach: 0,
            poll: config.min_poll,
            backoff: 0,
            burst_left: if config.iburst { BURST_LEN } else { 0 },
            next_poll: now,
            filter: ClockFilter::new(),
            info: None,
            stopped: None,
            last_error: None,
            kind: AssociationKind::Server,
        }
    }

    /// A reference clock's association: it "polls" (takes what its driver
    /// read) every 2^`poll` s, the first due at `now`, without a burst.
    #[must_use]
    pub fn refclock(poll: i8, now: NtpTimestamp, kind: AssociationKind) -> Self {
        Self { kind, ..Self::new(PollConfig { min_poll: poll, max_poll: poll, iburst: false }, now) }
    }

    /// A server or a reference clock.
    #[must_use]
    pub fn kind(&self) -> AssociationKind {
        self.kind
    }

    /// When the next request is due, or `None` if the server told us to
    /// stop (DENY, RSTR).
    #[must_use]
    pub fn next_poll(&self) -> Option<NtpTimestamp> {
        self.stopped.is_none().then_some(self.next_poll)
    }

    /// The reachability register: bit 0 is the latest poll.
    #[must_use]
    pub fn reach(&self) -> u8 {
        self.reach
    }

    /// The poll exponent in force (log2 s), including any RATE back-off.
    #[must_use]
    pub fn poll(&self) -> i8 {
        (self.poll + self.backoff).clamp(self.config.min_poll, self.config.max_poll.saturating_add(self.backoff))
    }

    /// The kiss code that stopped this association, if any.
    #[must_use]
    pub fn stopped(&self) -> Option<KissCode> {
        self.stopped
    }

    /// What the server last said about itself.
    #[must_use]
    pub fn info(&self) -> Option<ServerInfo> {
        self.info
    }

    /// The clock filter's current output.
    #[must_use]
    pub fn output(&self) -> Option<FilterOutput> {
        self.filter.output()
    }

    /// Why the last reply was refused, if it was.
    #[must_use]
    pub fn last_error(&self) -> Option<ReplyError> {
        self.last_error
    }

    /// True when any of the last eight polls was answered.
    #[must_use]
    pub fn is_reachable(&self) -> bool {
        self.reach != 0
    }

    /// Sets the poll exponent the system asks for, within the bounds.
    pub fn set_poll(&mut self, poll: i8) {
        self.poll = poll.clamp(self.config.min_poll, self.config.max_poll);
    }

    /// Records that a request was sent at `now` and schedules the next.
    pub fn on_poll_sent(&mut self, now: NtpTimestamp) {
        let was_reachable = self.is_reachable();
        self.reach <<= 1;
        if was_reachable && !self.is_reachable() {
            // Eight silent polls: what the filter holds is stale.
            self.filter.clear();
            if self.config.iburst {
                self.burst_left = BURST_LEN;
            }
        }
        let interval = if self.burst_left > 0 {
            self.burst_left -= 1;
            // Burst spacing: 2 s as in ntpd and chrony, or the poll interval if shorter.
            NtpDuration::from_seconds_f64(2f64.powi(i32::from(self.config.min_poll)).min(2.0))
        } else {
            NtpDuration::from_seconds_f64(2f64.powi(i32::from(self.poll())))
        };
        self.next_poll = now + interval;
    }

    /// Takes a validated reply and its sample (offset in whatever frame the
    /// caller works in). Returns the filter's output when it has a new one;
    /// `warming_up` makes that the newest sample, `drift` is the frame's own
    /// rate of change (see [`ClockFilter::add`]).
    pub fn on_reply(
        &mut self,
        now: NtpTimestamp,
        header: &Header,
        sample: Sample,
        warming_up: bool,
        drift: f64,
    ) -> Option<FilterOutput> {
        self.on_sample(now, ServerInfo::from_header(header), sample, warming_up, drift)
    }

    /// Takes a sample whose source describes itself as `info` (a reference
    /// clock's, made up by its driver); see [`Association::on_reply`].
    pub fn on_sample(
        &mut self,
        now: NtpTimestamp,
        info: ServerInfo,
        sample: Sample,
        warming_up: bool,
        drift: f64,
    ) -> Option<FilterOutput> {
        self.reach |= 1;
        self.last_error = None;
        self.info = Some(info);
        self.filter.add(sample, now, warming_up, drift)
    }

    /// Takes a reply that failed validation. Kiss codes are obeyed: RATE
    /// doubles the poll interval, DENY and RSTR stop the association. An
    /// unsynchronized server still counts as reachable, but its state is
    /// recorded so it is not selected.
    pub fn on_reply_error(&mut self, header: &Header, error: ReplyError) {
        self.last_error = Some(error);
        match error {
            ReplyError::Kiss(code) if code.is_stop() => self.stopped = Some(code),
            ReplyError::Kiss(KissCode::Rate) => {
                self.backoff = (self.backoff + 1).min(4);
                self.burst_left = 0;
            }
            ReplyError::Unsynchronized { .. } => {
                self.reach |= 1;
                self.info = Some(ServerInfo::from_header(header));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Mode;

    fn t(s: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000, 0) + NtpDuration::from_seconds_f64(s)
    }

    fn reply() -> Header {
        Header { mode: Mode::Server, stratum: Stratum(1), ..Header::default() }
    }

    fn sample(at: f64) -> Sample {
        Sample {
            offset: NtpDuration::ZERO,
            delay: NtpDuration::from_seconds_f64(1e-4),
            dispersion: NtpDuration::from_seconds_f64(1e-6),
            time: t(at),
        }
    }

    #[test]
    fn burst_then_poll_interval() {
        let mut assoc = Association::new(PollConfig { min_poll: 4, max_poll: 6, iburst: true }, t(0.0));
        assert_eq!(assoc.next_poll(), Some(t(0.0)));
        let mut now = 0.0;
        for _ in 0..BURST_LEN {
            assoc.on_poll_sent(t(now));
            now += 2.0;
            assert_eq!(assoc.next_poll(), Some(t(now)));
        }
        assoc.on_poll_sent(t(now));
        assert_eq!(assoc.next_poll(), Some(t(now + 16.0)));
    }

    #[test]
    fn reach_register_shifts_and_counts_replies() {
        let mut assoc = Association::new(PollConfig { min_poll: 0, max_poll: 0, iburst: false }, t(0.0));
        assoc.on_poll_sent(t(0.0));
        assert!(assoc.on_reply(t(0.1), &reply(), sample(0.1), false, 0.0).is_some());
        assert_eq!(assoc.reach(), 1);
        for i in 1..=3 {
            assoc.on_poll_sent(t(f64::from(i)));
        }
        assert_eq!(assoc.reach(), 0b1000);
        for i in 4..=8 {
            assoc.on_poll_sent(t(f64::from(i)));
        }
        assert!(!assoc.is_reachable());
        assert!(assoc.output().is_none(), "a stale filter is cleared");
    }

    #[test]
    fn kiss_codes_are_obeyed() {
        let mut assoc = Association::new(PollConfig { min_poll: 2, max_poll: 6, iburst: false }, t(0.0));
        assoc.on_reply_error(&reply(), ReplyError::Kiss(KissCode::Rate));
        assert_eq!(assoc.poll(), 3);
        assoc.on_reply_error(&reply(), ReplyError::Kiss(KissCode::Deny));
        assert_eq!(assoc.next_poll(), None);
        assert_eq!(assoc.stopped(), Some(KissCode::Deny));
    }

    #[test]
    fn poll_follows_the_system_within_bounds() {
        let mut assoc = Association::new(PollConfig { min_poll: 1, max_poll: 4, iburst: false }, t(0.0));
        assoc.set_poll(9);
        assert_eq!(assoc.poll(), 4);
        assoc.set_poll(-3);
        assert_eq!(assoc.poll(), 1);
    }
}
