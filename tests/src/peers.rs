//! Real NTP peers from Debian's packages, run as `shared/PEERS.md` shows:
//! chronyd only with `-x` (it never touches the host clock), on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::wait_for;

/// Panics with a clear message when a peer program is missing: `.ci/run`
/// installs them, and a test that needs one must not pass without it.
pub fn require(program: &str) -> PathBuf {
    let found =
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|dir| Path::new(dir).join(program)).find(|p| p.exists());
    found.unwrap_or_else(|| panic!("peer `{program}` is not installed: run .ci/run or see shared/PEERS.md"))
}

/// A chronyd serving on a loopback port; killed by its pid when dropped.
#[derive(Debug)]
pub struct ChronyServer {
    /// The NTP port it serves on.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl ChronyServer {
    /// Starts `chronyd -x` on `port`. With `stratum` it serves as a local
    /// reference of that stratum; without, it answers as unsynchronized.
    pub fn start(port: u16, stratum: Option<u8>) -> Self {
        Self::start_with(port, |_| stratum.map(|s| format!("local stratum {s}\n")).unwrap_or_default())
    }

    /// Starts `chronyd -x` on `port` with more config lines, made by
    /// `extra` from the server's own temporary directory.
    pub fn start_with(port: u16, extra: impl FnOnce(&Path) -> String) -> Self {
        let chronyd = require("chronyd");
        let dir = tempfile::tempdir().expect("temp dir");
        let pidfile = dir.path().join("chronyd.pid");
        let mut config =
            format!("port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\ncmdport 0\npidfile {}\n", pidfile.display());
        config += &extra(dir.path());
        let conf = dir.path().join("chrony.conf");
        std::fs::write(&conf, config).expect("write chrony.conf");
        let status = Command::new(chronyd).args(["-x", "-u", "root", "-f"]).arg(&conf).status().expect("run chronyd");
        assert!(status.success(), "chronyd failed to start");
        let server = Self { port, dir };
        wait_for(Duration::from_secs(5), || server.pid()).expect("chronyd wrote no pid file");
        server
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("chronyd.pid")).ok()?.trim().parse().ok()
    }
}

impl Drop for ChronyServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let pidfile = self.dir.path().join("chronyd.pid");
            let _ = wait_for(Duration::from_secs(5), || (!pidfile.exists()).then_some(()));
        }
    }
}

/// Runs `chronyd -Q` (it sets nothing) as a one-shot client of
/// `127.0.0.1:port` and returns its estimate of server time minus local
/// time, from "System clock wrong by X seconds (ignored)".
pub fn chronyd_query_offset(port: u16) -> Result<f64, String> {
    let chronyd = require("chronyd");
    let output = Command::new(chronyd)
        .args(["-Q", "-f", "/dev/null", "-t", "10"])
        .arg(format!("server 127.0.0.1 port {port} iburst maxsamples 4"))
        .output()
        .map_err(|e| e.to_string())?;
    clock_wrong_by(&output)
}

/// chronyd -Q's estimate from "System clock wrong by X seconds (ignored)",
/// which it prints only when it got a usable answer; the error is
/// everything chronyd said.
pub fn clock_wrong_by(output: &std::process::Output) -> Result<f64, String> {
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let line =
        text.lines().find(|l| l.contains("System clock wrong by")).ok_or_else(|| format!("chronyd -Q said: {text}"))?;
    let value = line.split("wrong by").nth(1).and_then(|rest| rest.split_whitespace().next()).ok_or(line)?;
    value.parse().map_err(|_| format!("unparsable: {line}"))
}

/// Queries `127.0.0.1:port` with Python's ntplib in the given version and
/// returns (stratum, offset, delay, the four reference-ID bytes as text).
/// ntplib's own `ref_id_to_text` spells codes out in words, so the raw bytes
/// are printed instead.
pub fn ntplib_query(port: u16, version: u8) -> Result<(u8, f64, f64, String), String> {
    require("python3");
    let script = format!(
        "import ntplib\nr = ntplib.NTPClient().request('127.0.0.1', port={port}, version={version}, timeout=2)\n\
         print(r.stratum, r.offset, r.delay, r.ref_id.to_bytes(4, 'big').rstrip(b'\\0').decode('ascii'))"
    );
    let output = Command::new("/usr/bin/python3").args(["-c", &script]).output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [stratum, offset, delay, refid] = fields.as_slice() else { return Err(format!("ntplib said: {text}")) };
    let number = |s: &str| s.parse::<f64>().map_err(|_| format!("ntplib said: {text}"));
    Ok((number(stratum)? as u8, number(offset)?, number(delay)?, (*refid).to_string()))
}
