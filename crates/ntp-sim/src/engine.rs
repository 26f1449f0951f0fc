//! The discrete-event engine: nodes running the daemon's own `ntp-proto`
//! code (packet encode/decode, responder, synchronizer: filter, selection,
//! discipline), exchanging real 48-byte packets over simulated links, in
//! simulated time. Deterministic: one seeded generator draws everything,
//! and events at the same instant run in the order they were scheduled.
//!
//! Leap seconds are taken as the daemon takes them, with a
//! `LeapSchedule` per node over its continuous (disciplined) clock: it
//! serves `served`, advertises `advertised`, measures its upstreams with
//! the raw clock shifted by `measured_offset`, drops exchanges near the
//! leap, and follows its system's vote (or, for a reference, the
//! scenario's leap) after every clock update and every second.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use ntp_proto::association::PollConfig;
use ntp_proto::clock::DisciplinedClock;
use ntp_proto::discipline::DisciplineConfig;
use ntp_proto::exchange::Timestamps;
use ntp_proto::leap::{LeapMode, LeapSchedule};
use ntp_proto::packet::{write_transmit, Header, LeapIndicator, Mode, ReferenceId, Stratum, Version};
use ntp_proto::request::{Refusal, SentRequest};
use ntp_proto::responder::{respond, Admission, Response, ServerState};
use ntp_proto::synchronizer::{ReplyOutcome, Synchronizer};
use ntp_proto::system::SystemConfig;
use ntp_proto::{NtpDuration, NtpTimestamp};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::scenario::{Action, Distribution, LeapChoice, LinkParams, NodeKind, NodePlan, Scenario};

/// Precision every simulated clock claims (about 1 µs).
const PRECISION: i8 = -20;
/// Time a server takes between receive and transmit.
const PROCESSING: f64 = 5e-6;
/// How often oscillators wander, seconds.
const WANDER_STEP: f64 = 16.0;
/// How often nodes look at their leap schedule, seconds (as the daemon's
/// leap-file check does).
const LEAP_TICK: f64 = 1.0;

/// One row of a node's time series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    /// Simulated seconds since the start.
    pub time: f64,
    /// Served time minus true UTC, seconds. Across a leap second the step
    /// of UTC is taken at the node's own continuous reading, so a stepping
    /// node a microsecond behind true time is not a second off in between.
    pub offset: f64,
    /// Total frequency error of the served clock, ppm.
    pub frequency_ppm: f64,
    /// Stratum advertised (0 while unsynchronized).
    pub stratum: u8,
    /// Served time, seconds since the start's UTC.
    pub served: f64,
    /// Leap indicator advertised.
    pub leap: LeapIndicator,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The request, for the reply's check (by server index).
    request: SentRequest<usize>,
    t1: NtpTimestamp,
    /// Whether T1 was read within a second of the leap.
    near_leap: bool,
}

#[derive(Debug)]
struct Node {
    plan: NodePlan,
    clock: DisciplinedClock,
    sync: Option<Synchronizer>,
    pending: Vec<Option<Pending>>,
    alive: bool,
    lie: NtpDuration,
    /// The leap pending and taken: what is served and measured.
    schedule: LeapSchedule,
    /// A leap indicator advertised whatever the schedule says.
    false_leap: Option<LeapIndicator>,
    /// Bumped on every reschedule, so stale poll events are dropped.
    epoch: u64,
    /// Bumped on every (re)start, so replies to a previous daemon are dropped.
    restarts: u64,
    series: Vec<Record>,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Poll { node: usize, epoch: u64 },
    Request { server: usize, client: usize, association: usize, bytes: [u8; 48] },
    Reply { server: usize, client: usize, association: usize, bytes: [u8; 48], epoch: u64 },
    Record,
    Wander,
    LeapTick,
    Scenario(usize),
}

/// A running simulation.
#[derive(Debug)]
pub struct Simulation<'a> {
    scenario: &'a Scenario,
    start: NtpTimestamp,
    now: NtpDuration,
    end: NtpDuration,
    queue: BinaryHeap<Reverse<(NtpDuration, u64, usize)>>,
    events: Vec<Option<Event>>,
    seq: u64,
    nodes: Vec<Node>,
    links: Vec<(usize, usize, LinkParams)>,
    rng: ChaCha8Rng,
    /// True UTC: true continuous time through a step at the real leap.
    truth: LeapSchedule,
    /// Events processed, for the events-per-second figure.
    pub processed: u64,
}

