//! ntpd-rs as ntpd-sim's client, in the test VM: its `ntp-daemon`
//! disciplines the clock it runs on, so it runs only in a guest. qemu runs
//! in the bed's host A and the guest reaches ntpd-sim and the relays at
//! their bed addresses through qemu's NAT; one boot runs every client phase
//! (tests/vm/ntpd-rs.sh): plain, NTS, NTS through the faithful relay, NTS
//! through the tampering one. The guest prints what `ntp-ctl status`
//! shows, what ntpd-rs serves in turn, and the guest clock's offset from
//! ntpd-sim as ntp-query in the guest reads it (the truth it is held to).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ntp_e2e::process::wait_for;
use ntp_e2e::vm::{boot_in, build_image_with, field, finished_console, text_field, vm_dir, Extras};
use ntp_e2e::Daemon;
use serde_json::Value;

use crate::bed::{relayed, vm_turn, Bed};
use crate::ntpd_rs::metric;
use crate::report::{ensure, micros, works, Outcome};

/// The clock offset ntpd-sim serves with (its time = the host's + this):
/// the guest boots within a second or so of the host's time (its RTC, read
/// to the second; 0.5-1.2 s behind seen), so a
/// guest that ends within [`BOUND`] of ntpd-sim was stepped onto it.
const INJECTED: f64 = 2.5;

/// The bound on the guest clock's offset from ntpd-sim once ntpd-rs
/// follows it. The guest's one CPU is emulated (TCG): some replies are held
/// up 1-6 ms on the way (docs/performance.md), and ntpd-rs's Kalman filter
/// settles for a clock within the spread of what it reads, so a few
/// milliseconds, not the microseconds of a veth hop.
pub const BOUND: f64 = 5e-3;

/// Seconds a phase may take to synchronize: ntpd-rs polls every 1-2 s
/// here (`poll-interval-limits` 0..1) and needs a handful of samples.
const SYNC_LIMIT: u32 = 40;

/// Seconds the tampered phase runs: ten or more replies to refuse.
const TAMPER_SECONDS: u32 = 15;

/// The plain and NTS rows of ntpd-rs following ntpd-sim, from one boot.
pub fn follows(daemon: &str, ctl: &str) -> (Result<Outcome, String>, Result<Outcome, String>) {
    let bed = Bed::new("nrsc");
    let offset = INJECTED.to_string();
    let server = bed.serve(&["--refid", "XSIM", "--clock-offset", &offset]);
    let advertised = match bed.query(&["-n", "1", &format!("{}:123", bed.a_ip())]) {
        Ok(json) => json["servers"][0].clone(),
        Err(e) => return (Err(e.clone()), Err(e)),
    };
    let image = tempfile::tempdir().expect("temp dir");
    let programs = [PathBuf::from(daemon), PathBuf::from(ctl)];
    let files = [(bed.ca.ca_cert(), "/etc/ntp-ca.pem")];
    let extras = Extras { programs: &programs, files: &files, ..Extras::default() };
    build_image_with(&vm_dir().join("ntpd-rs.sh"), image.path(), &extras);

    let _turn = vm_turn();
    let a_ip = bed.a_ip();
    let net = a_ip.rsplit_once('.').map_or(a_ip.as_str(), |(net, _)| net);
    let args = format!("vm.net={net} vm.sync={SYNC_LIMIT} vm.settle=8 vm.tamper={TAMPER_SECONDS}");
    let mut qemu = boot_in(&bed.a, image.path(), &args, 12399);
    let tamper_check = relayed(&bed, &bed.a_ip(), |tamper| {
        let phase = wait_phase(&qemu, if tamper { "tamper" } else { "relay" })?;
        match phase.synced_after {
            Some(_) => phase.median_offset(),
            None if phase.refused > 0 => Err(phase.refusal.unwrap_or_default()),
            None => Err(format!("not synchronized in {} s, no reply refused", phase.limit)),
        }
    });
    let _ = wait_for(Duration::from_secs(60), || (!qemu.is_running()).then_some(()));
    let console = finished_console(&mut qemu, "vm-interop-ntpd-rs-console.log");
    let plain = Phase::read(&console, "plain").and_then(|p| checked(&p, &advertised, &bed, None));
    let nts = Phase::read(&console, "nts").and_then(|p| {
        let refused = tamper_check.map_err(|e| format!("{e}\n{}", server.output()))?;
        checked(&p, &advertised, &bed, Some(refused))
    });
    (plain, nts)
}

