//! An upstream reached over NTS (`--upstream nts://HOST[:PORT]`): NTS-KE at
//! start-up gives the keys, the cookies and the NTP address; each poll is an
//! NTS-protected exchange; when the cookies run out or the server NAKs
//! (its keys rotated), NTS-KE runs again before the next poll.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ntp_client::nts::{key_exchange, tls_config, KeyExchange, NtsSession};
use ntp_client::target::{Family, Host, Target};
use ntp_client::{ExchangeError, ExchangeOptions, Measurement};
use ntp_proto::clock::Clock;
use ntp_proto::nts::ntp::ReplyError;
use ntp_proto::nts::DEFAULT_KE_PORT;
use ntp_udp::TimestampedSocket;
use rustls::ClientConfig;
use tracing::{debug, info};

/// How long one NTS-KE may take.
const KE_TIMEOUT: Duration = Duration::from_secs(5);

/// One NTS upstream's key-exchange server and current session.
#[derive(Debug)]
pub struct NtsUpstream {
    host: String,
    port: u16,
    tls: Arc<ClientConfig>,
    session: Mutex<Arc<NtsSession>>,
    stale: AtomicBool,
}

impl NtsUpstream {
    /// Runs NTS-KE with `key_exchange` (`HOST[:PORT]`, port 4460 by
    /// default), the server of upstream `spec` (`nts://HOST[:PORT]`, see
    /// [`crate::config::UpstreamKind`]); returns the upstream and the NTP
    /// address the key exchange named.
    pub async fn start(
        spec: &str,
        key_exchange_server: &str,
        ca_file: Option<&Path>,
    ) -> Result<(Self, SocketAddr), String> {
        let target =
            Target::parse_with_default_port(key_exchange_server, DEFAULT_KE_PORT).map_err(|e| e.to_string())?;
        let host = match &target.host {
            Host::Address(address) => address.to_string(),
            Host::Name(name) => name.clone(),
        };
        let tls = tls_config(ca_file).map_err(|e| e.to_string())?;
        let exchange =
            key_exchange(&host, target.port, Arc::clone(&tls), KE_TIMEOUT).await.map_err(|e| e.to_string())?;
        let KeyExchange { session, ntp_host, ntp_port } = exchange;
        let ntp = match ntp_host.parse() {
            Ok(address) => Target { host: Host::Address(address), port: ntp_port },
            Err(_) => Target { host: Host::Name(ntp_host), port: ntp_port },
        };
        let address = ntp.resolve(Family::Any).await.map_err(|e| e.to_string())?[0];
        info!(upstream = spec, %address, "NTS-KE done");
        let upstream =
            Self { host, port: target.port, tls, session: Mutex::new(session), stale: AtomicBool::new(false) };
        Ok((upstream, address))
    }

    /// One NTS-protected exchange, after a fresh NTS-KE if the cookies ran
    /// out or the last reply was an NTS NAK.
    pub async fn exchange(
        &self,
        socket: &TimestampedSocket,
        address: SocketAddr,
        clock: &impl Clock,
        options: &ExchangeOptions,
    ) -> Result<Measurement, ExchangeError> {
        let mut session = self.session.lock().map(|s| Arc::clone(&s)).map_err(|_| poisoned())?;
        if session.cookies_left() == 0 || self.stale.load(Ordering::Relaxed) {
            let exchange = key_exchange(&self.host, self.port, Arc::clone(&self.tls), KE_TIMEOUT)
                .await
                .map_err(|e| ExchangeError::Io(std::io::Error::other(e.to_string())))?;
            debug!(host = %self.host, "NTS-KE renewed the cookies");
            session = exchange.session;
            *self.session.lock().map_err(|_| poisoned())? = Arc::clone(&session);
            self.stale.store(false, Ordering::Relaxed);
        }
        let result = ntp_client::exchange::exchange_nts(socket, address, clock, options, &session).await;
        if matches!(result, Err(ExchangeError::Nts(ReplyError::Nak))) {
            self.stale.store(true, Ordering::Relaxed);
        }
        result
    }
}

fn poisoned() -> ExchangeError {
    ExchangeError::Io(std::io::Error::other("NTS session lock poisoned"))
}
