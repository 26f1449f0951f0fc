//! The test VM (tests/vm/, docs/testing.md): a Debian cloud kernel and an
//! initramfs built from packages, booted in qemu with TCG, where a
//! daemon may discipline the (guest's) system clock. The guest reaches
//! the host only through qemu's user network: 10.0.2.2 is the host's
//! loopback, and one UDP port of the host's loopback is forwarded to the
//! guest's port 123 so the host can measure the time the guest serves.
//! What the guest says comes back on its serial console as `VM ...` lines.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::Netns;
use crate::peers::require;
use crate::process::{bin, Daemon};

/// The repository's `tests/vm/` directory.
pub fn vm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vm")
}

/// What a scenario needs beyond the cloud kernel and the usual programs
/// (`tests/vm/build.sh` reads them from its environment).
#[derive(Debug, Default)]
pub struct Extras<'a> {
    /// The kernel's metapackage, when not `linux-image-cloud-amd64`.
    pub kernel: Option<&'a str>,
    /// More modules, paths under the kernel's `kernel/` without `.ko`,
    /// copied to the guest's `/modules` for the scenario to load.
    pub modules: &'a [&'a str],
    /// More programs copied to the guest's `/bin`, with their libraries.
    pub programs: &'a [PathBuf],
    /// More files: (a file here, its absolute path in the guest).
    pub files: &'a [(PathBuf, &'a str)],
}

/// Builds the kernel and initramfs with `scenario` as the guest's
/// `/scenario` into `out`; panics with the script's output on failure.
pub fn build_image(scenario: &Path, out: &Path) {
    build_image_with(scenario, out, &Extras::default());
}

/// [`build_image`] with `extras` in the image.
pub fn build_image_with(scenario: &Path, out: &Path, extras: &Extras<'_>) {
    require("qemu-system-x86_64");
    require("busybox");
    let bin_dir = bin("ntpd-sim").parent().map(Path::to_path_buf).expect("binary directory");
    bin("ntp-clockwatch");
    let programs: Vec<&str> = extras.programs.iter().map(|p| path(p)).collect();
    let files: Vec<String> = extras.files.iter().map(|(here, guest)| format!("{}={guest}", path(here))).collect();
    let mut build = Command::new("bash");
    if let Some(kernel) = extras.kernel {
        build.env("VM_KERNEL", kernel);
    }
    let output = build
        .env("VM_MODULES", extras.modules.join(" "))
        .env("VM_PROGRAMS", programs.join(" "))
        .env("VM_FILES", files.join(" "))
        .arg(vm_dir().join("build.sh"))
        .args([bin_dir.as_os_str(), scenario.as_os_str(), out.as_os_str()])
        .output()
        .expect("run tests/vm/build.sh");
    assert!(
        output.status.success(),
        "tests/vm/build.sh failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Boots the image in `dir` with `kernel_args` appended to the command
/// line, the host's 127.0.0.1:`forward` forwarded to the guest's UDP port
/// 123. The guest powers off when its scenario ends; qemu is killed by its
/// pid if the test ends first.
pub fn boot(dir: &Path, kernel_args: &str, forward: u16) -> Daemon {
    boot_with(dir, kernel_args, forward, &[])
}

/// [`boot`] with more qemu arguments (`devices`: `-device`s and their
/// back ends).
pub fn boot_with(dir: &Path, kernel_args: &str, forward: u16, devices: &[&str]) -> Daemon {
    let qemu = require("qemu-system-x86_64");
    let args = qemu_args(dir, kernel_args, forward, devices);
    Daemon::spawn(qemu, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// [`boot`] with qemu inside the network namespace `netns`: the guest's
/// 10.0.2.2 is then that namespace's loopback, and an address of the
/// namespace's own networks is reached through qemu's NAT, by a guest that
/// routes it via 10.0.2.2 (the interop matrix's VM client reaches
/// ntpd-sim and the relays of its test bed so).
pub fn boot_in(netns: &Netns, dir: &Path, kernel_args: &str, forward: u16) -> Daemon {
    let qemu = require("qemu-system-x86_64");
    let args = qemu_args(dir, kernel_args, forward, &[]);
    netns.spawn(qemu, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// qemu's arguments for [`boot_with`].
fn qemu_args(dir: &Path, kernel_args: &str, forward: u16, devices: &[&str]) -> Vec<String> {
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    let append = format!("console=ttyS0 quiet panic=-1 {kernel_args}");
    // No restrict=on: it would also cut the guest's polls to 10.0.2.2. The
    // guest has no default route, so 10.0.2.0/24 is all it can reach (and,
    // under [`boot_in`], the routes it adds to that namespace's own
    // networks, which lead nowhere off the machine).
    let netdev = format!("user,id=n0,net=10.0.2.0/24,hostfwd=udp:127.0.0.1:{forward}-:123");
    let mut args = vec![
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
        "-kernel",
        path(&kernel),
        "-initrd",
        path(&initrd),
        "-append",
        &append,
        "-netdev",
        &netdev,
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
    ];
    args.extend_from_slice(devices);
    args.into_iter().map(String::from).collect()
}

/// The guest's whole console once the VM has powered off by itself: kept
/// as `target/NAME` for reading after the run; panics (failing the test)
/// if the VM is still running or its scenario did not print `VM done`.
pub fn finished_console(qemu: &mut Daemon, name: &str) -> String {
    assert!(!qemu.is_running(), "the VM did not finish in time:\n{}", qemu.output());
    let console = qemu.output();
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(name);
    let _ = std::fs::write(&kept, &console);
    assert!(console.contains("VM done"), "the scenario did not finish:\n{console}");
    console
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The `key=value` field `key` of a console line, as a number.
#[must_use]
pub fn field(line: &str, key: &str) -> Option<f64> {
    let prefix = format!("{key}=");
    let mut words = line.split_whitespace();
    let value = words.find_map(|w| w.strip_prefix(prefix.as_str()))?;
    // `upstream_offset= -0.0001`: busybox awk leaves a space after the '='.
    let value = if value.is_empty() { words.next()? } else { value };
    value.parse().ok()
}

/// The `key=value` field `key` of a console line, as text.
#[must_use]
pub fn text_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(prefix.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_console_lines() {
        let line = "VM view phase=restart t=65.21 kernel_ppm=-7.088 status=8192 upstream_offset= -0.0007";
        assert_eq!(field(line, "kernel_ppm"), Some(-7.088));
        assert_eq!(field(line, "upstream_offset"), Some(-0.0007));
        assert_eq!(text_field(line, "phase"), Some("restart"));
        assert_eq!(field(line, "absent"), None);
    }
}
