//! The simulation scenario file: its TOML schema (strict: unknown keys are
//! errors naming the key), its validation, and its expansion into concrete
//! nodes, links and events with every random choice drawn from the seed.

use std::collections::BTreeMap;
use std::path::Path;

use ntp_proto::leap::{LeapKind, LeapMode, LeapSmear};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use thiserror::Error;

use super::timeline::{LeapEvent, Timeline};

/// Why a scenario cannot be run.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped key.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value is impossible; the message names the key.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

fn invalid<T>(message: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::Invalid(message.into()))
}

/// A scenario as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    /// Run settings.
    pub simulation: SimulationSection,
    /// Defaults for links and polling.
    #[serde(default)]
    pub defaults: Defaults,
    /// The nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeSpec>,
    /// Links that differ from the default.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
    /// Things that happen at given times.
    #[serde(default, rename = "event")]
    pub events: Vec<EventSpec>,
    /// The start in UTC and the real leap, read from the above.
    #[serde(skip)]
    pub timeline: Timeline,
}

/// `[simulation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SimulationSection {
    /// Simulated seconds to run.
    pub duration: f64,
    /// Seed of every random draw.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Seconds between rows of the time series.
    #[serde(default = "default_record_interval")]
    pub record_interval: f64,
    /// Optional title for the plot and summary.
    #[serde(default)]
    pub title: Option<String>,
    /// UTC at simulated second 0, RFC 3339 (`2016-12-31T23:30:00Z`);
    /// 2026-01-01 00:00:00 UTC by default.
    #[serde(default)]
    pub start: Option<String>,
    /// The same as seconds since 1970 (UTC, leap seconds not counted).
    #[serde(default)]
    pub start_unix: Option<i64>,
}

fn default_seed() -> u64 {
    1
}

fn default_record_interval() -> f64 {
    1.0
}

/// `[defaults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Defaults {
    /// The link every client/upstream pair has unless a `[[link]]` says otherwise.
    #[serde(default)]
    pub link: LinkParams,
    /// Poll bounds of every node unless it says otherwise.
    #[serde(default)]
    pub poll: PollSpec,
}

/// How a node polls.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PollSpec {
    /// Minimum poll exponent (log2 s).
    pub min: i8,
    /// Maximum poll exponent (log2 s).
    pub max: i8,
}

impl Default for PollSpec {
    fn default() -> Self {
        Self { min: 4, max: 6 }
    }
}

/// The kinds of node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    /// A perfect stratum 1 clock (a GPS receiver, say).
    Reference,
    /// Synchronizes to upstreams and serves others.
    Server,
    /// Synchronizes to upstreams; nobody uses it.
    Client,
}

/// A number, or a `[low, high]` range drawn uniformly per node.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// Exactly this.
    Fixed(f64),
    /// Uniform in the range.
    Range([f64; 2]),
}

impl Default for Value {
    fn default() -> Self {
        Self::Fixed(0.0)
    }
}

impl Value {
    fn draw(self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Self::Fixed(v) => v,
            Self::Range([low, high]) if high > low => rng.gen_range(low..high),
            Self::Range([low, _]) => low,
        }
    }

    fn is_finite(self) -> bool {
        match self {
            Self::Fixed(v) => v.is_finite(),
            Self::Range([a, b]) => a.is_finite() && b.is_finite() && a <= b,
        }
    }
}

/// A node's local oscillator.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClockSpec {
    /// Initial offset from true time, seconds.
    #[serde(default)]
    pub offset: Value,
    /// Frequency error, ppm.
    #[serde(default)]
    pub frequency_ppm: Value,
    /// Random-walk frequency wander: the standard deviation of the
    /// frequency change over one second, in ppm (scaled by √dt).
    #[serde(default)]
    pub wander_ppm: f64,
}

