//! `ntpd-sim simulate`: the front end of the `ntp-sim` crate runs a
//! scenario, writes its outputs, and refuses a typo with the key named.

use std::path::{Path, PathBuf};

fn scenario(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/scenarios").join(file)
}

#[test]
fn the_cli_runs_a_scenario_and_writes_its_outputs() {
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ntpd-sim"))
        .args(["simulate", "--duration", "2m", "--seed", "7", "--out"])
        .arg(out.path())
        .arg(scenario("01-one-server-five-clients.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("seed 7, 120 s simulated") && stdout.contains("client-5"), "{stdout}");
    for file in ["summary.txt", "offset.svg", "series/client-1.csv", "series/server.csv"] {
        assert!(out.path().join(file).exists(), "{file}");
    }
    // A typo in a scenario is refused with the key named, and exit status 1.
    let bad = out.path().join("bad.toml");
    std::fs::write(&bad, "[simulation]\nduration = 10\nsede = 3\n[[node]]\nname = \"a\"\nkind = \"reference\"\n")
        .unwrap();
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_ntpd-sim")).args(["simulate"]).arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sede"), "{}", String::from_utf8_lossy(&output.stderr));
}
