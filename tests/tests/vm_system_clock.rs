//! `ntpd-sim serve --clock system` disciplining a real kernel clock, inside
//! the test VM (tests/vm/, never on this host), side by side with chronyd
//! in the same guest, against the same upstream (an ntpd-sim on the host's
//! loopback), from the same injected errors: the guest clock an hour ahead
//! and 100 ppm fast. The scenario (tests/vm/system-clock.sh) runs three
//! phases: ntpd-sim from scratch, ntpd-sim restarted with its drift file,
//! chronyd from scratch. The host measures the guest's served time through
//! qemu's port forward; the guest reports its kernel's frequency and status,
//! and ntp-clockwatch its steps and any backward run of the clock.
//!
//! A second test (tests/vm/leap.sh) takes the guest through a leap second
//! its upstream announces, the kernel inserting it, and checks the lock
//! that keeps a second `ntpd-sim --clock system` off the clock.
//!
//! The figures are printed (run with `--nocapture`) and kept in
//! docs/performance.md.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ntp_e2e::chain::{offset, serve};
use ntp_e2e::leap::{current_leap_file, host_unix, leap_unix, offset_to};
use ntp_e2e::vm::{boot, build_image, field, finished_console, text_field, vm_dir};
use ntp_e2e::{free_udp_port, ntp_query_entry};

/// One VM at a time: the machine has two cores, and TCG needs one.
static ONE_VM: Mutex<()> = Mutex::new(());

/// Seconds of each fresh phase, and of the restart.
const PHASE: u32 = 50;
const RESTART: u32 = 30;
/// The frequency error injected in the guest (its kernel made 100 ppm fast).
const INJECTED_PPM: f64 = 100.0;

/// One host measurement of the guest's served time.
struct Sample {
    phase: String,
    since_start: f64,
    offset: f64,
}

/// What one phase came to.
#[derive(Debug)]
struct Figures {
    steps: usize,
    first_step: f64,
    backwards: f64,
    converged_after: Option<f64>,
    median: f64,
    p95: f64,
    max: f64,
    /// Mean kernel frequency over the last third of the phase, ppm (slews
    /// included).
    final_ppm: f64,
    /// The frequency correction learned, as a kernel frequency (ppm): the
    /// daemon's own figure (ntpd-sim's /status, chronyc tracking), without
    /// slews, averaged over the last third of the phase.
    learned_ppm: f64,
    /// Largest distance of the learned frequency from where it started
    /// (ntpd-sim's own, from its /status, without slews), ppm.
    swing_ppm: f64,
    first_ppm: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
}

fn figures(console: &str, samples: &[Sample], phase: &str) -> Figures {
    let end = console
        .lines()
        .find(|l| l.starts_with(&format!("VM phase={phase} end")))
        .unwrap_or_else(|| panic!("phase {phase} did not end:\n{console}"));
    let steps: Vec<f64> = match text_field(end, "step_sizes") {
        Some("-") | None => Vec::new(),
        Some(sizes) => sizes.split(',').filter_map(|s| s.parse().ok()).collect(),
    };
    let lines: Vec<&str> =
        console.lines().filter(|l| l.starts_with("VM view") && text_field(l, "phase") == Some(phase)).collect();
    let views: Vec<f64> = lines.iter().filter_map(|l| field(l, "kernel_ppm")).collect();
    let learned: Vec<f64> = lines.iter().filter_map(|l| field(l, "learned_ppm")).collect();
    let total: Vec<f64> = lines.iter().filter_map(|l| field(l, "frequency_ppm")).collect();
    // Read over nc from a guest TCG keeps busy: some reads time out.
    assert!(total.len() >= 3, "too few learned frequencies of phase {phase}:\n{console}");
    let total_last_third = &total[total.len() * 2 / 3..];
    assert!(views.len() >= 6, "too few views of phase {phase}:\n{console}");
    let last_third = &views[views.len() * 2 / 3..];
    let ours: Vec<&Sample> = samples.iter().filter(|s| s.phase == phase).collect();
    assert!(ours.len() >= 10, "too few host measurements of phase {phase}");
    let converged_after = ours.iter().find(|s| s.offset.abs() < 1e-3).map(|s| s.since_start);
    let half = ours.last().map_or(0.0, |s| s.since_start) / 2.0;
    let mut late: Vec<f64> = ours.iter().filter(|s| s.since_start >= half).map(|s| s.offset.abs()).collect();
    late.sort_by(f64::total_cmp);
    // The kernel's frequency once the daemon is up (it answers /status,
    // or chronyc, only after it has set the drift file's): the view loop
    // starts with the daemon, and a first view read before that saw the
    // frequency the phase began with (a failed run read the injected
    // 100 ppm against a drift file's -7.7).
    let first_ppm = lines
        .iter()
        .find(|l| field(l, "learned_ppm").is_some())
        .and_then(|l| field(l, "kernel_ppm"))
        .unwrap_or(views[0]);
    Figures {
        steps: steps.len(),
        first_step: steps.first().copied().unwrap_or(0.0),
        backwards: field(end, "backwards_after_first_step").unwrap_or(f64::NAN),
        converged_after,
        median: quantile(&late, 0.5),
        p95: quantile(&late, 0.95),
        max: late.last().copied().unwrap_or(f64::NAN),
        final_ppm: last_third.iter().sum::<f64>() / last_third.len() as f64,
        learned_ppm: total_last_third.iter().sum::<f64>() / total_last_third.len() as f64,
        swing_ppm: learned.iter().map(|v| v.abs()).fold(0.0, f64::max),
        first_ppm,
    }
}