/// `[[node]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeSpec {
    /// Name; with `count`, the nodes are `name-1` … `name-N`.
    pub name: String,
    /// What it is.
    pub kind: NodeKind,
    /// How many identical nodes (default 1).
    #[serde(default)]
    pub count: Option<usize>,
    /// Names of upstream nodes or groups.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Use only this many of the upstreams, drawn per node.
    #[serde(default)]
    pub pick: Option<usize>,
    /// The oscillator.
    #[serde(default)]
    pub clock: ClockSpec,
    /// Poll bounds, overriding the default.
    #[serde(default)]
    pub poll: Option<PollSpec>,
    /// Smear a leap over this many seconds instead of stepping
    /// (`--leap-smear`); such a node never announces the leap.
    #[serde(default)]
    pub leap_smear: Option<u32>,
}

/// How a link treats packets.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LinkParams {
    /// One-way base delay, seconds.
    #[serde(default = "default_delay")]
    pub delay: f64,
    /// Scale of the random extra delay, seconds.
    #[serde(default)]
    pub jitter: f64,
    /// Its distribution.
    #[serde(default)]
    pub jitter_distribution: Distribution,
    /// Extra delay on the way back (server to client), seconds.
    #[serde(default)]
    pub asymmetry: f64,
    /// Probability that a packet is lost, each way.
    #[serde(default)]
    pub loss: f64,
}

fn default_delay() -> f64 {
    0.001
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            delay: default_delay(),
            jitter: 0.0,
            jitter_distribution: Distribution::Exponential,
            asymmetry: 0.0,
            loss: 0.0,
        }
    }
}

/// Random extra delay: exponential (mean = jitter, queueing-like),
/// uniform (0..2·jitter) or half-normal (σ = jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Exponential with mean `jitter`.
    #[default]
    Exponential,
    /// Uniform on `0..2·jitter`.
    Uniform,
    /// |N(0, jitter)|.
    Normal,
}

/// `[[link]]`: the link between a client and one of its upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LinkSpec {
    /// The polling side (node or group name).
    pub client: String,
    /// The answering side (node or group name).
    pub server: String,
    /// Its parameters (unset ones from the default link).
    #[serde(flatten)]
    pub params: PartialLink,
}

/// Link parameters where any may be left to the default.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PartialLink {
    /// See [`LinkParams::delay`].
    pub delay: Option<f64>,
    /// See [`LinkParams::jitter`].
    pub jitter: Option<f64>,
    /// See [`LinkParams::jitter_distribution`].
    pub jitter_distribution: Option<Distribution>,
    /// See [`LinkParams::asymmetry`].
    pub asymmetry: Option<f64>,
    /// See [`LinkParams::loss`].
    pub loss: Option<f64>,
}

impl PartialLink {
    /// These values over `base`.
    pub fn over(self, base: LinkParams) -> LinkParams {
        LinkParams {
            delay: self.delay.unwrap_or(base.delay),
            jitter: self.jitter.unwrap_or(base.jitter),
            jitter_distribution: self.jitter_distribution.unwrap_or(base.jitter_distribution),
            asymmetry: self.asymmetry.unwrap_or(base.asymmetry),
            loss: self.loss.unwrap_or(base.loss),
        }
    }
}

/// `[[event]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventSpec {
    /// Simulated time, seconds.
    pub at: f64,
    /// What happens.
    pub action: Action,
    /// The node (or group) it happens to, for node actions.
    #[serde(default)]
    pub node: Option<String>,
    /// For `lie`: how far its answers are off, seconds.
    #[serde(default)]
    pub offset: Option<f64>,
    /// For `set-link`: the client side.
    #[serde(default)]
    pub client: Option<String>,
    /// For `set-link`: the server side.
    #[serde(default)]
    pub server: Option<String>,
    /// For `leap`: which way; for `announce-leap`: what to announce.
    #[serde(default)]
    pub kind: Option<LeapChoice>,
    /// For `leap`: the midnight it completes at, RFC 3339 (00:00:00 UTC of
    /// a month's first day); the next one after the event by default.
    #[serde(default)]
    pub leap_at: Option<String>,
    /// For `set-link`: the new parameters.
    #[serde(default, flatten)]
    pub link: PartialLink,
}

