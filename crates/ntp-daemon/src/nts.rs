//! The server side of NTS (RFC 8915): the master keys that seal cookies
//! (rotated, shared lock-free with the serving threads), and the NTS-KE
//! listener, TLS 1.3 with ALPN `ntske/1`, that hands out cookies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ntp_proto::nts::cookie::{MasterKey, MasterKeys};
use ntp_proto::nts::ke::{self, KeError};
use ntp_proto::nts::{exporter_context, Key, SessionKeys, ALPN, EXPORTER_LABEL, KEY_LEN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

/// How often the master key changes; a cookie stays valid for up to two periods.
pub const KEY_ROTATION: Duration = Duration::from_secs(24 * 3600);
/// Cookies handed out by one NTS-KE (RFC 8915 §4.1.6 suggests eight).
pub const COOKIES_PER_KE: usize = 8;
/// The longest an NTS-KE connection may take, handshake included.
pub const KE_TIMEOUT: Duration = Duration::from_secs(5);
/// NTS-KE connections served at once; more wait for a slot.
pub const MAX_KE_CONNECTIONS: usize = 256;

/// `ntpd-sim serve`'s NTS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtsConfig {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Where NTS-KE listens (TCP).
    pub listen: SocketAddr,
    /// The NTP port NTS-KE sends clients to, when it is not the one this
    /// server listens on (a server behind a port-forwarding NAT or relay).
    pub ntp_port: Option<u16>,
}

/// Why NTS could not be set up.
#[derive(Debug, Error)]
pub enum NtsSetupError {
    /// The certificate or key file is unreadable or not PEM.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The NTS-KE address could not be bound.
    #[error("cannot listen for NTS-KE on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The master keys, swapped whole at each rotation so the serving threads
/// read them without a lock.
#[derive(Debug)]
pub struct NtsKeys {
    masters: ArcSwap<MasterKeys>,
}

impl NtsKeys {
    /// Fresh random keys.
    #[must_use]
    pub fn new() -> Self {
        Self { masters: ArcSwap::from_pointee(MasterKeys::new(random_master(rand::random()))) }
    }

    /// The keys now.
    #[must_use]
    pub fn current(&self) -> Arc<MasterKeys> {
        self.masters.load_full()
    }

    /// Makes a new master key current; cookies of the one before it still open.
    pub fn rotate(&self) {
        let mut next = MasterKeys::clone(&self.masters.load());
        next.rotate(random_master(next.current_id().wrapping_add(1)));
        self.masters.store(Arc::new(next));
    }

    /// Rotates every `period` until `stop` completes.
    pub async fn rotate_every(self: Arc<Self>, period: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticks.tick() => {
                    self.rotate();
                    debug!(key_id = self.current().current_id(), "NTS master key rotated");
                }
            }
        }
    }
}

impl Default for NtsKeys {
    fn default() -> Self {
        Self::new()
    }
}

fn random_master(id: u32) -> MasterKey {
    MasterKey { id, key: Key(rand::random::<[u8; KEY_LEN]>()) }
}

/// Fills `bytes` from the thread's CSPRNG (nonces of cookies and replies).
pub fn fill_random(bytes: &mut [u8]) {
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), bytes);
}

/// A TLS 1.3-only server configuration with ALPN `ntske/1`.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, NtsSetupError> {
    let pem = |path: &Path, reason: String| NtsSetupError::Pem { path: path.to_owned(), reason };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Serves NTS-KE on `listener` until `stop` completes. `ntp_port` goes in
/// the Port record when it is not 123, so clients find the NTP socket.
pub async fn serve_ke(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    keys: Arc<NtsKeys>,
    ntp_port: u16,
    stop: impl std::future::Future<Output = ()>,
) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, ntp_port, "serving NTS-KE");
    }
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_KE_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else { continue };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let (acceptor, keys) = (acceptor.clone(), Arc::clone(&keys));
        tokio::spawn(async move {
            let port = (ntp_port != ntp_client::target::NTP_PORT).then_some(ntp_port);
            match tokio::time::timeout(KE_TIMEOUT, key_exchange(acceptor, stream, &keys, port)).await {
                Ok(Ok(())) => debug!(%peer, "NTS-KE done"),
                Ok(Err(error)) => debug!(%peer, %error, "NTS-KE failed"),
                Err(_) => debug!(%peer, "NTS-KE timed out"),
            }
            drop(slot);
        });
    }
}

/// Why one NTS-KE connection ended without cookies.
#[derive(Debug, Error)]
enum KeFailure {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("client did not negotiate ALPN ntske/1")]
    Alpn,
    #[error("{0}")]
    Request(#[from] KeError),
    #[error("key export: {0}")]
    Export(#[from] rustls::Error),
}

async fn key_exchange(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    keys: &NtsKeys,
    port: Option<u16>,
) -> Result<(), KeFailure> {
    let mut tls = acceptor.accept(stream).await?;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(KeFailure::Alpn);
    }
    let mut received = Vec::new();
    let parsed = loop {
        let mut chunk = [0u8; 2048];
        let read = tls.read(&mut chunk).await?;
        if read == 0 {
            return Err(KeError::Truncated.into());
        }
        received.extend_from_slice(&chunk[..read]);
        // decode_message itself refuses a message that outgrows MAX_MESSAGE_LEN.
        match ke::decode_message(&received) {
            Ok(Some(records)) => break ke::parse_request(&records),
            Ok(None) => {}
            Err(error) => break Err(error),
        }
    };
    let response = match &parsed {
        Ok(request) => {
            let connection = tls.get_ref().1;
            let export = |server_to_client| {
                connection
                    .export_keying_material([0u8; KEY_LEN], EXPORTER_LABEL, Some(&exporter_context(server_to_client)))
                    .map(Key)
            };
            let session = SessionKeys { c2s: export(false)?, s2c: export(true)? };
            let masters = keys.current();
            let cookies = masters.make_cookies(&session, COOKIES_PER_KE, fill_random);
            ke::server_response(request, &cookies, port)
        }
        Err(error) => ke::error_response(error.error_code()),
    };
    tls.write_all(&response).await?;
    tls.shutdown().await?;
    parsed.map(|_| ()).map_err(KeFailure::from)
}