impl<'a> Simulation<'a> {
    /// Sets up `plans` (expanded from `scenario`) to run for `duration` seconds.
    pub fn new(scenario: &'a Scenario, plans: Vec<NodePlan>, duration: f64, rng: ChaCha8Rng) -> Self {
        let start = scenario.timeline.start;
        let mut truth = LeapSchedule::new(LeapMode::Step);
        let _ = truth.expect(scenario.timeline.leap, start);
        let mut sim = Self {
            scenario,
            start,
            now: NtpDuration::ZERO,
            end: NtpDuration::from_seconds_f64(duration),
            queue: BinaryHeap::new(),
            events: Vec::new(),
            seq: 0,
            nodes: Vec::new(),
            links: Vec::new(),
            rng,
            truth,
            processed: 0,
        };
        for plan in plans {
            let clock = DisciplinedClock::new(start, NtpDuration::from_seconds_f64(plan.offset), plan.frequency_ppm);
            let node = Node {
                pending: vec![None; plan.upstreams.len()],
                sync: None,
                clock,
                alive: true,
                lie: NtpDuration::ZERO,
                schedule: LeapSchedule::new(plan.leap_mode),
                false_leap: None,
                epoch: 0,
                restarts: 0,
                series: Vec::new(),
                plan,
            };
            sim.nodes.push(node);
        }
        for i in 0..sim.nodes.len() {
            sim.start_daemon(i);
        }
        // A reference that knows of the leap from the start (its leap file),
        // or announces a false one, does so in the first record too.
        for (i, event) in scenario.events.iter().enumerate() {
            if matches!(event.action, Action::Leap | Action::AnnounceLeap) && event.at == 0.0 {
                sim.apply(i);
            }
        }
        sim.schedule(NtpDuration::ZERO, Event::Record);
        if sim.nodes.iter().any(|n| n.plan.wander_ppm > 0.0) {
            sim.schedule(NtpDuration::from_seconds_f64(WANDER_STEP), Event::Wander);
        }
        if scenario.has_leap_events() {
            sim.schedule(NtpDuration::ZERO, Event::LeapTick);
        }
        for (i, event) in scenario.events.iter().enumerate() {
            sim.schedule(NtpDuration::from_seconds_f64(event.at), Event::Scenario(i));
        }
        sim.links = scenario
            .links
            .iter()
            .flat_map(|l| {
                let params = l.params.over(scenario.defaults.link);
                let clients = super::scenario::resolve(&sim.plans(), scenario, &l.client);
                let servers = super::scenario::resolve(&sim.plans(), scenario, &l.server);
                clients.into_iter().flat_map(move |c| servers.clone().into_iter().map(move |s| (c, s, params)))
            })
            .collect();
        sim
    }

    fn plans(&self) -> Vec<NodePlan> {
        self.nodes.iter().map(|n| n.plan.clone()).collect()
    }

    /// Nodes' names and time series.
    pub fn results(&self) -> impl Iterator<Item = (&NodePlan, &[Record])> {
        self.nodes.iter().map(|n| (&n.plan, n.series.as_slice()))
    }

    /// Runs until the end, calling `progress` with the simulated seconds
    /// done at every record.
    pub fn run(&mut self, mut progress: impl FnMut(f64)) {
        while let Some(Reverse((at, _, slot))) = self.queue.pop() {
            if at > self.end {
                break;
            }
            self.now = at;
            let Some(event) = self.events[slot].take() else { continue };
            self.processed += 1;
            match event {
                Event::Poll { node, epoch } => self.poll(node, epoch),
                Event::Request { server, client, association, bytes } => {
                    self.answer(server, client, association, bytes)
                }
                Event::Reply { server, client, association, bytes, epoch } => {
                    self.receive(server, client, association, &bytes, epoch);
                }
                Event::Record => {
                    self.record();
                    progress(self.now.to_seconds_f64());
                    let next = self.now + NtpDuration::from_seconds_f64(self.scenario.simulation.record_interval);
                    self.schedule(next, Event::Record);
                }
                Event::Wander => self.wander(),
                Event::LeapTick => {
                    for i in 0..self.nodes.len() {
                        self.follow_leap(i);
                    }
                    self.schedule(self.now + NtpDuration::from_seconds_f64(LEAP_TICK), Event::LeapTick);
                }
                Event::Scenario(i) => self.apply(i),
            }
        }
    }