/// A leap second's direction in an event, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeapChoice {
    /// 23:59:60 inserted (leap indicator 1).
    Insert,
    /// 23:59:59 deleted (leap indicator 2).
    Delete,
    /// No leap (leap indicator 0): `announce-leap` stops announcing.
    None,
}

/// Scenario actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The node stops answering and polling.
    Stop,
    /// The node starts again, with a fresh daemon on the same oscillator.
    Restart,
    /// The node's answers are off by `offset` from now on (0 to stop lying).
    Lie,
    /// Links between `client` and `server` change.
    SetLink,
    /// A reference node learns of a real leap second (as a primary from its
    /// leap-seconds.list file): it announces and takes it. True UTC takes it.
    Leap,
    /// The node sets its leap indicator to `kind` from now on, whatever
    /// its time does: an upstream announcing a leap that is not coming.
    AnnounceLeap,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let mut scenario: Self = toml::from_str(text)?;
        scenario.validate()?;
        scenario.timeline = scenario.read_timeline()?;
        Ok(scenario)
    }

    fn read_timeline(&self) -> Result<Timeline, ScenarioError> {
        let mut leaps = Vec::new();
        for event in self.events.iter().filter(|e| e.action == Action::Leap) {
            let kind = match event.kind {
                Some(LeapChoice::Insert) => LeapKind::Insert,
                Some(LeapChoice::Delete) => LeapKind::Delete,
                _ => return invalid(format!("event at {} (leap): kind must be \"insert\" or \"delete\"", event.at)),
            };
            leaps.push(LeapEvent { at: event.at, kind, leap_at: event.leap_at.as_deref() });
        }
        let s = &self.simulation;
        Timeline::new(s.start.as_deref(), s.start_unix, leaps).map_err(ScenarioError::Invalid)
    }

    /// True when the scenario has a leap, a false announcement or a
    /// smearing node: then the nodes' leap schedules are ticked, and the
    /// outputs show the leap.
    #[must_use]
    pub fn has_leap_events(&self) -> bool {
        self.events.iter().any(|e| matches!(e.action, Action::Leap | Action::AnnounceLeap))
            || self.nodes.iter().any(|n| n.leap_smear.is_some())
    }

    /// The `[[node]]` a node or group name stands for.
    fn spec_of(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name).or_else(|| {
            let (group, number) = name.rsplit_once('-')?;
            let number: usize = number.parse().ok()?;
            self.nodes.iter().find(|n| n.name == group && n.count.is_some_and(|c| (1..=c).contains(&number)))
        })
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let s = &self.simulation;
        if !(s.duration.is_finite() && s.duration > 0.0) {
            return invalid("simulation.duration must be a positive number of seconds");
        }
        if !(s.record_interval.is_finite() && s.record_interval > 0.0) {
            return invalid("simulation.record-interval must be positive");
        }
        validate_link("defaults.link", &self.defaults.link)?;
        validate_poll("defaults.poll", self.defaults.poll)?;
        if self.nodes.is_empty() {
            return invalid("at least one [[node]] is needed");
        }
        let mut names = BTreeMap::new();
        for node in &self.nodes {
            let key = format!("node \"{}\"", node.name);
            if node.name.is_empty() || names.insert(node.name.clone(), ()).is_some() {
                return invalid(format!("{key}: name must be unique and non-empty"));
            }
            if node.count == Some(0) {
                return invalid(format!("{key}: count must be at least 1"));
            }
            match (node.kind, node.upstreams.is_empty()) {
                (NodeKind::Reference, false) => return invalid(format!("{key}: a reference has no upstreams")),
                (NodeKind::Server | NodeKind::Client, true) => {
                    return invalid(format!("{key}: upstreams must name at least one node"))
                }
                _ => {}
            }
            if node.pick == Some(0) {
                return invalid(format!("{key}: pick must be at least 1"));
            }
            if !node.clock.offset.is_finite() || !node.clock.frequency_ppm.is_finite() {
                return invalid(format!("{key}: clock.offset and clock.frequency-ppm must be numbers or [low, high]"));
            }
            if !(node.clock.wander_ppm.is_finite() && node.clock.wander_ppm >= 0.0) {
                return invalid(format!("{key}: clock.wander-ppm must be zero or positive"));
            }
            if let Some(poll) = node.poll {
                validate_poll(&format!("{key}: poll"), poll)?;
            }
            if let Some(Err(err)) = node.leap_smear.map(LeapSmear::new) {
                return invalid(format!("{key}: leap-smear: {err}"));
            }
        }
        for link in &self.links {
            validate_link(&format!("link {} -> {}", link.client, link.server), &link.params.over(self.defaults.link))?;
        }
        for event in &self.events {
            if !(event.at.is_finite() && event.at >= 0.0) {
                return invalid("event.at must be a time in seconds, zero or more");
            }
            match event.action {
                Action::Stop | Action::Restart | Action::Lie if event.node.is_none() => {
                    return invalid(format!("event at {}: {:?} needs `node`", event.at, event.action));
                }
                Action::Lie if event.offset.is_none_or(|o| !o.is_finite()) => {
                    return invalid(format!("event at {}: lie needs a numeric `offset`", event.at));
                }
                Action::SetLink if event.client.is_none() || event.server.is_none() => {
                    return invalid(format!("event at {}: set-link needs `client` and `server`", event.at));
                }
                _ => {}
            }
            self.validate_leap_event(event)?;
        }
        Ok(())
    }
}

