//! gpsd's own chrony SOCK samples from a real kernel PPS, in the test VM
//! (scenario `tests/vm/pps.sh`). Debian's generic kernel boots with
//! qemu's ISA parallel port; `pps_parport` turns each of its interrupts
//! into a PPS assert edge on /dev/pps0, and `ntp-ppsgen` raises one at the
//! top of every second of the guest's clock, then writes that second's
//! NMEA on TCP. A real gpsd reads both and, finding
//! /run/chrony.pps0.sock when it opens /dev/pps0, sends its PPS samples
//! there: gpsd, not the test, writes the socket ntpd-sim reads. chronyd
//! (`-x`) then reads the same gpsd in the same boot. The guest's clock is
//! the truth and nothing writes it: the time each daemon serves is read in
//! the guest with ntp-query.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ntp_e2e::peers::require;
use ntp_e2e::vm::{boot_with, build_image_with, field, finished_console, text_field, vm_dir, Extras};
use ntp_e2e::{bin, free_udp_port};

const PHASE: u32 = 50;

/// The served offsets (served minus the guest's clock) of `phase`'s views
/// once it is stratum 1 on PPS.
fn served(console: &str, phase: &str) -> Vec<f64> {
    let views = console.lines().filter(|l| l.starts_with("VM view") && text_field(l, "phase") == Some(phase));
    let locked = views.skip_while(|l| text_field(l, "refid") != Some("PPS"));
    locked.filter_map(|l| field(l, "served_offset")).collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// How many PPS samples gpsd says it sent to the chrony socket in `phase`.
fn gpsd_samples(console: &str, phase: &str) -> f64 {
    let prefix = format!("VM gpsd phase={phase} ");
    (console.lines().find(|l| l.starts_with(&prefix) && l.contains("chrony_samples=")))
        .and_then(|l| field(l, "chrony_samples"))
        .unwrap_or(0.0)
}

#[test]
fn gpsd_sends_kernel_pps_samples_to_ntpd_sim_and_chronyd() {
    let gpsd = require("gpsd");
    let image = tempfile::tempdir().expect("temp dir");
    let programs: [PathBuf; 2] = [bin("ntp-ppsgen"), gpsd];
    let extras = Extras {
        kernel: Some("linux-image-amd64"),
        modules: &["drivers/parport/parport", "drivers/parport/parport_pc", "drivers/pps/clients/pps_parport"],
        programs: &programs,
        files: &[],
    };
    build_image_with(&vm_dir().join("pps.sh"), image.path(), &extras);
    // The parallel port at 0x378, IRQ 7, with nothing behind it.
    let devices = ["-chardev", "null,id=lpt", "-device", "isa-parallel,chardev=lpt"];
    let mut qemu = boot_with(image.path(), &format!("vm.seconds={PHASE}"), free_udp_port(), &devices);
    let deadline = Instant::now() + Duration::from_secs(u64::from(2 * PHASE) + 180);
    while qemu.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = finished_console(&mut qemu, "vm-pps-console.log");

    // The kernel's PPS: an assert edge a second (ntp-ppsgen leaves out one
    // it could not start in time: the console's `VM missed`), stamped just
    // after the guest's second began (the interrupt's latency under TCG).
    let edges: Vec<(f64, f64)> = (console.lines().filter(|l| l.starts_with("VM view")))
        .filter_map(|l| text_field(l, "assert")?.split_once('#'))
        .filter_map(|(time, sequence)| Some((time.parse().ok()?, sequence.parse().ok()?)))
        .collect();
    let ((t0, n0), (t1, n1)) =
        edges.first().copied().zip(edges.last().copied()).unwrap_or_else(|| panic!("no PPS edges:\n{console}"));
    // Never more than one a second; TCG stalls may cost a few.
    assert!(n1 - n0 >= 0.5 * (t1 - t0) && n1 - n0 <= t1 - t0 + 1.0, "not one edge a second: {edges:?}");
    let late = median(edges.iter().map(|(t, _)| t.fract()).collect());
    assert!(late < 1e-3, "edges stamped {late} s after the second: {edges:?}");

    // gpsd sent its PPS samples to the chrony socket, in each phase.
    for phase in ["ntpd-sim", "chronyd"] {
        let sent = gpsd_samples(&console, phase);
        assert!(sent >= f64::from(PHASE / 2), "gpsd sent {sent} SOCK samples in phase {phase}:\n{console}");
    }

    // ntpd-sim: stratum 1 on PPS (the SOCK refclock, the NMEA one being
    // `noselect`), serving the guest's time; chronyd the same.
    let ours = served(&console, "ntpd-sim");
    let chrony = served(&console, "chronyd");
    assert!(ours.len() >= 5, "ntpd-sim never stratum 1 on PPS, or too late:\n{console}");
    assert!(chrony.len() >= 5, "chronyd never stratum 1 on PPS, or too late:\n{console}");
    let status = console.lines().find(|l| l.starts_with("VM status phase=ntpd-sim")).unwrap_or_default();
    assert!(status.contains(r#""system_peer":"sock:/run/chrony.pps0.sock""#), "{status}");
    let (ours_median, chrony_median) = (median(ours.clone()), median(chrony.clone()));
    eprintln!(
        "served minus the guest's clock, median (us): ntpd-sim {:.1}, chronyd {:.1}",
        ours_median * 1e6,
        chrony_median * 1e6
    );
    eprintln!("ntpd-sim: {ours:?}\nchronyd: {chrony:?}");
    // The kernel stamps each edge 70-110 us after the second (TCG's
    // interrupt latency), so the PPS says the clock is that much ahead and
    // both daemons serve that much behind it; ntp-query's own path under
    // TCG adds 30-100 us (-119 to -181 us seen over four boots, chronyd
    // -147 to -183). The bound is half a millisecond. chronyd (`-x`) is
    // the yardstick, not a bound of its own: while edges still came late
    // it wandered to -1.9 ms; ntpd-sim must do no worse than it.
    assert!(ours_median.abs() < 500e-6, "ntpd-sim served {ours_median} s off: {ours:?}");
    assert!(ours_median.abs() < chrony_median.abs() + 100e-6, "ntpd-sim {ours:?}\nchronyd {chrony:?}");
}
