//! ntp-ppsgen: a GPS receiver with a PPS output, for the test VM (see
//! tests/vm/): at the top of every second of the system clock it raises
//! the interrupt of an emulated ISA parallel port, which the kernel's
//! `pps_parport` records as a PPS assert edge (`/dev/pps0`), then writes
//! that second's NMEA (RMC, GGA, ZDA) to every client of a TCP port, as
//! a receiver's serial line would after its pulse. gpsd reads both; the
//! system clock it stamps them with is the truth. Only reads clocks.
//!
//! The edge: qemu's parallel port (hw/char/parallel.c, no host device
//! behind it) raises its IRQ when the control register is written with
//! INIT and SELECT set and STROBE clear while interrupts are enabled,
//! and lowers it when the status register is read. Both registers are
//! reached through `/dev/port` (root).

use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;

/// Pulse a parallel port's interrupt and send NMEA once a second.
#[derive(Debug, Parser)]
#[command(name = "ntp-ppsgen", version, about)]
struct Args {
    /// The parallel port's base I/O address (data register; status is
    /// +1, control +2).
    #[arg(long, default_value = "0x378", value_parser = parse_port)]
    io: u64,
    /// The TCP address NMEA clients (gpsd: tcp://ADDR) connect to.
    #[arg(long, default_value = "127.0.0.1:10110")]
    nmea: String,
    /// How many seconds, then exit (0: forever).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// An edge that could not be started within this long after the
    /// second (the guest descheduled: under TCG on a busy host, for
    /// milliseconds) is left out, as a receiver misses a pulse rather than
    /// sends it late, microseconds.
    #[arg(long, default_value_t = 200)]
    max_late_us: u64,
    /// Print how late after the second each edge was started, microseconds.
    #[arg(long)]
    verbose: bool,
}

fn parse_port(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|e| format!("{text}: {e}"))
}

/// INIT (not reset), SELECT, interrupts enabled; STROBE clear.
const CONTROL_EDGE: u8 = 0x04 | 0x08 | 0x10;

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Sleeps to 5 ms before the next whole second of the system clock (a
/// guest's sleep can overshoot by milliseconds), then spins to it;
/// returns that second.
fn wait_for_next_second() -> u64 {
    let second = now().as_secs() + 1;
    let early = Duration::from_secs(second).saturating_sub(Duration::from_millis(5));
    std::thread::sleep(early.saturating_sub(now()));
    while now().as_secs() < second {
        std::hint::spin_loop();
    }
    second
}

/// `$BODY*CS\r\n`, CS the XOR of the body's bytes.
fn sentence(body: &str) -> String {
    let checksum = body.bytes().fold(0u8, |c, b| c ^ b);
    format!("${body}*{checksum:02X}\r\n")
}

/// The NMEA a receiver sends after the pulse of `second`.
fn nmea(second: u64) -> String {
    let t = i64::try_from(second).ok().and_then(|s| chrono::DateTime::from_timestamp(s, 0)).unwrap_or_default();
    let hms = t.format("%H%M%S.00");
    let (dmy, d, m, y) = (t.format("%d%m%y"), t.format("%d"), t.format("%m"), t.format("%Y"));
    let mut out = sentence(&format!("GPRMC,{hms},A,4807.038,N,01131.000,E,000.0,000.0,{dmy},,,A"));
    out += &sentence(&format!("GPGGA,{hms},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"));
    out += &sentence(&format!("GPZDA,{hms},{d},{m},{y},00,00"));
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let port = File::options().read(true).write(true).open("/dev/port").context("open /dev/port (root only)")?;
    let listener = TcpListener::bind(&args.nmea).with_context(|| format!("bind {}", args.nmea))?;
    println!("listening {}", listener.local_addr()?);
    let clients: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let accepted = Arc::clone(&clients);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(stream);
        }
    });
    let mut status = [0u8];
    let mut pulses = 0;
    while args.count == 0 || pulses < args.count {
        // Read the status register first: that lowers a line still raised
        // by the last edge, so this one is an edge again.
        port.read_at(&mut status, args.io + 1).context("read the status register")?;
        let second = wait_for_next_second();
        // How late the edge starts; the kernel's timestamp adds the
        // interrupt's latency (its assert time's fraction shows both).
        let late = now().saturating_sub(Duration::from_secs(second));
        let on_time = late <= Duration::from_micros(args.max_late_us);
        if on_time {
            port.write_at(&[CONTROL_EDGE], args.io + 2).context("write the control register")?;
        }
        pulses += 1;
        if args.verbose {
            let what = if on_time { "edge" } else { "missed" };
            println!("{what} {second} late_us={}", late.as_micros());
        }
        let text = nmea(second);
        let mut clients = clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients.retain_mut(|c| c.write_all(text.as_bytes()).is_ok());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_carry_their_second_and_checksum() {
        // 2024-01-02 03:04:05 UTC.
        let text = nmea(1_704_164_645);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("$GPRMC,030405.00,A,") && lines[0].contains(",020124,"));
        assert!(lines[2].starts_with("$GPZDA,030405.00,02,01,2024,00,00*"));
        assert_eq!(sentence("GPZDA,030405.00,02,01,2024,00,00"), format!("{}\r\n", lines[2]));
        // The XOR of the body, as gpsd checks it.
        assert_eq!(sentence("A"), "$A*41\r\n");
    }

    #[test]
    fn ports_are_hexadecimal() {
        assert_eq!(parse_port("0x378"), Ok(0x378));
        assert_eq!(parse_port("278"), Ok(0x278));
        assert!(parse_port("0xzz").is_err());
    }
}
