//! A network namespace of the test's own with a real DNS server in it:
//! `ip netns add`, loopback up, `/etc/netns/NAME/resolv.conf` naming a
//! dnsmasq on the namespace's 127.0.0.1 that serves names from a hosts file
//! the test rewrites (dnsmasq reads it again on SIGHUP). Every process is
//! started inside with `ip netns exec`, which binds that resolv.conf over
//! `/etc/resolv.conf`, so the daemons resolve through the system resolver
//! (glibc) against this dnsmasq and nothing leaves the namespace. Dropping
//! it deletes the namespace and its files; the processes started are
//! [`Daemon`]s, stopped by their pid when dropped (drop them first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::peers::require;
use crate::process::{bin, require_root, wait_for, Daemon};

/// A network namespace, its resolver configuration and a hosts file for
/// its dnsmasq.
#[derive(Debug)]
pub struct Netns {
    name: String,
    etc: PathBuf,
    dir: tempfile::TempDir,
}

impl Netns {
    /// Creates a namespace (as root, as CI runs) with loopback up.
    pub fn new(purpose: &str) -> Self {
        require_root();
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ntpe2e-{purpose}-{}-{n}", std::process::id());
        let etc = PathBuf::from("/etc/netns").join(&name);
        run(Command::new("ip").args(["netns", "add", &name]));
        let netns = Self { name, etc, dir: tempfile::tempdir().expect("temp dir") };
        std::fs::create_dir_all(&netns.etc).expect("/etc/netns/NAME");
        std::fs::write(netns.etc.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            .expect("resolv.conf");
        run(netns.command("ip").args(["link", "set", "lo", "up"]));
        netns.set_hosts(&[]);
        netns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes `/etc/NAME` as processes inside see it (`ip netns exec`
    /// binds `/etc/netns/NS/NAME` over it): `hosts`, say.
    pub fn set_etc_file(&self, name: &str, text: &str) {
        std::fs::write(self.etc.join(name), text).expect("write /etc/netns/NS file");
    }

    /// A directory for the test's files (removed with the namespace).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `program` to run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Starts `program` with `args` inside the namespace.
    pub fn spawn(&self, program: impl AsRef<Path>, args: &[&str]) -> Daemon {
        let program = program.as_ref().display().to_string();
        let mut all = vec!["netns", "exec", self.name.as_str(), program.as_str()];
        all.extend_from_slice(args);
        Daemon::spawn("ip", &all)
    }

    /// `ntpd-sim serve --listen ADDR --log-level debug` with `args`, inside.
    pub fn serve(&self, listen: &str, args: &[&str]) -> Daemon {
        let mut all = vec!["serve", "--listen", listen, "--log-level", "ntp_daemon=debug,info"];
        all.extend_from_slice(args);
        self.spawn(bin("ntpd-sim"), &all)
    }

    /// The hosts file dnsmasq serves: `(address, name)` pairs.
    fn hosts(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// Rewrites the names dnsmasq serves (it must be sent SIGHUP to read them).
    pub fn set_hosts(&self, records: &[(&str, &str)]) {
        let text: String = records.iter().map(|(address, name)| format!("{address} {name}\n")).collect();
        std::fs::write(self.hosts(), text).expect("write hosts");
    }

    /// Starts dnsmasq on the namespace's 127.0.0.1:53, authoritative for
    /// nothing but the hosts file, forwarding nowhere, caching nothing.
    pub fn start_dns(&self) -> Daemon {
        let dnsmasq = require("dnsmasq");
        let hosts = format!("--addn-hosts={}", self.hosts().display());
        let args = [
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            hosts.as_str(),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--pid-file=",
            "--no-negcache",
            "--local-ttl=0",
            "--log-facility=-",
        ];
        let dns = self.spawn(dnsmasq, &args);
        let up = dns.wait_for_line("read ", Duration::from_secs(10));
        assert!(up.is_some(), "dnsmasq did not start:\n{}", dns.output());
        dns
    }

    /// `ntpd-sim status --http HTTP --json` inside, parsed; `None` until it answers.
    pub fn status(&self, http: &str) -> Option<Value> {
        let output = self.command(bin("ntpd-sim")).args(["status", "--http", http, "--json"]).output().ok()?;
        output.status.success().then(|| serde_json::from_slice(&output.stdout).expect("status JSON"))
    }

    /// `GET http://HTTP/metrics` inside, with curl.
    pub fn metrics(&self, http: &str) -> String {
        let output = self.command(require("curl")).args(["-sf", &format!("http://{http}/metrics")]).output();
        output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    /// Waits until `/status` at `http` satisfies `check`, returning it.
    pub fn wait_status(&self, http: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Option<Value> {
        wait_for(timeout, || self.status(http).filter(|s| check(s)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}
