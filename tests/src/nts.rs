//! NTS test fixtures: a CA made on the spot with openssl (a server
//! certificate for `localhost` and 127.0.0.1-3), chronyd as an NTS server,
//! and chronyd as a one-shot NTS client (shared/PEERS.md, "NTS").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::peers::{clock_wrong_by, require, ChronyServer};
use crate::process::wait_for;

pub use crate::process::free_tcp_port_on;

/// A TCP port on 127.0.0.1, picked as [`free_tcp_port_on`] picks them.
pub fn free_tcp_port() -> u16 {
    free_tcp_port_on("127.0.0.1")
}

/// Waits (up to 10 s) until something accepts TCP connections on
/// `ip:port`, such as an NTS-KE server that has started; panics if not.
pub fn wait_tcp_open(ip: &str, port: u16) {
    wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((ip, port)).ok())
        .unwrap_or_else(|| panic!("nothing listens on TCP {ip}:{port}"));
}

/// Waits (up to 10 s) until something accepts TCP connections on
/// `ip:port` inside the namespace `ns`; panics if not.
pub fn wait_tcp_open_in(ns: &crate::netns::Netns, ip: &str, port: u16) {
    let probe = format!("exec 3<>/dev/tcp/{ip}/{port}");
    let open = || ns.command("bash").args(["-c", &probe]).output().ok()?.status.success().then_some(());
    wait_for(Duration::from_secs(10), open).unwrap_or_else(|| panic!("nothing listens on TCP {ip}:{port}"));
}

/// A throw-away CA and a server certificate it signed, in a temp dir.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes the CA and the server's key and certificate (RSA 2048, 2 days).
    pub fn new() -> Self {
        Self::for_addresses(&["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    }

    /// As [`TestCa::new`], the certificate naming `localhost` and these
    /// IP addresses (or DNS names: anything that does not parse as an address).
    pub fn for_addresses(addresses: &[&str]) -> Self {
        let openssl = require("openssl");
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let output = Command::new(&openssl).args(args).current_dir(dir.path()).output().expect("run openssl");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]
            .into_iter()
            .chain(["-subj", "/CN=test ca"])
            .collect::<Vec<_>>());
        run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "s.key", "-out", "s.csr", "-subj", "/CN=localhost"]);
        let kind = |a: &str| if a.parse::<std::net::IpAddr>().is_ok() { "IP" } else { "DNS" };
        let names: String = addresses.iter().map(|a| format!(",{}:{a}", kind(a))).collect();
        std::fs::write(dir.path().join("ext"), format!("subjectAltName=DNS:localhost{names}\n")).expect("write ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "s.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "s.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        Self { dir }
    }

    /// The CA certificate (PEM), for `--ca-file` and `ntstrustedcerts`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("s.crt")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("s.key")
    }

    /// The temp dir, for other files of the test.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// chronyd as a stratum 1 NTS server: NTP on `port`, NTS-KE on `ke_port`.
#[derive(Debug)]
pub struct ChronyNtsServer {
    _server: ChronyServer,
}

impl ChronyNtsServer {
    /// Starts `chronyd -x` with the CA's server certificate.
    pub fn start(port: u16, ke_port: u16, ca: &TestCa) -> Self {
        let server = ChronyServer::start_with(port, |dir| {
            format!(
                "local stratum 1\nntsport {ke_port}\nntsservercert {}\nntsserverkey {}\nntsdumpdir {}\n",
                ca.server_cert().display(),
                ca.server_key().display(),
                dir.display()
            )
        });
        wait_tcp_open("127.0.0.1", ke_port);
        Self { _server: server }
    }
}

/// Runs chronyd as a one-shot NTS client (`-Q`, it sets nothing) of
/// `localhost`, NTS-KE on `ke_port`, NTP on `port`, trusting `ca`. Returns
/// its offset estimate, which it prints only when NTS authenticated; the
/// error is everything chronyd said.
pub fn chronyd_nts_query_offset(ke_port: u16, port: u16, ca: &TestCa) -> Result<f64, String> {
    let chronyd = require("chronyd");
    let output = Command::new(chronyd)
        .args(["-u", "root", "-Q", "-t", "20"])
        .arg(format!("ntstrustedcerts {}", ca.ca_cert().display()))
        .arg(format!("ntsdumpdir {}", ca.dir().display()))
        .arg(format!("server localhost iburst nts ntsport {ke_port} port {port} maxsamples 2"))
        .output()
        .map_err(|e| e.to_string())?;
    clock_wrong_by(&output)
}
