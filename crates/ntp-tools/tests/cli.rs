//! The tools start and describe their flags. Being an integration test of
//! this package, it also makes `cargo test --workspace` build both binaries
//! into target/, where the end-to-end tests (`tests/`) run them.

use std::process::Command;

fn help(binary: &str) -> String {
    let output = Command::new(binary).arg("--help").output().expect("run the tool");
    assert!(output.status.success(), "{binary} --help: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

#[test]
fn ntp_loadgen_describes_its_subcommands() {
    let text = help(env!("CARGO_BIN_EXE_ntp-loadgen"));
    assert!(text.contains("Usage: ntp-loadgen"), "{text}");
}

#[test]
fn ntp_relay_describes_its_flags() {
    let text = help(env!("CARGO_BIN_EXE_ntp-relay"));
    assert!(text.contains("Usage: ntp-relay") && text.contains("--upstream"), "{text}");
}
