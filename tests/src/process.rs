//! Starting and stopping real processes, and finding free loopback ports.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;

/// Path of one of the project's binaries (`ntpd-sim`, `ntp-query`) in the
/// target directory that holds this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target directory");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built: run `cargo test --workspace`, which builds it", path.display());
    path
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    free_udp_port_on("127.0.0.1")
}

/// A UDP port on loopback address `ip` (any of 127.0.0.0/8, so that each
/// daemon of a chain can be a host of its own) that is free now and that
/// this test process has handed out to nobody else. It is picked below the
/// kernel's ephemeral range, so no client socket of a test running in
/// parallel can be given it between this check and the daemon's bind.
pub fn free_udp_port_on(ip: &str) -> u16 {
    free_port_below_ephemeral(ip, |port| UdpSocket::bind((ip, port)).is_ok())
}

/// A TCP port on `ip`, picked as [`free_udp_port_on`] picks UDP ones.
pub fn free_tcp_port_on(ip: &str) -> u16 {
    free_port_below_ephemeral(ip, |port| std::net::TcpListener::bind((ip, port)).is_ok())
}

/// A port below the kernel's ephemeral range that `free` says is free on
/// `ip` and that this process has handed out to nobody else (UDP and TCP
/// share the record, which costs nothing and keeps it simple).
fn free_port_below_ephemeral(ip: &str, free: impl Fn(u16) -> bool) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let below = ephemeral_range_start().clamp(12_000, 32_768);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut rng = rand::thread_rng();
    for _ in 0..10_000 {
        let port = rng.gen_range(10_000..below);
        if !handed_out.contains(&port) && free(port) {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port on {ip} below {below}");
}

/// The first port of the kernel's ephemeral range (32768 if unknown).
fn ephemeral_range_start() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    range.split_whitespace().next().and_then(|low| low.parse().ok()).unwrap_or(32_768)
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process this test started; killed (by its own pid) when dropped.
/// What it writes to stdout and stderr is collected as it comes, line by
/// line, so a test can wait for a log line while it runs.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    name: String,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// Appends each line `from` gives to `output`, until it closes.
fn collect(from: impl Read + Send + 'static, output: &Arc<Mutex<String>>) -> JoinHandle<()> {
    let output = Arc::clone(output);
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut text = output.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            text.push_str(&line);
            text.push('\n');
        }
    })
}

impl Daemon {
    /// Starts `program` with `args`, output captured to files under the
    /// system temp directory so a failing test can show it.
    pub fn spawn(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        let program = program.into();
        let name = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut child = Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), &output),
            collect(child.stderr.take().expect("piped stderr"), &output),
        ];
        Self { child, name, output, readers }
    }

    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The first line of output containing `text`, waiting up to `timeout`.
    pub fn wait_for_line(&self, text: &str, timeout: Duration) -> Option<String> {
        wait_for(timeout, || self.output().lines().find(|l| l.contains(text)).map(strip_ansi))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal to this process only.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {} ({})", self.pid(), self.name);
    }

    /// Sends SIGTERM and waits for the exit, returning its status and
    /// everything the process wrote to stdout and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.signal("TERM");
        let status = self.child.wait().expect("wait for the daemon");
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        (status, self.output())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `ntpd-sim serve --listen IP:0` with `args` on loopback address
/// `ip`, and returns it with the port the kernel gave it, read from its
/// start-up log line: no port is picked beforehand and handed over, so
/// tests running in parallel cannot race for one.
pub fn ntpd_sim_serve(ip: &str, args: &[&str]) -> (Daemon, u16) {
    let listen = format!("{ip}:0");
    let mut all = vec!["serve", "--listen", &listen];
    all.extend_from_slice(args);
    let daemon = Daemon::spawn(bin("ntpd-sim"), &all);
    let line = daemon.wait_for_line("serving NTP", Duration::from_secs(10));
    let line = line.unwrap_or_else(|| panic!("ntpd-sim did not start serving:\n{}", daemon.output()));
    let port = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addresses="))
        .and_then(|address| address.parse::<std::net::SocketAddr>().ok())
        .map(|address| address.port());
    (daemon, port.unwrap_or_else(|| panic!("no address in {line}")))
}

/// The numeric field `name` (as in `name=42`) of the first log line that
/// contains `line`, terminal colour codes ignored.
pub fn log_field(output: &str, line: &str, name: &str) -> Option<u64> {
    let found = strip_ansi(output.lines().find(|l| l.contains(line))?);
    let prefix = format!("{name}=");
    found.split_whitespace().find_map(|f| f.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
}

/// `line` without terminal colour codes (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `ntp-query` with `args` (which should include `--json`) and returns
/// its exit code and the JSON it printed.
pub fn ntp_query_json(args: &[&str]) -> (i32, serde_json::Value) {
    let output = Command::new(bin("ntp-query")).args(args).output().expect("run ntp-query");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (output.status.code().expect("exit code"), json)
}

/// Runs `ntp-query --json` with `args` and returns its entry for the first
/// server (`servers[0]`: stratum, offset, error...), or null if it printed
/// no JSON at all.
pub fn ntp_query_entry(args: &[&str]) -> serde_json::Value {
    let output = Command::new(bin("ntp-query")).arg("--json").args(args).output().expect("run ntp-query");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    json["servers"][0].clone()
}

/// The smallest valid NTPv4 client request: mode 3, a nonzero transmit
/// timestamp (1), everything else zero.
pub const CLIENT_REQUEST: [u8; 48] = {
    let mut request = [0u8; 48];
    request[0] = (4 << 3) | 3;
    request[47] = 1;
    request
};

/// Sends `datagram` from a fresh socket on loopback address `from` to
/// 127.0.0.1:`port`; the reply, if one comes within 300 ms.
pub fn udp_exchange(from: &str, port: u16, datagram: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((from, 0)).expect("bind a loopback address");
    socket.set_read_timeout(Some(Duration::from_millis(300))).expect("read timeout");
    socket.send_to(datagram, ("127.0.0.1", port)).expect("send");
    let mut buf = [0u8; 2048];
    socket.recv(&mut buf).ok().map(|len| buf[..len].to_vec())
}

/// Panics unless the tests run as root, as CI does (binding port 123,
/// dropping to another user, receive buffers past `rmem_max`).
pub fn require_root() {
    let id = Command::new("id").arg("-u").output().expect("run id");
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), "0", "this test runs as root (as CI does)");
}

/// `ntpd-sim status --http HTTP --json`, parsed; `None` until it answers.
pub fn ntpd_sim_status(http: &str) -> Option<serde_json::Value> {
    let output =
        Command::new(bin("ntpd-sim")).args(["status", "--http", http, "--json"]).output().expect("run ntpd-sim");
    output.status.success().then(|| serde_json::from_slice(&output.stdout).expect("status JSON"))
}
