//! `ntp-loadgen nts`: closed-loop load of NTS-protected requests. One
//! NTS-KE gives the keys and a cookie; `window` requests (each its own
//! unique identifier, one cookie placeholder so the server seals two fresh
//! cookies, as a client keeping its jar full does) are kept in flight and
//! resent as their replies arrive. Every reply is checked (unique
//! identifier, authenticator under the S2C key, origin) before it counts.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ntp_client::nts::{key_exchange, tls_config};
use ntp_proto::nts::ntp::{check_reply, ClientRequest, UNIQUE_ID_LEN};
use ntp_proto::packet::{Header, Mode};
use ntp_proto::{NtpTimestamp, Packet};

/// How to load an NTS server.
#[derive(Debug, Clone, Args)]
pub struct NtsArgs {
    /// The NTS-KE server, HOST:PORT (the certificate must name HOST).
    #[arg(long)]
    pub ke: String,
    /// CA certificate (PEM) to trust for the NTS-KE.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Seconds measured (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// A label for the report line.
    #[arg(long, default_value = "server")]
    pub label: String,
}

/// Runs the load and prints one line.
pub fn run(args: &NtsArgs) -> anyhow::Result<()> {
    let (host, port) = args.ke.rsplit_once(':').context("--ke is HOST:PORT")?;
    let port: u16 = port.parse().context("--ke port")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let tls = tls_config(Some(&args.ca_file))?;
    let exchange = runtime.block_on(key_exchange(host, port, Arc::clone(&tls), Duration::from_secs(5)))?;
    let ntp: SocketAddr = runtime
        .block_on(tokio::net::lookup_host((exchange.ntp_host.as_str(), exchange.ntp_port)))?
        .next()
        .context("NTP address")?;
    let session = exchange.session;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(ntp)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;

    // The cookies of the key exchange, each used by several slots (the
    // server keeps no state, so a cookie may be reused in a benchmark).
    let keys = session.keys().clone();
    let probe = Header { mode: Mode::Client, transmit: NtpTimestamp::from_bits(1), ..Header::default() };
    let mut cookies = Vec::new();
    while let Some((bytes, _)) = session.request(&probe) {
        let packet = Packet::decode(&bytes)?;
        cookies.push(packet.trailer.extensions[1].value.clone());
    }
    anyhow::ensure!(!cookies.is_empty(), "no cookies");
    // One request per slot: its unique identifier names the slot.
    let mut requests = Vec::with_capacity(args.window);
    let mut ids = Vec::with_capacity(args.window);
    for slot in 0..args.window {
        let header =
            Header { mode: Mode::Client, transmit: NtpTimestamp::from_bits(0x1000 + slot as u64), ..Header::default() };
        let mut unique_id: [u8; UNIQUE_ID_LEN] = rand::random();
        unique_id[..4].copy_from_slice(&(slot as u32).to_be_bytes());
        let cookie = &cookies[slot % cookies.len()];
        let request =
            ClientRequest { unique_id: &unique_id, cookie, placeholders: 1, nonce: &rand::random(), c2s: &keys.c2s };
        requests.push(request.encode(&header));
        ids.push(unique_id);
    }
    for request in &requests {
        socket.send(request)?;
    }
    let mut buf = [0u8; 2048];
    let (mut valid, mut invalid, mut timeouts) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(1);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(_) => {
                timeouts += 1;
                for request in &requests {
                    socket.send(request)?;
                }
                continue;
            }
        };
        let reply = &buf[..len];
        let slot = reply.get(52..56).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let Some(slot) = slot.filter(|&s| s < args.window) else {
            invalid += 1;
            continue;
        };
        let good = Packet::decode(reply).ok().is_some_and(|packet| {
            packet.header.origin == NtpTimestamp::from_bits(0x1000 + slot as u64)
                && check_reply(reply, &packet, &ids[slot], &keys.s2c).is_ok_and(|cookies| cookies.len() == 2)
        });
        if now >= measure_from {
            if good {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        socket.send(&requests[slot])?;
    }
    println!(
        "{:<10} nts closed loop window {:>3}: {:>9.0} authenticated responses/s ({valid} in {:.1} s), {invalid} invalid, {timeouts} timeouts",
        args.label,
        args.window,
        valid as f64 / args.duration,
        args.duration
    );
    anyhow::ensure!(valid > 0, "no authenticated replies");
    Ok(())
}
