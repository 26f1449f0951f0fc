//! [`SourceSet`]: every configured or added source (a server name or a
//! pool), the addresses it has lent to associations, and when its name is
//! next resolved. It is handed the time and what DNS answered, and returns
//! the [`Change`]s to make to the associations.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use super::policy::{back_off, pick, Health, Reason, Watch, REFRESH, REJECTED_FOR, RETRY_FIRST, RETRY_MAX, SHORT_MAX};
use super::{Kind, Origin, Spec};

/// Names a source for as long as it is in the set.
pub type SourceId = u64;
/// Names one address lent by a source, for as long as it is polled.
pub type MemberId = u64;

/// Replacements remembered for `/status`.
pub const REPLACEMENTS_KEPT: usize = 16;

/// What to do to the associations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Poll `address` as member `member` of source `source`.
    Add {
        /// The source lending it.
        source: SourceId,
        /// Its new name.
        member: MemberId,
        /// The address.
        address: SocketAddr,
    },
    /// Stop polling member `member` and forget its association.
    Remove {
        /// The member.
        member: MemberId,
        /// Why, when it failed (None: its source was removed).
        reason: Option<Reason>,
    },
}

/// How a resolution went, for the log: the first failure of a run is worth
/// a warning, the ones after it only a debug line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveLog {
    /// The first failure after a success (or at start).
    FirstFailure {
        /// What the resolver said.
        error: String,
        /// When the next attempt is.
        retry_in: Duration,
    },
    /// Another failure in a row.
    Again {
        /// What the resolver said.
        error: String,
        /// Failures in a row so far.
        failures: u32,
        /// When the next attempt is.
        retry_in: Duration,
    },
    /// It resolved, after `failures` failures in a row (0: it never failed).
    Resolved {
        /// Addresses the resolver gave.
        addresses: usize,
        /// Failures before this success.
        failures: u32,
    },
}

/// A replacement, as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The source whose address it was.
    pub source: String,
    /// The address dropped.
    pub address: SocketAddr,
    /// Why.
    pub reason: Reason,
    /// When.
    pub at: Duration,
}

/// Why a control command could not change the set.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SetError {
    /// The name is a source already.
    #[error("{0} is a source already")]
    Duplicate(String),
    /// No source of that name.
    #[error("no source named {0}")]
    Unknown(String),
}

/// One address lent by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub id: MemberId,
    /// The address polled.
    pub address: SocketAddr,
    watch: Watch,
}

/// One source and where its resolution stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its name.
    pub id: SourceId,
    /// As configured.
    pub spec: Spec,
    /// Configured or added at runtime.
    pub origin: Origin,
    /// The addresses it lends now.
    pub members: Vec<Member>,
    /// How many addresses it may lend (1 for a server).
    pub max: usize,
    /// A resolution is under way.
    pub resolving: bool,
    /// Failed resolutions in a row.
    pub failures: u32,
    /// The last failure's message, while failing.
    pub error: Option<String>,
    /// When the name is next resolved.
    pub next_resolution: Option<Duration>,
    /// A pool: resolutions in a row that could not fill it.
    short: u32,
    /// A server: re-resolutions asked for while it was unreachable.
    rechecks: u32,
    /// A server: follow a new address at the next resolution.
    follow: bool,
    /// A pool: addresses dropped, and until when they are not lent again.
    rejected: Vec<(SocketAddr, Duration)>,
}

impl Source {
    /// True once it has an address to poll.
    #[must_use]
    pub fn is_resolved(&self) -> bool {
        !self.members.is_empty()
    }
}

/// Every source, and the replacements made lately.
#[derive(Debug, Clone, Default)]
pub struct SourceSet {
    sources: Vec<Source>,
    max_sources: usize,
    next_id: u64,
    replacements: VecDeque<Replacement>,
    replaced: Vec<(String, Reason, u64)>,
}