#[test]
fn ntpd_sim_disciplines_the_guest_clock_as_chronyd_does() {
    let _one = ONE_VM.lock().unwrap_or_else(PoisonError::into_inner);
    let upstream_port = free_udp_port();
    let forward = free_udp_port();
    let _upstream = serve("127.0.0.1", upstream_port, &[]);
    let image = tempfile::tempdir().expect("temp dir");
    build_image(&vm_dir().join("system-clock.sh"), image.path());
    let args = format!("vm.upstream=10.0.2.2:{upstream_port} vm.seconds={PHASE} vm.restart={RESTART}");
    let mut qemu = boot(image.path(), &args, forward);

    // Measure the guest's served time from the host while a phase runs.
    let target = format!("127.0.0.1:{forward}");
    let deadline = Instant::now() + Duration::from_secs(u64::from(3 * PHASE + RESTART) + 240);
    let mut samples = Vec::new();
    let mut phase: Option<(String, Instant)> = None;
    while qemu.is_running() && Instant::now() < deadline {
        let console = qemu.output();
        let current = console.lines().rev().find(|l| l.starts_with("VM phase=")).and_then(|l| {
            let name = text_field(l, "phase")?;
            l.ends_with(" start").then(|| name.to_string())
        });
        match (current, &phase) {
            (Some(name), Some((known, _))) if *known == name => {}
            (Some(name), _) => phase = Some((name, Instant::now())),
            (None, _) => phase = None,
        }
        if let Some((name, started)) = &phase {
            if let Some(offset) = offset(&ntp_query_entry(&["-n", "1", "-t", "1", &target])) {
                samples.push(Sample { phase: name.clone(), since_start: started.elapsed().as_secs_f64(), offset });
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = finished_console(&mut qemu, "vm-system-clock-console.log");
    let drift: f64 = (console.lines().find(|l| l.starts_with("VM drift")))
        .and_then(|l| field(l, "ppm"))
        .unwrap_or_else(|| panic!("no drift file written:\n{console}"));

    let ours = figures(&console, &samples, "ntpd-sim");
    let restart = figures(&console, &samples, "restart");
    let chrony = figures(&console, &samples, "chronyd");
    eprintln!("phase     steps first-step(s) backwards converged-after(s) |offset| p50/p95/max (ms, 2nd half)  frequency(ppm) learned(ppm) swing(ppm) kernel-mean(ppm)");
    for (name, f) in [("ntpd-sim", &ours), ("restart", &restart), ("chronyd", &chrony)] {
        eprintln!(
            "{name:9} {:5} {:13.3} {:9} {:18} {:7.3} / {:6.3} / {:6.3} {:>22.2} {:12.2} {:10.2} {:16.2}",
            f.steps,
            f.first_step,
            f.backwards,
            f.converged_after.map_or("never".into(), |t| format!("{t:.1}")),
            f.median * 1e3,
            f.p95 * 1e3,
            f.max * 1e3,
            f.learned_ppm,
            f.learned_ppm - INJECTED_PPM,
            f.swing_ppm,
            f.final_ppm
        );
    }
    eprintln!("drift file after the first phase: {drift:.3} ppm; restart started at {:.3} ppm", restart.first_ppm);

    // ntpd-sim from scratch: stepped once by the hour, never backwards
    // after it, within 1 ms, the injected error learned.
    assert_eq!(ours.steps, 1, "{ours:?}\n{console}");
    assert!((ours.first_step + 3600.0).abs() < 5.0, "{ours:?}");
    assert_eq!(ours.backwards, 0.0, "{ours:?}");
    assert!(ours.converged_after.is_some() && ours.median < 1e-3, "{ours:?}");
    // The guest's own oscillator is off too, by a different amount each
    // boot (TCG's TSC as the guest calibrated it: -13 to +1 ppm seen), so
    // what there is to learn is the injection plus that: chronyd in the
    // same boot measures the same total, and the two are compared, to the
    // issue's 10 ppm. Since the discipline weighs its points by their error
    // bound (TCG holds one reply in five or so up by 1-6 ms, its offset
    // half that low), our estimate after 50 s has lain 0.3-0.9 ppm from
    // chronyd's (docs/performance.md); unweighted it lay 4-43 ppm off.
    let learned = ours.learned_ppm - INJECTED_PPM;
    assert!((learned + INJECTED_PPM).abs() < 50.0, "learned {learned} ppm: {ours:?}");
    assert!((ours.learned_ppm - chrony.learned_ppm).abs() < 10.0, "ntpd-sim {ours:?}\nchronyd {chrony:?}");

    // The kernel's status follows what the daemon advertises: STA_UNSYNC
    // (64) until the first update, cleared with a maxerror of the root
    // distance once synchronized, set again when the daemon stops.
    let views = |phase: &str| -> Vec<&str> {
        (console.lines()).filter(|l| l.starts_with("VM view") && text_field(l, "phase") == Some(phase)).collect()
    };
    let unsync = |line: &str| field(line, "status").is_some_and(|s| (s as u32) & 64 != 0);
    let fresh = views("ntpd-sim");
    assert!(fresh.first().is_some_and(|l| unsync(l)), "not unsynchronized at start: {fresh:?}");
    let last = fresh.last().copied().unwrap_or_default();
    assert!(!unsync(last) && field(last, "maxerror_us").is_some_and(|m| m < 100_000.0), "{last}");
    for phase in ["ntpd-sim", "restart"] {
        let end = (console.lines().find(|l| l.starts_with(&format!("VM phase={phase} end")))).unwrap_or_default();
        assert!(unsync(end), "still synchronized after the daemon stopped: {end}");
    }

    // Restarted with the drift file: its frequency at once, no step, no
    // re-learning swing (the fresh start swung by the whole 100 ppm).
    assert!((restart.first_ppm - drift).abs() < 1.0, "restart {restart:?}, drift {drift}");
    assert_eq!(restart.steps, 0, "{restart:?}");
    assert_eq!(restart.backwards, 0.0, "{restart:?}");
    assert!(
        restart.swing_ppm < 40.0 && restart.swing_ppm < ours.swing_ppm / 2.0,
        "restart {restart:?}\nfresh {ours:?}"
    );
    // TCG stalls put single readings milliseconds off (the fresh phases
    // too; in a 15 s half a couple of them are the 95th percentile): the
    // bound is on the median, 2 ms (0.1-1.0 ms seen over nine boots: the
    // short restart phase is still slewing away the error it started
    // with).
    assert!(restart.median < 2e-3, "{restart:?}");

    // Refused with a message naming the remedy, non-zero exit, the kernel
    // clock untouched: outside the VM, without CAP_SYS_TIME, with chronyd
    // running (chronyd itself changes the kernel's state meanwhile, so
    // that one is not compared).
    for (check, says, untouched) in [
        ("guard", "--allow-host-clock", true),
        ("capability", "CAP_SYS_TIME", true),
        ("other-daemon", "chronyd is running", false),
    ] {
        let line = (console.lines().find(|l| l.starts_with(&format!("VM check {check} "))))
            .unwrap_or_else(|| panic!("no check {check}:\n{console}"));
        assert!(line.contains("rc=1 ") && line.contains(says), "{line}");
        assert!(!untouched || line.contains("kernel_unchanged=yes"), "{line}");
    }
    // The restart ran as _chrony after binding port 123, kept
    // CAP_SYS_TIME (it disciplined the clock, above) and wrote the drift file.
    assert!(console.contains("kept_cap_sys_time=true"), "{console}");
    let rewritten =
        (console.lines().find(|l| l.starts_with("VM drift phase=restart ppm="))).and_then(|l| field(l, "ppm"));
    assert!(rewritten.is_some_and(|ppm| ppm != drift), "drift file not rewritten as _chrony: {rewritten:?}");

    // chronyd, the yardstick, did its part in the same run (its swing is
    // not computed: 0).
    assert_eq!(chrony.steps, 1, "{chrony:?}");
    assert_eq!(chrony.backwards, 0.0, "{chrony:?}");
}

/// Seconds of served time before the leap's midnight when the upstream
/// starts: the boot (about 6 s) and the first updates come out of it.
const LEAP_LEAD: f64 = 60.0;
/// Seconds the guest watches past the leap.
const LEAP_AFTER: u32 = 15;

/// Console lines of the guest's leap view: (seconds from the leap by the
/// guest's clock, kernel status, kernel time state).
fn leap_views(console: &str) -> Vec<(f64, u32, u32)> {
    (console.lines().filter(|l| l.starts_with("VM leapview")))
        .filter_map(|l| {
            Some((
                field(l, "from_leap")?,
                field(l, "status")? as u32,
                field(l, "time_state").unwrap_or(f64::NAN) as u32,
            ))
        })
        .collect()
}

#[test]
fn the_guest_kernel_inserts_the_leap_second_its_upstream_announces() {
    let _one = ONE_VM.lock().unwrap_or_else(PoisonError::into_inner);
    let image = tempfile::tempdir().expect("temp dir");
    build_image(&vm_dir().join("leap.sh"), image.path());
    // The upstream: a primary whose leap file lists an insertion at
    // 2027-01-01 and whose virtual clock is put a minute before it.
    let leap_dir = tempfile::tempdir().expect("temp dir");
    let file = current_leap_file(leap_dir.path());
    let upstream_port = free_udp_port();
    let served_minus_host: f64 = offset_to(LEAP_LEAD).parse().expect("an offset");
    let _upstream = serve("127.0.0.1", upstream_port, &["--leap-file", &file, "--clock-offset", &offset_to(LEAP_LEAD)]);
    let forward = free_udp_port();
    let args = format!(
        "vm.upstream=10.0.2.2:{upstream_port} vm.leap={} vm.after={LEAP_AFTER} vm.limit=150",
        leap_unix() as u64
    );
    let mut qemu = boot(image.path(), &args, forward);

    // The guest's served time against the upstream's, from the host: (served
    // time from the leap, guest minus upstream).
    let guest = format!("127.0.0.1:{forward}");
    let upstream = format!("127.0.0.1:{upstream_port}");
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut apart = Vec::new();
    while qemu.is_running() && Instant::now() < deadline {
        let theirs = offset(&ntp_query_entry(&["-n", "1", "-t", "1", &upstream]));
        let ours = offset(&ntp_query_entry(&["-n", "1", "-t", "1", &guest]));
        if let (Some(theirs), Some(ours)) = (theirs, ours) {
            apart.push((host_unix() + served_minus_host - leap_unix(), ours - theirs));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = finished_console(&mut qemu, "vm-leap-console.log");

    // STA_INS (16) armed before midnight (the leap's last day), TIME_INS
    // (1) the kernel's state; cleared once the second is inserted.
    let views = leap_views(&console);
    let armed: Vec<f64> = views.iter().filter(|v| v.0 < 0.0 && v.1 & 16 != 0).map(|v| v.0).collect();
    let after: Vec<&(f64, u32, u32)> = views.iter().filter(|v| v.0 >= 3.0).collect();
    let synchronized_at = views.iter().find(|v| v.0 < 0.0 && v.0 > -LEAP_LEAD && v.1 & 64 == 0).map(|v| v.0);
    let inserting = views.iter().any(|v| v.0 < 0.0 && v.2 == 1);
    // The guest's clock: the first step onto the served time, then the
    // kernel's inserted second, CLOCK_REALTIME back by 1 s, once.
    let watch = (console.lines().find(|l| l.starts_with("VM clockwatch")))
        .unwrap_or_else(|| panic!("no clockwatch report:\n{console}"));
    let steps: Vec<f64> = match text_field(watch, "step_sizes") {
        Some("-") | None => Vec::new(),
        Some(sizes) => sizes.split(',').filter_map(|s| s.parse().ok()).collect(),
    };
    let near_leap = |t: f64| (-2.0..3.0).contains(&t);
    let mut gaps: Vec<f64> = apart.iter().filter(|(t, _)| !near_leap(*t) && *t > -40.0).map(|(_, d)| d.abs()).collect();
    gaps.sort_by(f64::total_cmp);
    let after_leap: Vec<f64> = apart.iter().filter(|(t, _)| *t >= 3.0).map(|(_, d)| d.abs()).collect();
    eprintln!(
        "synchronized {:?} s before the leap; STA_INS seen from {:?} s to {:?} s; TIME_INS seen: {inserting}; steps {steps:?}; \
         guest minus upstream served time (|ms|, 40 s before to the end, the leap's seconds left out) median {:.3} max {:.3}; \
         after the leap max {:.3} ms over {} readings",
        synchronized_at.map(|t| -t),
        armed.first(),
        armed.last(),
        quantile(&gaps, 0.5) * 1e3,
        gaps.last().copied().unwrap_or(f64::NAN) * 1e3,
        after_leap.iter().copied().fold(0.0, f64::max) * 1e3,
        after_leap.len()
    );
    assert!(!armed.is_empty(), "STA_INS never set before the leap:\n{console}");
    assert!(inserting, "the kernel never reported TIME_INS:\n{console}");
    assert!(!after.is_empty() && after.iter().all(|v| v.1 & 16 == 0), "STA_INS left set after the leap: {after:?}");
    assert_eq!(steps.len(), 2, "{watch}");
    assert!(steps[0] > 1e6, "the first step, onto the served time 27 days ahead: {watch}");
    assert!((steps[1] + 1.0).abs() < 0.01, "the inserted second: {watch}");
    assert_eq!(field(watch, "backwards_after_first_step"), Some(0.0), "{watch}");
    // Taken once, with the upstream: a second taken twice, or not at all,
    // would leave the guest a second off the upstream after midnight.
    assert!(after_leap.len() >= 5 && after_leap.iter().all(|d| *d < 0.1), "after the leap: {after_leap:?}");
    assert!(quantile(&gaps, 0.5) < 2e-3, "{gaps:?}");

    // The lock: a second --clock system refused, naming the holder; a
    // virtual-clock one not; --force let through with a warning; a holder
    // killed outright leaves no lock.
    let line = |prefix: &str| {
        (console.lines().find(|l| l.starts_with(prefix))).unwrap_or_else(|| panic!("no {prefix}:\n{console}"))
    };
    let second = line("VM check second-system-clock ");
    assert!(second.contains("rc=1") && second.contains("another ntpd-sim disciplines this clock (pid "), "{second}");
    assert!(second.contains("/run/ntpd-sim/system-clock.lock") && second.contains("--force"), "{second}");
    assert!(line("VM virtual-beside ").contains("running=yes"), "{console}");
    assert!(line("VM forced ").contains("running=yes warned=1"), "{console}");
    assert!(line("VM after-kill9 ").contains("running=yes refused=0"), "{console}");
}
