//! The interoperability matrix (docs/interop.md): every widely used NTP
//! implementation against ntpd-sim, as its client and as its server, plain
//! and with NTS. Each peer's pairs are in a file of their own and run in a
//! thread of their own, in hosts (network namespaces, or the test VM for a
//! client that adjusts a clock) that no other pair shares, so they run at
//! once. The table is written to docs/interop.md from what was measured; a
//! failed pair, or a peer that is missing, fails the test.
//!
//! `INTEROP_PEERS=chrony,NTPsec cargo test -p ntp-e2e --test interop` runs
//! only those peers (and leaves docs/interop.md alone).

mod bed;
mod busybox;
mod chrony;
mod ntpd_rs;
mod ntpd_rs_vm;
mod ntpdig;
mod ntplib;
mod ntpsec;
mod oneshot;
mod openntpd;
mod report;
mod timesyncd;
mod vm_peers;

use std::panic::AssertUnwindSafe;

use report::{Auth, Direction, Outcome, Row};

/// A peer: its name, its pairs, and what docs/interop.md says of how it runs.
struct Peer {
    name: &'static str,
    pairs: fn() -> Vec<Row>,
    notes: &'static str,
}

const PEERS: &[Peer] = &[
    Peer { name: "chrony", pairs: chrony::pairs, notes: chrony::NOTES },
    Peer { name: "NTPsec", pairs: ntpsec::pairs, notes: ntpsec::NOTES },
    Peer { name: "ntpd-rs", pairs: ntpd_rs::pairs, notes: ntpd_rs::NOTES },
    Peer { name: "ntpdig", pairs: ntpdig::pairs, notes: ntpdig::NOTES },
    Peer { name: "ntplib", pairs: ntplib::pairs, notes: ntplib::NOTES },
    Peer { name: "OpenNTPD", pairs: openntpd::pairs, notes: openntpd::NOTES },
    Peer { name: "systemd-timesyncd", pairs: timesyncd::pairs, notes: timesyncd::NOTES },
    Peer { name: "BusyBox", pairs: busybox::pairs, notes: busybox::NOTES },
];

#[test]
fn interop_matrix() {
    let only = std::env::var("INTEROP_PEERS").ok();
    let names: Vec<&str> = PEERS.iter().map(|p| p.name).collect();
    for name in only.iter().flat_map(|o| o.split(',')) {
        assert!(names.iter().any(|n| n.eq_ignore_ascii_case(name)), "INTEROP_PEERS: no peer {name:?} in {names:?}");
    }
    let chosen: Vec<&Peer> = PEERS
        .iter()
        .filter(|p| only.as_deref().is_none_or(|o| o.split(',').any(|n| n.eq_ignore_ascii_case(p.name))))
        .collect();
    assert!(
        !chosen.is_empty(),
        "INTEROP_PEERS names no peer of {:?}",
        PEERS.iter().map(|p| p.name).collect::<Vec<_>>()
    );
    let threads: Vec<_> = chosen
        .iter()
        .map(|peer| {
            let (name, pairs) = (peer.name, peer.pairs);
            std::thread::spawn(move || {
                std::panic::catch_unwind(AssertUnwindSafe(pairs)).unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    vec![Row {
                        peer: name,
                        program: String::new(),
                        version: String::new(),
                        direction: Direction::PeerClient,
                        auth: Auth::Plain,
                        outcome: Outcome::Fails(format!("the runner stopped: {why}")),
                    }]
                })
            })
        })
        .collect();
    let rows: Vec<Row> = threads.into_iter().flat_map(|t| t.join().expect("a peer's thread")).collect();
    let notes: Vec<(&str, &str)> = chosen.iter().map(|p| (p.name, p.notes)).collect();
    let text = report::markdown(&rows, &notes, &now(), &host());
    eprintln!("{text}");
    let run = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop.md");
    std::fs::write(&run, &text).unwrap_or_else(|e| panic!("write {}: {e}", run.display()));
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.failed())
        .map(|r| format!("{} {} {:?} {:?}: {:?}", r.peer, r.program, r.direction, r.auth, r.outcome))
        .collect();
    assert!(failed.is_empty(), "pairs that failed:\n{}", failed.join("\n"));
    if only.is_some() {
        return;
    }
    // The committed matrix is the project's promise: it must say what this
    // run found, pair for pair (the figures change from run to run).
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/interop.md");
    if std::env::var_os("INTEROP_WRITE").is_some() {
        std::fs::write(&docs, &text).unwrap_or_else(|e| panic!("write {}: {e}", docs.display()));
    }
    let committed = std::fs::read_to_string(&docs).unwrap_or_default();
    assert_eq!(
        report::pairs_of(&committed),
        report::pairs_of(&text),
        "docs/interop.md is not what this run found ({} is): INTEROP_WRITE=1 cargo test -p ntp-e2e --test interop",
        run.display()
    );
}

/// The date and time of the run, UTC, to the minute.
fn now() -> String {
    let output = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    output.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// The machine: kernel and cores, so figures from different machines are told apart.
fn host() -> String {
    let kernel = std::process::Command::new("uname").arg("-r").output();
    let kernel = kernel.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("Linux {kernel}, {cores} cores")
}