    fn schedule(&mut self, at: NtpDuration, event: Event) {
        self.seq += 1;
        let slot = self.events.len();
        self.events.push(Some(event));
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    fn true_time(&self) -> NtpTimestamp {
        self.start + self.now
    }

    fn start_daemon(&mut self, i: usize) {
        let raw = self.nodes[i].clock.raw_at(self.true_time());
        let node = &mut self.nodes[i];
        node.restarts += 1;
        node.pending = vec![None; node.plan.upstreams.len()];
        if node.plan.kind == NodeKind::Reference {
            return;
        }
        let poll = node.plan.poll;
        let config = SystemConfig {
            discipline: DisciplineConfig { min_poll: poll.min, max_poll: poll.max, ..DisciplineConfig::default() },
            precision: PRECISION,
            ..SystemConfig::default()
        };
        let ids: Vec<ReferenceId> = node.plan.upstreams.iter().map(|&u| node_reference_id(u)).collect();
        let mut sync =
            Synchronizer::new(config, PollConfig { min_poll: poll.min, max_poll: poll.max, iburst: true }, &ids, raw);
        sync.set_own_reference_ids(vec![node_reference_id(i)]);
        node.sync = Some(sync);
        self.reschedule_poll(i);
    }

    fn reschedule_poll(&mut self, i: usize) {
        let raw_now = self.nodes[i].clock.raw_at(self.true_time());
        let node = &mut self.nodes[i];
        let Some((_, due)) = node.sync.as_ref().and_then(Synchronizer::next_poll) else { return };
        node.epoch += 1;
        let epoch = node.epoch;
        let wait = (due - raw_now).max(NtpDuration::ZERO);
        self.schedule(self.now + wait, Event::Poll { node: i, epoch });
    }

    fn poll(&mut self, i: usize, epoch: u64) {
        if !self.nodes[i].alive || self.nodes[i].epoch != epoch {
            return;
        }
        let true_now = self.true_time();
        let nonce = NtpTimestamp::from_bits(self.rng.gen());
        let node = &mut self.nodes[i];
        let raw_now = node.clock.raw_at(true_now);
        let continuous = node.clock.time_at(true_now);
        let Some(sync) = node.sync.as_mut() else { return };
        let Some((association, _)) = sync.next_poll() else { return };
        sync.poll_sent(association, raw_now);
        let poll = sync.associations().nth(association).map_or(0, |a| a.poll());
        // T1 and T4 are read from the raw clock (see Synchronizer::on_reply),
        // shifted by the leaps as an upstream that steps sees them.
        let server = node.plan.upstreams[association];
        let t1 = raw_now + node.schedule.measured_offset(continuous);
        let near_leap = node.schedule.near_leap(continuous, NtpDuration::ONE_SECOND);
        let request = SentRequest { server, transmit: nonce, interleaved: None };
        node.pending[association] = Some(Pending { request, t1, near_leap });
        let request = Header { version: Version::V4, mode: Mode::Client, poll, transmit: nonce, ..Header::default() };
        let link = self.link(i, server);
        if let Some(delay) = self.traverse(&link, 0.0) {
            let bytes = request.encode();
            self.schedule(self.now + delay, Event::Request { server, client: i, association, bytes });
        }
        self.reschedule_poll(i);
    }

    fn answer(&mut self, s: usize, client: usize, association: usize, bytes: [u8; 48]) {
        if !self.nodes[s].alive {
            return;
        }
        let receive_true = self.true_time();
        let server = &self.nodes[s];
        let t2 = server.schedule.served(server.clock.time_at(receive_true)) + server.lie;
        let state = self.server_state(s, receive_true);
        let Response::Reply { bytes: mut reply, kind } = respond(&bytes, t2, &state, Admission::Serve) else { return };
        let server = &self.nodes[s];
        let send_true = receive_true + NtpDuration::from_seconds_f64(PROCESSING);
        if kind.to_stamp() {
            write_transmit(&mut reply, server.schedule.served(server.clock.time_at(send_true)) + server.lie);
        }
        let epoch = self.nodes[client].restarts;
        let link = self.link(client, s);
        if let Some(delay) = self.traverse(&link, link.asymmetry) {
            let at = self.now + NtpDuration::from_seconds_f64(PROCESSING) + delay;
            self.schedule(at, Event::Reply { server: s, client, association, bytes: reply, epoch });
        }
    }

    fn receive(&mut self, from: usize, i: usize, association: usize, bytes: &[u8], epoch: u64) {
        let true_now = self.true_time();
        let node = &mut self.nodes[i];
        if !node.alive || node.restarts != epoch {
            return;
        }
        let Some(pending) = node.pending.get(association).copied().flatten() else { return };
        // Judged as the daemon's exchange judges it: what is not the answer
        // is ignored and the request still waits; the answer, usable or not
        // (a kiss), ends it and goes to the synchronizer.
        let reply = match pending.request.accept(from, bytes) {
            Ok(reply) => reply,
            Err(Refusal::Unusable { reply, .. }) => *reply,
            Err(_) => return,
        };
        node.pending[association] = None;
        let raw_now = node.clock.raw_at(true_now);
        let continuous = node.clock.time_at(true_now);
        // An exchange within a second of the leap may straddle our step
        // or the upstream's: the daemon drops it, and so do we.
        if pending.near_leap || node.schedule.near_leap(continuous, NtpDuration::ONE_SECOND) {
            return;
        }
        let t4 = raw_now + node.schedule.measured_offset(continuous);
        let timestamps = Timestamps { t1: pending.t1, t2: reply.receive, t3: reply.transmit, t4 };
        let Some(sync) = node.sync.as_mut() else { return };
        let out = sync.on_reply(association, &mut node.clock, raw_now, &reply, pending.request.transmit, &timestamps);
        if std::env::var("SIMDEBUG").is_ok_and(|n| n == node.plan.name) {
            eprintln!(
                "{:.1} assoc {association} err {:.6} {:?}",
                self.now.to_seconds_f64(),
                (node.clock.time_at(true_now) - true_now).to_seconds_f64(),
                out
            );
        }
        if matches!(out, ReplyOutcome::Accepted(Some(_))) {
            self.follow_leap(i);
        }
    }

    /// What the daemon does after a clock update and every second: a node
    /// with upstreams schedules the leap its system process passes on (the
    /// majority vote), and every node settles a leap it has taken. A
    /// stopped daemon does neither.
    fn follow_leap(&mut self, i: usize) {
        let true_now = self.true_time();
        let node = &mut self.nodes[i];
        if !node.alive {
            return;
        }
        let continuous = node.clock.time_at(true_now);
        if let Some(sync) = &node.sync {
            let announced = sync.server_state(node.clock.raw_at(true_now)).leap;
            let _ = node.schedule.follow(announced, continuous);
        }
        let _ = node.schedule.settle(continuous);
    }

    fn server_state(&self, i: usize, true_now: NtpTimestamp) -> ServerState {
        let node = &self.nodes[i];
        let continuous = node.clock.time_at(true_now);
        let state = match &node.sync {
            Some(sync) => sync.server_state(node.clock.raw_at(true_now)),
            None => ServerState::primary(Stratum::PRIMARY, PRECISION, ReferenceId(*b"GPS\0"), continuous + node.lie),
        };
        let state = node.schedule.advertised(state, continuous);
        match node.false_leap {
            Some(leap) if state.leap != LeapIndicator::Unsynchronized => ServerState { leap, ..state },
            _ => state,
        }
    }

    fn link(&self, client: usize, server: usize) -> LinkParams {
        self.links
            .iter()
            .rev()
            .find(|(c, s, _)| *c == client && *s == server)
            .map_or(self.scenario.defaults.link, |(_, _, params)| *params)
    }

    /// The one-way delay of a packet over `link` (plus `extra`), or `None`
    /// when it is lost.
    fn traverse(&mut self, link: &LinkParams, extra: f64) -> Option<NtpDuration> {
        if link.loss > 0.0 && self.rng.gen::<f64>() < link.loss {
            return None;
        }
        let jitter = match link.jitter_distribution {
            _ if link.jitter == 0.0 => 0.0,
            Distribution::Exponential => -link.jitter * (1.0 - self.rng.gen::<f64>()).ln(),
            Distribution::Uniform => self.rng.gen_range(0.0..2.0 * link.jitter),
            Distribution::Normal => (standard_normal(&mut self.rng) * link.jitter).abs(),
        };
        Some(NtpDuration::from_seconds_f64(link.delay + extra + jitter))
    }

    fn record(&mut self) {
        let true_now = self.true_time();
        let time = self.now.to_seconds_f64();
        for i in 0..self.nodes.len() {
            let state = self.server_state(i, true_now);
            let node = &mut self.nodes[i];
            let continuous = node.clock.time_at(true_now);
            let served = node.schedule.served(continuous) + node.lie;
            // Served minus true UTC, the leap's step judged at the node's
            // own continuous reading (see Record::offset).
            let offset = ((served - self.truth.served(continuous)) + (continuous - true_now)).to_seconds_f64();
            let frequency_ppm = node.clock.oscillator.frequency_ppm() + node.clock.correction.frequency_ppm();
            let served = (served - self.start).to_seconds_f64();
            node.series.push(Record {
                time,
                offset,
                frequency_ppm,
                stratum: state.stratum.0,
                served,
                leap: state.leap,
            });
        }
    }

    fn wander(&mut self) {
        let true_now = self.true_time();
        for i in 0..self.nodes.len() {
            let wander = self.nodes[i].plan.wander_ppm;
            if wander > 0.0 {
                let step = standard_normal(&mut self.rng) * wander * WANDER_STEP.sqrt();
                self.nodes[i].clock.oscillator.adjust_frequency(true_now, step);
            }
        }
        self.schedule(self.now + NtpDuration::from_seconds_f64(WANDER_STEP), Event::Wander);
    }

    fn apply(&mut self, index: usize) {
        let event = &self.scenario.events[index];
        let plans = self.plans();
        match event.action {
            Action::SetLink => {
                let (Some(client), Some(server)) = (&event.client, &event.server) else { return };
                let clients = super::scenario::resolve(&plans, self.scenario, client);
                let servers = super::scenario::resolve(&plans, self.scenario, server);
                for &c in &clients {
                    for &s in &servers {
                        let params = event.link.over(self.link(c, s));
                        self.links.push((c, s, params));
                    }
                }
            }
            action => {
                let targets = event
                    .node
                    .as_deref()
                    .map(|n| super::scenario::resolve(&plans, self.scenario, n))
                    .unwrap_or_default();
                for i in targets {
                    match action {
                        Action::Stop => self.nodes[i].alive = false,
                        Action::Restart => {
                            self.nodes[i].alive = true;
                            self.start_daemon(i);
                        }
                        Action::Lie => self.nodes[i].lie = NtpDuration::from_seconds_f64(event.offset.unwrap_or(0.0)),
                        Action::Leap => {
                            let continuous = self.nodes[i].clock.time_at(self.true_time());
                            let _ = self.nodes[i].schedule.expect(self.scenario.timeline.leap, continuous);
                        }
                        Action::AnnounceLeap => {
                            self.nodes[i].false_leap = match event.kind {
                                Some(LeapChoice::Insert) => Some(LeapIndicator::Insert),
                                Some(LeapChoice::Delete) => Some(LeapIndicator::Delete),
                                Some(LeapChoice::None) | None => None,
                            };
                        }
                        Action::SetLink => {}
                    }
                }
            }
        }
    }
}

/// The reference ID of node `i`: an address in 10.0.0.0/8 by its index,
/// as if each node had one.
fn node_reference_id(i: usize) -> ReferenceId {
    let bytes = (i as u32 + 1).to_be_bytes();
    ReferenceId([10, bytes[1], bytes[2], bytes[3]])
}

/// A standard normal deviate (Box-Muller), from two uniform draws.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
