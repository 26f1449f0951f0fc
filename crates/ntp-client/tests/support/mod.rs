//! Test support: fake NTP servers (a UDP socket in a thread that answers as
//! told) and running the `ntp-query` binary.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ntp_proto::packet::{Header, LeapIndicator, Mode, ReferenceId, Stratum};
use ntp_proto::{NtpDuration, NtpShort, NtpTimestamp};

/// How a fake server answers the n-th request (counting from 0).
pub type Behaviour = dyn Fn(usize, &Header) -> Option<Header> + Send + Sync;

/// A fake NTP server on loopback; stops when dropped.
pub struct FakeServer {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Serves on `bind` (e.g. `127.0.0.1:0`, `[::1]:0`) as `behaviour` says.
    pub fn start(bind: &str, behaviour: Box<Behaviour>) -> Self {
        let socket = UdpSocket::bind(bind).expect("bind the fake server");
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let address = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let count = AtomicUsize::new(0);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else { continue };
                let Ok(request) = Header::decode(&buf[..len]) else { continue };
                if let Some(reply) = behaviour(count.fetch_add(1, Ordering::Relaxed), &request) {
                    let _ = socket.send_to(&reply.encode(), peer);
                }
            }
        });
        Self { address, stop, thread: Some(thread) }
    }

    /// A stratum-2 server whose clock is `offset` seconds ahead.
    pub fn with_offset(offset: f64) -> Self {
        Self::start("127.0.0.1:0", Box::new(move |_, request| Some(good_reply(request, offset))))
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply of a well-behaved stratum-2 server `offset` seconds ahead.
pub fn good_reply(request: &Header, offset: f64) -> Header {
    let now = NtpTimestamp::from_system_time(SystemTime::now()) + NtpDuration::from_seconds_f64(offset);
    Header {
        leap: LeapIndicator::NoWarning,
        version: request.version,
        mode: Mode::Server,
        stratum: Stratum(2),
        poll: request.poll,
        precision: -20,
        root_delay: NtpShort::from_seconds_f64(0.002),
        root_dispersion: NtpShort::from_seconds_f64(0.010),
        reference_id: ReferenceId([127, 0, 0, 9]),
        reference: now - NtpDuration::from_seconds(10),
        origin: request.transmit,
        receive: now,
        transmit: now,
    }
}

/// A kiss-o'-death with `code`, echoing the origin as a real one does.
pub fn kiss(request: &Header, code: &[u8; 4]) -> Header {
    Header {
        leap: LeapIndicator::Unsynchronized,
        stratum: Stratum::UNSPECIFIED,
        reference_id: ReferenceId(*code),
        ..good_reply(request, 0.0)
    }
}

/// What `ntp-query` did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `ntp-query` with `args`.
pub fn ntp_query(args: &[&str]) -> Run {
    let start = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_ntp-query")).args(args).output().expect("run ntp-query");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// A loopback port nothing listens on... except a socket that never
/// answers, held for as long as the returned socket lives.
pub fn silent_port() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    (socket, address)
}
