//! Every bundled scenario in `config/scenarios/` runs and meets its
//! expectations; runs are byte-for-byte repeatable.

use std::path::{Path, PathBuf};

use ntp_sim::report::NodeSummary;
use ntp_sim::{run_file, Outcome, SimulateOptions};

fn scenario(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/scenarios");
    let found = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(name));
    found.unwrap_or_else(|| panic!("scenario {name} in {}", dir.display())).path()
}

fn run(name: &str, options: SimulateOptions) -> Outcome {
    let outcome = run_file(&scenario(name), &options).unwrap();
    eprintln!("{}", outcome.table);
    outcome
}

fn node<'a>(outcome: &'a Outcome, name: &str) -> &'a NodeSummary {
    outcome.summaries.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("node {name}"))
}

fn nodes<'a>(outcome: &'a Outcome, prefix: &'a str) -> impl Iterator<Item = &'a NodeSummary> + 'a {
    outcome.summaries.iter().filter(move |s| s.name.starts_with(prefix))
}

#[test]
fn one_server_five_clients_converge() {
    let outcome = run("01", SimulateOptions::default());
    assert_eq!(nodes(&outcome, "client-").count(), 5);
    for client in nodes(&outcome, "client-") {
        assert_eq!(client.stratum, 2, "{}", client.name);
        assert!(client.within_1ms.is_some_and(|t| t < 60.0), "{client:?}");
        assert!(client.rms_after.is_some_and(|r| r < 200e-6), "{client:?}");
    }
}

#[test]
fn error_accumulates_down_the_hierarchy() {
    let outcome = run("02", SimulateOptions::default());
    let mean_rms = |prefix| {
        let rms: Vec<f64> = nodes(&outcome, prefix).map(|n| n.rms_after.expect("converged")).collect();
        rms.iter().sum::<f64>() / rms.len() as f64
    };
    assert!(nodes(&outcome, "stratum2-").all(|n| n.stratum == 2));
    assert!(nodes(&outcome, "stratum3-").all(|n| n.stratum == 3 && n.within_1ms.is_some()));
    assert!(mean_rms("stratum3-") > mean_rms("stratum2-"), "error grows with the stratum");
}

#[test]
fn two_disagreeing_servers_leave_a_client_unsynchronized_and_a_third_settles_it() {
    let outcome = run("03", SimulateOptions::default());
    assert_eq!(node(&outcome, "two-servers").stratum, 0);
    let three = node(&outcome, "three-servers");
    assert_eq!(three.stratum, 2);
    assert!(three.max_after.is_some_and(|m| m < 1e-3), "{three:?}");
}

#[test]
fn chrony_style_stress_meets_chronys_criteria_and_our_goals() {
    let outcome = run("04", SimulateOptions::default());
    let client = node(&outcome, "client");
    // chrony: within 1 ms in under 120 s; our goal: 60 s.
    assert!(client.within_1ms.is_some_and(|t| t <= 60.0), "{client:?}");
    assert!(client.max_after.is_some_and(|m| m <= 1e-3), "{client:?}");
    // chrony: RMS at most 300 µs; our goal: 100 µs.
    assert!(client.rms_after.is_some_and(|r| r <= 100e-6), "{client:?}");
    assert!(client.final_frequency_ppm.abs() < 0.5, "{client:?}");
}

#[test]
fn a_lying_server_is_voted_out() {
    let outcome = run("05", SimulateOptions::default());
    for client in nodes(&outcome, "client-") {
        assert_eq!(client.stratum, 2);
        // The liar is 2 s off from 600 s on; following it even a little
        // would show as milliseconds.
        assert!(client.max_after.is_some_and(|m| m < 1e-3), "{client:?}");
        assert!(client.within_1ms.is_some_and(|t| t < 600.0), "{client:?}");
    }
}

#[test]
fn a_thousand_clients_under_ten_servers() {
    // Three simulated hours here; the full day is a benchmark (docs/performance.md).
    let outcome = run("06", SimulateOptions { duration: Some(3.0 * 3600.0), ..SimulateOptions::default() });
    assert_eq!(nodes(&outcome, "client-").count(), 1000);
    assert!(nodes(&outcome, "server-").all(|n| n.stratum == 2));
    let synced = nodes(&outcome, "client-").filter(|n| n.stratum == 3 && n.within_1ms.is_some()).count();
    assert_eq!(synced, 1000, "every client at stratum 3 and within 1 ms at the end");
}

#[test]
fn same_scenario_and_seed_give_byte_identical_output() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        let _ = run("05", SimulateOptions { out: Some(dir.path().to_path_buf()), ..SimulateOptions::default() });
    }
    let mut files = vec![PathBuf::from("summary.txt"), PathBuf::from("offset.svg")];
    for entry in std::fs::read_dir(dirs[0].path().join("series")).unwrap() {
        files.push(Path::new("series").join(entry.unwrap().file_name()));
    }
    assert!(files.len() > 5);
    for file in files {
        let a = std::fs::read(dirs[0].path().join(&file)).unwrap();
        let b = std::fs::read(dirs[1].path().join(&file)).unwrap();
        assert!(a == b, "{} differs between runs", file.display());
    }
    let svg = std::fs::read_to_string(dirs[0].path().join("offset.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("stratum 2") && svg.contains("<polyline"));
    let csv = std::fs::read_to_string(dirs[0].path().join("series/client-1.csv")).unwrap();
    assert!(csv.starts_with("time_s,offset_s,frequency_ppm,stratum\n"));
    // A different seed gives a different run.
    let other = run("05", SimulateOptions { seed: Some(99), ..SimulateOptions::default() });
    let first = std::fs::read_to_string(dirs[0].path().join("summary.txt")).unwrap();
    assert_ne!(other.table, first);
}
