//! The client side of NTS (RFC 8915): NTS-KE over TLS 1.3 (ALPN `ntske/1`),
//! the session keys from the TLS exporter, and the cookie jar that NTS
//! requests draw from and replies refill.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ntp_proto::nts::ke::{self, KeError};
use ntp_proto::nts::ntp::{self as nts_ntp, ClientRequest, ReplyError, MAX_COOKIES_PER_REPLY, UNIQUE_ID_LEN};
use ntp_proto::nts::{exporter_context, Key, SessionKeys, ALPN, EXPORTER_LABEL, KEY_LEN};
use ntp_proto::packet::Header;
use ntp_proto::Packet;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::target::NTP_PORT;

/// Why NTS key establishment failed.
#[derive(Debug, Error)]
pub enum NtsError {
    /// Reading the CA file failed.
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// TLS set-up failed (no TLS 1.3 in the provider: cannot happen with ring).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The name is not a valid TLS server name.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    /// The TCP connection or the TLS handshake failed (certificate errors land here).
    #[error("NTS-KE connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not agree to ALPN `ntske/1`.
    #[error("NTS-KE server did not negotiate ALPN ntske/1")]
    Alpn,
    /// The NTS-KE exchange took too long.
    #[error("NTS-KE timed out after {0:?}")]
    Timeout(Duration),
    /// The NTS-KE response was malformed or refused the request.
    #[error(transparent)]
    Ke(#[from] KeError),
}

/// A TLS 1.3 client configuration for NTS-KE that trusts `ca_file`'s
/// certificates (PEM), or the Mozilla root store (webpki-roots) without one.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, NtsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let failed = |reason: String| NtsError::CaFile { path: path.display().to_string(), reason };
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))?;
            for cert in certs {
                roots.add(cert.map_err(|e| failed(e.to_string()))?).map_err(|e| failed(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(failed("no certificate in the file".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// What NTS-KE gave: the keys, the first cookies, and where to send NTP.
#[derive(Debug)]
pub struct KeyExchange {
    /// The session, ready for NTS requests.
    pub session: Arc<NtsSession>,
    /// The NTP server: the Server record's name, or the NTS-KE host.
    pub ntp_host: String,
    /// The NTP port: the Port record's, or 123.
    pub ntp_port: u16,
}

/// Runs NTS-KE with `host:port` (§4), verifying the certificate for `host`.
pub async fn key_exchange(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<KeyExchange, NtsError> {
    tokio::time::timeout(timeout, key_exchange_inner(host, port, config))
        .await
        .map_err(|_| NtsError::Timeout(timeout))?
}

async fn key_exchange_inner(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<KeyExchange, NtsError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| NtsError::ServerName(host.to_owned()))?;
    let tcp = TcpStream::connect((host, port)).await?;
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(NtsError::Alpn);
    }
    tls.write_all(&ke::client_request()).await?;
    tls.flush().await?;
    let mut received = Vec::new();
    let records = loop {
        let mut chunk = [0u8; 4096];
        let read = tls.read(&mut chunk).await?;
        if read == 0 {
            return Err(KeError::Truncated.into());
        }
        received.extend_from_slice(&chunk[..read]);
        if let Some(records) = ke::decode_message(&received)? {
            break records;
        }
    };
    let negotiated = ke::parse_response(&records)?;
    let connection = tls.get_ref().1;
    let export = |server_to_client| {
        connection
            .export_keying_material([0u8; KEY_LEN], EXPORTER_LABEL, Some(&exporter_context(server_to_client)))
            .map(Key)
    };
    let keys = SessionKeys { c2s: export(false)?, s2c: export(true)? };
    // Closing politely is a courtesy; the keys are already ours.
    let _ = tls.shutdown().await;
    tracing::debug!(host, port, cookies = negotiated.cookies.len(), "NTS-KE done");
    Ok(KeyExchange {
        session: Arc::new(NtsSession::new(keys, negotiated.cookies)),
        ntp_host: negotiated.server.unwrap_or_else(|| host.to_owned()),
        ntp_port: negotiated.port.unwrap_or(NTP_PORT),
    })
}

/// The keys of one NTS-KE and the cookies left: each request uses one and
/// asks for enough back to keep the jar full.
#[derive(Debug)]
pub struct NtsSession {
    keys: SessionKeys,
    cookies: Mutex<Vec<Vec<u8>>>,
}

/// One request in flight: what its reply must echo.
#[derive(Debug)]
pub struct PendingRequest {
    unique_id: [u8; UNIQUE_ID_LEN],
}

impl NtsSession {
    /// A session with its keys and first cookies.
    #[must_use]
    pub fn new(keys: SessionKeys, cookies: Vec<Vec<u8>>) -> Self {
        Self { keys, cookies: Mutex::new(cookies) }
    }

    /// The session's keys (for tools that build requests by hand, such as
    /// the load generator).
    #[must_use]
    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// Cookies left.
    #[must_use]
    pub fn cookies_left(&self) -> usize {
        self.cookies.lock().map_or(0, |c| c.len())
    }

    /// Builds an NTS request around `header`, using up a cookie; `None`
    /// when none is left (NTS-KE must be run again).
    #[must_use]
    pub fn request(&self, header: &Header) -> Option<(Vec<u8>, PendingRequest)> {
        let (cookie, left) = {
            let mut jar = self.cookies.lock().ok()?;
            let cookie = jar.pop()?;
            (cookie, jar.len())
        };
        let unique_id: [u8; UNIQUE_ID_LEN] = rand::random();
        let nonce = rand::random();
        let placeholders = (MAX_COOKIES_PER_REPLY - 1).saturating_sub(left);
        let request =
            ClientRequest { unique_id: &unique_id, cookie: &cookie, placeholders, nonce: &nonce, c2s: &self.keys.c2s };
        Some((request.encode(header), PendingRequest { unique_id }))
    }

    /// Checks a reply to `pending` and keeps the cookies it brought.
    pub fn accept_reply(&self, bytes: &[u8], packet: &Packet, pending: &PendingRequest) -> Result<(), ReplyError> {
        let fresh = nts_ntp::check_reply(bytes, packet, &pending.unique_id, &self.keys.s2c)?;
        if let Ok(mut jar) = self.cookies.lock() {
            jar.extend(fresh);
            jar.truncate(MAX_COOKIES_PER_REPLY);
        }
        Ok(())
    }
}