/// What one phase of the scenario showed, from its console lines.
#[derive(Debug)]
struct Phase {
    name: String,
    limit: u32,
    /// The guest clock's offset from ntpd-sim before ntp-daemon started.
    before: Option<f64>,
    synced_after: Option<f64>,
    /// The guest clock's offsets from ntpd-sim once settled (ntp-query).
    samples: Vec<f64>,
    /// `ntp-ctl status -f prometheus`: each metric's name (labels left
    /// out; the guest follows one source) and value.
    metrics: HashMap<String, f64>,
    /// What ntpd-rs served in turn on the guest's 127.0.0.1:123.
    served: String,
    refused: usize,
    refusal: Option<String>,
}

/// Waits until the guest has finished `phase` (its `VM refused` line is
/// the phase's last), and reads it.
fn wait_phase(qemu: &Daemon, phase: &str) -> Result<Phase, String> {
    let marker = format!("VM refused phase={phase} ");
    let limit = Duration::from_secs(u64::from(4 * SYNC_LIMIT + TAMPER_SECONDS) + 120);
    wait_for(limit, || {
        let console = qemu.output();
        (console.contains(&marker) || console.contains("VM done")).then_some(console)
    })
    .ok_or_else(|| format!("the guest did not finish phase {phase}:\n{}", qemu.output()))
    .and_then(|console| Phase::read(&console, phase))
}

impl Phase {
    fn read(console: &str, name: &str) -> Result<Self, String> {
        let tag = format!("phase={name} ");
        let lines: Vec<String> = console
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with("VM ") && format!("{l} ").contains(&tag))
            .map(str::to_string)
            .collect();
        let line = |kind: &str| lines.iter().find(|l| l.starts_with(&format!("VM {kind} "))).cloned();
        let head = lines.iter().find(|l| l.starts_with(&format!("VM {tag}"))).cloned();
        let head = head.ok_or_else(|| format!("no phase {name} in the console:\n{console}"))?;
        let metrics =
            lines.iter().filter_map(|l| l.strip_prefix(&format!("VM metric {tag}"))).filter_map(metric).collect();
        let refused = line("refused").ok_or_else(|| format!("phase {name} did not end:\n{console}"))?;
        Ok(Self {
            name: name.to_string(),
            limit: if name == "tamper" { TAMPER_SECONDS } else { SYNC_LIMIT },
            before: field(&head, "before_offset"),
            synced_after: field(&head, "synced_after"),
            samples: lines.iter().filter(|l| l.starts_with("VM sample ")).filter_map(|l| field(l, "offset")).collect(),
            metrics,
            served: line("served").unwrap_or_default(),
            refused: field(&refused, "invalid").map_or(0, |n| n as usize),
            refusal: line("refusal").map(|l| l.split_once(&tag).map_or(l.clone(), |(_, r)| r.to_string())),
        })
    }

    fn metric(&self, name: &str) -> Result<f64, String> {
        self.metrics.get(name).copied().ok_or_else(|| format!("ntp-ctl showed no {name} in phase {}", self.name))
    }

    /// The median of the settled samples of the guest's offset.
    fn median_offset(&self) -> Result<f64, String> {
        ensure(self.samples.len() >= 3, || format!("phase {}: only {:?} read", self.name, self.samples))?;
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(sorted[sorted.len() / 2])
    }
}