impl SourceSet {
    /// An empty set whose pools lend up to `max_sources` addresses each.
    #[must_use]
    pub fn new(max_sources: usize) -> Self {
        Self { max_sources: max_sources.max(1), ..Self::default() }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Adds a source, its name to be resolved at once.
    pub fn add(&mut self, spec: Spec, origin: Origin, now: Duration) -> Result<SourceId, SetError> {
        if self.sources.iter().any(|s| s.spec.name == spec.name) {
            return Err(SetError::Duplicate(spec.name));
        }
        let id = self.next_id();
        let max = if spec.kind == Kind::Pool { self.max_sources } else { 1 };
        self.sources.push(Source {
            id,
            spec,
            origin,
            members: Vec::new(),
            max,
            resolving: false,
            failures: 0,
            error: None,
            next_resolution: Some(now),
            short: 0,
            rechecks: 0,
            follow: false,
            rejected: Vec::new(),
        });
        Ok(id)
    }

    /// Removes the source named `name`: the removals of its members.
    pub fn remove(&mut self, name: &str) -> Result<Vec<Change>, SetError> {
        let index =
            self.sources.iter().position(|s| s.spec.name == name).ok_or_else(|| SetError::Unknown(name.into()))?;
        let source = self.sources.remove(index);
        Ok(source.members.iter().map(|m| Change::Remove { member: m.id, reason: None }).collect())
    }

    /// The sources, in the order added.
    #[must_use]
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The source that lends `member`, if any.
    #[must_use]
    pub fn source_of(&self, member: MemberId) -> Option<&Source> {
        self.sources.iter().find(|s| s.members.iter().any(|m| m.id == member))
    }

    /// Sources with no address yet: names that do not resolve (yet). Each
    /// is a configured upstream that votes "no leap".
    #[must_use]
    pub fn unresolved(&self) -> usize {
        self.sources.iter().filter(|s| !s.is_resolved()).count()
    }

    /// The latest replacements, oldest first.
    pub fn replacements(&self) -> impl DoubleEndedIterator<Item = &Replacement> {
        self.replacements.iter()
    }

    /// How many replacements there were, by source and reason, since start.
    #[must_use]
    pub fn replacement_counts(&self) -> &[(String, Reason, u64)] {
        &self.replaced
    }

    /// The names to resolve now: each is marked as being resolved, and
    /// its answer is to come back through [`SourceSet::resolved`].
    pub fn due(&mut self, now: Duration) -> Vec<(SourceId, Spec)> {
        let mut due = Vec::new();
        for source in &mut self.sources {
            if !source.resolving && source.next_resolution.is_some_and(|at| at <= now) {
                source.resolving = true;
                source.next_resolution = None;
                due.push((source.id, source.spec.clone()));
            }
        }
        due
    }

    /// When the next resolution is due, if any is scheduled.
    #[must_use]
    pub fn next_due(&self) -> Option<Duration> {
        self.sources.iter().filter(|s| !s.resolving).filter_map(|s| s.next_resolution).min()
    }

    /// Takes what DNS answered for source `id` at `now`. `is_own` says
    /// whether an address is this daemon's own (it would poll itself).
    pub fn resolved(
        &mut self,
        id: SourceId,
        now: Duration,
        result: Result<Vec<SocketAddr>, String>,
        is_own: &dyn Fn(&SocketAddr) -> bool,
    ) -> (Vec<Change>, Option<ResolveLog>) {
        let in_use: Vec<(SourceId, SocketAddr)> =
            self.sources.iter().flat_map(|s| s.members.iter().map(|m| (s.id, m.address))).collect();
        let mut fresh: Vec<MemberId> = Vec::new();
        let Some(index) = self.sources.iter().position(|s| s.id == id) else {
            return (Vec::new(), None); // removed while DNS was asked
        };
        let addresses = match result {
            Ok(addresses) => addresses,
            Err(error) => {
                let source = &mut self.sources[index];
                source.resolving = false;
                source.failures = source.failures.saturating_add(1);
                let retry_in = back_off(source.failures, RETRY_FIRST, RETRY_MAX);
                source.next_resolution = Some(now + retry_in);
                source.error = Some(error.clone());
                let log = if source.failures == 1 {
                    ResolveLog::FirstFailure { error, retry_in }
                } else {
                    ResolveLog::Again { error, failures: source.failures, retry_in }
                };
                return (Vec::new(), Some(log));
            }
        };
        let need = {
            let source = &self.sources[index];
            source.max.saturating_sub(source.members.len())
        };
        for _ in 0..need.max(1) {
            fresh.push(self.next_id());
        }
        let source = &mut self.sources[index];
        source.resolving = false;
        let log = ResolveLog::Resolved { addresses: addresses.len(), failures: source.failures };
        source.failures = 0;
        source.error = None;
        source.rejected.retain(|&(_, until)| until > now);
        let taken = |address: &SocketAddr| in_use.iter().any(|&(owner, a)| owner != id && a == *address);
        let mut changes = Vec::new();
        match source.spec.kind {
            Kind::Server => {
                let first = pick(&addresses, 1, |a| taken(a) || is_own(a)).first().copied();
                let current = source.members.first().map(|m| m.address);
                let moved = source.follow && current.is_some_and(|c| !addresses.contains(&c));
                if let (true, Some(address)) = (current.is_none() || moved, first) {
                    if let Some(old) = source.members.pop() {
                        changes.push(Change::Remove { member: old.id, reason: Some(Reason::AddressChanged) });
                        let reason = Reason::AddressChanged;
                        record(&mut self.replacements, &mut self.replaced, &source.spec.name, old.address, reason, now);
                    }
                    let member = fresh[0];
                    source.members.push(Member { id: member, address, watch: Watch::default() });
                    changes.push(Change::Add { source: id, member, address });
                }
                source.follow = false;
                source.next_resolution = Some(if source.members.is_empty() {
                    source.error = Some("every address is in use by another source or is our own".into());
                    source.short = source.short.saturating_add(1);
                    now + back_off(source.short, RETRY_FIRST, RETRY_MAX)
                } else {
                    source.short = 0;
                    now + REFRESH
                });
            }
            Kind::Pool => {
                let rejected = source.rejected.clone();
                let excluded = |a: &SocketAddr| {
                    taken(a)
                        || is_own(a)
                        || source.members.iter().any(|m| m.address == *a)
                        || rejected.iter().any(|r| r.0 == *a)
                };
                let picked = pick(&addresses, need, excluded);
                for (address, member) in picked.into_iter().zip(fresh) {
                    source.members.push(Member { id: member, address, watch: Watch::default() });
                    changes.push(Change::Add { source: id, member, address });
                }
                source.next_resolution = Some(if source.members.len() < source.max {
                    source.short = source.short.saturating_add(1);
                    now + back_off(source.short, RETRY_FIRST, SHORT_MAX)
                } else {
                    source.short = 0;
                    now + REFRESH
                });
            }
        }
        (changes, Some(log))
    }

    /// Judges every member at `now` by what `health` says of it (None: no
    /// association, left alone). A pool drops a member that failed for
    /// good and asks DNS for a replacement at once; a server that went
    /// unreachable has its name resolved again (with back-off) and follows
    /// a new address when there is one.
    pub fn judge(&mut self, now: Duration, health: &dyn Fn(MemberId) -> Option<Health>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut dropped: Vec<(String, SocketAddr, Reason)> = Vec::new();
        for source in &mut self.sources {
            let mut failed: Vec<(usize, Reason)> = Vec::new();
            for (i, member) in source.members.iter_mut().enumerate() {
                if let Some(h) = health(member.id) {
                    if let Some(reason) = member.watch.judge(now, &h) {
                        failed.push((i, reason));
                    } else if source.spec.kind == Kind::Server {
                        source.rechecks = 0;
                    }
                }
            }
            match source.spec.kind {
                Kind::Pool => {
                    for &(i, reason) in failed.iter().rev() {
                        let member = source.members.remove(i);
                        changes.push(Change::Remove { member: member.id, reason: Some(reason) });
                        source.rejected.push((member.address, now + REJECTED_FOR));
                        dropped.push((source.spec.name.clone(), member.address, reason));
                    }
                    if !failed.is_empty() && !source.resolving {
                        source.next_resolution = Some(now);
                    }
                }
                Kind::Server => {
                    if failed.iter().any(|&(_, reason)| reason == Reason::Unreachable) && !source.resolving {
                        source.follow = true;
                        // At once the first time, then with back-off while it stays unreachable.
                        let wait = match source.rechecks {
                            0 => Duration::ZERO,
                            n => back_off(n, RETRY_FIRST, RETRY_MAX),
                        };
                        let at = now + wait;
                        if source.next_resolution.is_none_or(|next| next > at + RETRY_FIRST) {
                            source.next_resolution = Some(at);
                            source.rechecks = source.rechecks.saturating_add(1);
                        }
                    }
                }
            }
        }
        for (name, address, reason) in dropped {
            record(&mut self.replacements, &mut self.replaced, &name, address, reason, now);
        }
        changes
    }
}

/// Records that `source` dropped `address` for `reason` at `at`.
fn record(
    replacements: &mut VecDeque<Replacement>,
    replaced: &mut Vec<(String, Reason, u64)>,
    source: &str,
    address: SocketAddr,
    reason: Reason,
    at: Duration,
) {
    if replacements.len() == REPLACEMENTS_KEPT {
        replacements.pop_front();
    }
    match replaced.iter_mut().find(|(s, r, _)| s == source && *r == reason) {
        Some(entry) => entry.2 += 1,
        None => replaced.push((source.to_string(), reason, 1)),
    }
    replacements.push_back(Replacement { source: source.to_string(), address, reason, at });
}

#[cfg(test)]
mod tests;