impl Scenario {
    /// The checks of `leap` and `announce-leap` events the timeline does
    /// not make: a node that exists, and a reference for a real leap.
    fn validate_leap_event(&self, event: &EventSpec) -> Result<(), ScenarioError> {
        let key = format!("event at {}", event.at);
        match event.action {
            Action::Leap | Action::AnnounceLeap => {
                let Some(name) = event.node.as_deref() else {
                    return invalid(format!("{key}: {:?} needs `node`", event.action));
                };
                let Some(spec) = self.spec_of(name) else {
                    return invalid(format!("{key}: node \"{name}\" is not a node or group"));
                };
                if event.action == Action::Leap && spec.kind != NodeKind::Reference {
                    return invalid(format!(
                        "{key}: leap is for a reference node (\"{name}\" is not one: it follows its upstreams)"
                    ));
                }
                if event.kind.is_none() {
                    return invalid(format!("{key}: {:?} needs `kind`", event.action));
                }
                if event.action == Action::AnnounceLeap && event.leap_at.is_some() {
                    return invalid(format!("{key}: leap-at is for a leap event"));
                }
            }
            _ if event.kind.is_some() || event.leap_at.is_some() => {
                return invalid(format!("{key}: kind and leap-at are for leap and announce-leap events"));
            }
            _ => {}
        }
        Ok(())
    }
}

fn validate_poll(key: &str, poll: PollSpec) -> Result<(), ScenarioError> {
    if !(-4..=17).contains(&poll.min) || !(-4..=17).contains(&poll.max) || poll.min > poll.max {
        return invalid(format!("{key}: min and max must be in -4..=17 with min <= max"));
    }
    Ok(())
}

fn validate_link(key: &str, link: &LinkParams) -> Result<(), ScenarioError> {
    let ok = |v: f64| v.is_finite() && v >= 0.0;
    if !ok(link.delay) || !ok(link.jitter) || !ok(link.asymmetry) {
        return invalid(format!("{key}: delay, jitter and asymmetry must be zero or positive seconds"));
    }
    if !(0.0..1.0).contains(&link.loss) {
        return invalid(format!("{key}: loss must be a probability in [0, 1)"));
    }
    Ok(())
}

/// One concrete node after expansion.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: NodeKind,
    /// Indices of its upstreams.
    pub upstreams: Vec<usize>,
    /// Initial offset, seconds.
    pub offset: f64,
    /// Frequency error, ppm.
    pub frequency_ppm: f64,
    /// Wander, ppm per √s.
    pub wander_ppm: f64,
    /// Poll bounds.
    pub poll: PollSpec,
    /// How it serves a leap second.
    pub leap_mode: LeapMode,
}