/// The checks of a client phase against what ntpd-sim advertised
/// (`advertised`, ntp-query's entry of it); `refused` is the NTS tamper
/// check's finding, for the NTS phase.
fn checked(phase: &Phase, advertised: &Value, bed: &Bed, refused: Option<String>) -> Result<Outcome, String> {
    let synced =
        phase.synced_after.ok_or_else(|| format!("ntpd-rs not synchronized within {} s: {phase:?}", phase.limit))?;
    if phase.name == "plain" {
        // Off by the injected offset before: ntpd-rs had the clock to correct.
        let before = phase.before.unwrap_or(f64::NAN);
        ensure((before - INJECTED).abs() < 2.0, || format!("the guest started {before} s from ntpd-sim"))?;
    }
    let offset = phase.median_offset()?;
    ensure(offset.abs() < BOUND, || format!("the guest ends {} from ntpd-sim", micros(offset)))?;
    let own = phase.metric("ntp_source_offset_seconds")?;
    ensure(own.abs() < BOUND, || format!("ntpd-rs's own offset estimate {}", micros(own)))?;
    let stratum = advertised["stratum"].as_f64().unwrap_or(f64::NAN);
    ensure(phase.metric("ntp_system_stratum")? == stratum + 1.0, || {
        format!("ntpd-rs at stratum {:?}, its source at {stratum}", phase.metrics.get("ntp_system_stratum"))
    })?;
    let leap = phase.metric("ntp_system_leap_indicator")?;
    ensure(leap == 0.0 && advertised["leap"] == "none", || {
        format!("leap {leap}, ntpd-sim sent {}", advertised["leap"])
    })?;
    let (delay, dispersion) =
        (phase.metric("ntp_source_root_delay_seconds")?, phase.metric("ntp_source_root_dispersion_seconds")?);
    let sent_delay = advertised["root_delay"].as_f64().unwrap_or(f64::NAN);
    let sent_dispersion = advertised["root_dispersion"].as_f64().unwrap_or(f64::NAN);
    let band = crate::report::DISPERSION_BAND;
    ensure((delay - sent_delay).abs() <= 1e-6 && (dispersion - sent_dispersion).abs() <= band, || {
        format!("root delay/dispersion {delay}/{dispersion}, ntpd-sim sent {sent_delay}/{sent_dispersion}")
    })?;
    // What it serves in turn: one stratum down, ntpd-sim's address as the
    // reference ID (ntpd-rs shows no refid of its source, it names it).
    let served = &phase.served;
    let served_stratum = field(served, "stratum");
    ensure(served_stratum == Some(stratum + 1.0), || format!("ntpd-rs served {served}"))?;
    ensure(text_field(served, "refid") == Some(bed.a_ip().as_str()), || {
        format!("ntpd-rs served {served}, its source is {}", bed.a_ip())
    })?;
    ensure(text_field(served, "leap") == Some("none"), || format!("ntpd-rs served {served}"))?;
    let mut auth = String::new();
    if let Some(refused) = refused {
        let cookies = phase.metric("ntp_source_nts_cookies_available")?;
        ensure(cookies > 0.0 && phase.refused == 0, || {
            format!("NTS source with {cookies} cookies, {} replies refused untampered", phase.refused)
        })?;
        auth = format!("; NTS, {cookies} cookies held; tampered replies refused ({refused})");
    }
    Ok(works(
        format!(
            "guest clock {} from ntpd-sim (median of 5, ntp-query in the guest); ntpd-rs's own estimate {}; \
             synchronized {synced:.0} s after start, from {:+.2} s off",
            micros(offset),
            micros(own),
            phase.before.unwrap_or(f64::NAN),
        ),
        crate::report::bound(BOUND, &format!("TCG guest; ntpd-sim serves host time {INJECTED:+} s")),
        format!(
            "ntpd-sim at stratum {stratum}, leap normal, root delay {:.1} µs, root dispersion {:.1} µs; \
             serves stratum {} with refid {}{auth}",
            delay * 1e6,
            dispersion * 1e6,
            stratum + 1.0,
            bed.a_ip()
        ),
    ))
}