/// Expands groups, resolves names and draws per-node values from `rng`.
pub fn expand(scenario: &Scenario, rng: &mut ChaCha8Rng) -> Result<Vec<NodePlan>, ScenarioError> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut names = Vec::new();
    for spec in &scenario.nodes {
        let count = spec.count.unwrap_or(1);
        let members: Vec<usize> = (names.len()..names.len() + count).collect();
        for k in 0..count {
            names.push(if spec.count.is_some() { format!("{}-{}", spec.name, k + 1) } else { spec.name.clone() });
        }
        groups.insert(spec.name.as_str(), members);
    }
    let mut plans = Vec::with_capacity(names.len());
    for spec in &scenario.nodes {
        let mut upstreams = Vec::new();
        for name in &spec.upstreams {
            match groups.get(name.as_str()) {
                Some(members) => upstreams.extend(members.iter().copied()),
                None => return invalid(format!("node \"{}\": upstream \"{name}\" is not a node", spec.name)),
            }
        }
        for &member in &groups[spec.name.as_str()] {
            let mut own = upstreams.clone();
            own.retain(|&u| u != member);
            if let Some(pick) = spec.pick {
                if pick > own.len() {
                    return invalid(format!("node \"{}\": pick {pick} exceeds its {} upstreams", spec.name, own.len()));
                }
                // Partial Fisher-Yates: the first `pick` entries are a uniform draw.
                for i in 0..pick {
                    let j = rng.gen_range(i..own.len());
                    own.swap(i, j);
                }
                own.truncate(pick);
            }
            plans.push(NodePlan {
                name: names[member].clone(),
                kind: spec.kind,
                upstreams: own,
                offset: spec.clock.offset.draw(rng),
                frequency_ppm: spec.clock.frequency_ppm.draw(rng),
                wander_ppm: spec.clock.wander_ppm,
                poll: spec.poll.unwrap_or(scenario.defaults.poll),
                leap_mode: match spec.leap_smear.map(LeapSmear::new) {
                    Some(Ok(smear)) => LeapMode::Smear(smear),
                    _ => LeapMode::Step,
                },
            });
        }
    }
    Ok(plans)
}

/// The nodes a name stands for: a single node or every member of a group.
pub fn resolve(plans: &[NodePlan], scenario: &Scenario, name: &str) -> Vec<usize> {
    let grouped = scenario.nodes.iter().any(|n| n.name == name && n.count.is_some());
    plans
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.name == name || (grouped && p.name.strip_prefix(name).is_some_and(|rest| rest.starts_with('-')))
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::leap::LeapKind;
    use ntp_proto::NtpTimestamp;
    use rand::SeedableRng;

    const MINIMAL: &str = r#"
[simulation]
duration = 60
[[node]]
name = "gps"
kind = "reference"
[[node]]
name = "c"
kind = "client"
count = 3
upstreams = ["gps"]
clock = { offset = [-5.0, 5.0] }
"#;

    #[test]
    fn groups_expand_with_drawn_values() {
        let scenario = Scenario::parse(MINIMAL).unwrap();
        let plans = expand(&scenario, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["gps", "c-1", "c-2", "c-3"]);
        assert!(plans[1..].iter().all(|p| p.upstreams == [0] && (-5.0..5.0).contains(&p.offset)));
        assert_ne!(plans[1].offset, plans[2].offset);
        assert_eq!(resolve(&plans, &scenario, "c"), [1, 2, 3]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Scenario::parse(&MINIMAL.replace("count = 3", "cuont = 3")).unwrap_err().to_string();
        assert!(err.contains("cuont"), "{err}");
    }

    #[test]
    fn impossible_values_name_the_key() {
        let cases = [
            (MINIMAL.replace("duration = 60", "duration = -1"), "simulation.duration"),
            (MINIMAL.replace("count = 3", "count = 0"), "count"),
            (MINIMAL.replace("upstreams = [\"gps\"]", "upstreams = []"), "upstreams"),
            (MINIMAL.to_string() + "[defaults.link]\nloss = 1.5\n", "loss"),
        ];
        for (text, key) in cases {
            let err = Scenario::parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
        let scenario = Scenario::parse(&MINIMAL.replace("[\"gps\"]", "[\"nobody\"]")).unwrap();
        let err = expand(&scenario, &mut ChaCha8Rng::seed_from_u64(1)).unwrap_err().to_string();
        assert!(err.contains("nobody"), "{err}");
    }

    const LEAP: &str = "[[event]]\nat = 0\naction = \"leap\"\nnode = \"gps\"\nkind = \"insert\"\n";

    #[test]
    fn a_leap_falls_at_the_next_month_start_or_where_it_is_told() {
        let text = MINIMAL.replace("duration = 60", "duration = 60\nstart = \"2016-12-31T23:30:00Z\"");
        let scenario = Scenario::parse(&(text.clone() + LEAP)).unwrap();
        assert_eq!(scenario.timeline.start, NtpTimestamp::from_unix(1_483_227_000, 0));
        let leap = scenario.timeline.leap.unwrap();
        assert_eq!((leap.at, leap.kind), (NtpTimestamp::from_unix(1_483_228_800, 0), LeapKind::Insert));
        assert_eq!(scenario.timeline.leap_second(), Some(1800.0));
        let told = Scenario::parse(&(text + LEAP + "leap-at = \"2017-07-01T00:00:00Z\"\n")).unwrap();
        assert_eq!(told.timeline.leap.unwrap().at, NtpTimestamp::from_unix(1_498_867_200, 0));
        let unix = MINIMAL.replace("duration = 60", "duration = 60\nstart-unix = 1483227000");
        assert_eq!(Scenario::parse(&unix).unwrap().timeline.start, NtpTimestamp::from_unix(1_483_227_000, 0));
        assert!(Scenario::parse(MINIMAL).unwrap().timeline.leap.is_none());
        assert!(!Scenario::parse(MINIMAL).unwrap().has_leap_events());
    }

    #[test]
    fn impossible_leap_events_name_what_is_wrong() {
        let start = MINIMAL.replace("duration = 60", "duration = 60\nstart = \"2016-12-31T23:30:00Z\"");
        let cases = [
            (start.replace("2016-12-31T23:30:00Z", "yesterday"), "simulation.start"),
            (start.replace("duration = 60", "duration = 60\nstart-unix = 1"), "not both"),
            (start.clone() + &LEAP.replace("insert", "none"), "kind must be"),
            (start.clone() + &LEAP.replace("kind = \"insert\"\n", ""), "needs `kind`"),
            (start.clone() + &LEAP.replace("\"gps\"", "\"c\""), "reference"),
            (start.clone() + &LEAP.replace("\"gps\"", "\"c-2\""), "reference"),
            (start.clone() + &LEAP.replace("\"gps\"", "\"nobody\""), "nobody"),
            (start.clone() + LEAP + "leap-at = \"2017-01-01T12:00:00Z\"\n", "month's first day"),
            (start.clone() + LEAP + "leap-at = \"2016-12-01T00:00:00Z\"\n", "has passed"),
            (start.clone() + LEAP + LEAP.replace("insert", "delete").as_str(), "one real leap"),
            (
                start.clone() + &LEAP.replace("leap", "announce-leap") + "leap-at = \"2017-01-01T00:00:00Z\"\n",
                "leap-at",
            ),
            (start.clone() + &LEAP.replace("leap", "stop"), "kind and leap-at"),
            (start.replace("upstreams = [\"gps\"]", "upstreams = [\"gps\"]\nleap-smear = 1"), "leap-smear"),
            (start.clone() + &LEAP.replace("insert", "sideways"), "sideways"),
        ];
        for (text, key) in cases {
            let err = Scenario::parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should say {key}");
        }
        let smear = start.replace("upstreams = [\"gps\"]", "upstreams = [\"gps\"]\nleap-smear = 3600");
        let scenario = Scenario::parse(&(smear + &LEAP.replace("leap", "announce-leap"))).unwrap();
        assert!(scenario.has_leap_events());
        let plans = expand(&scenario, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(plans[0].leap_mode, LeapMode::Step);
        assert_eq!(plans[1].leap_mode, LeapMode::Smear(LeapSmear::new(3600).unwrap()));
    }
}
