//! The daemon's HTTP side (`serve --http ADDR:PORT`, off unless asked):
//! `GET /status` (JSON, [`super::status::StatusReport`]) and `GET /metrics`
//! (Prometheus text), served by hyper 1 over HTTP/1.1, plus the small client
//! `ntpd-sim status` fetches them with.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::debug;

use super::metrics::{self, Observed};

/// How long the client waits for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that has not sent a request's headers within this is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why an HTTP exchange failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Connecting or talking to the daemon failed.
    #[error("{address}: {reason}")]
    Exchange {
        /// The daemon's HTTP address.
        address: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// It answered with an error status.
    #[error("{address}: HTTP {status}")]
    Status {
        /// The daemon's HTTP address.
        address: SocketAddr,
        /// The status code.
        status: StatusCode,
    },
}

/// Serves `/status` and `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, observed: Observed, shutdown: impl Future<Output = ()>) {
    let shared = Arc::new((metrics::registry(observed.clone()), observed));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(&request, &shared.0, &shared.1)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
}

fn route(request: &Request<Incoming>, registry: &Registry, observed: &Observed) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match request.uri().path() {
        "/status" => match serde_json::to_string_pretty(&observed.report()) {
            Ok(json) => text(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
        },
        "/metrics" => match metrics::encode(registry) {
            Ok(body) => text(StatusCode::OK, OPENMETRICS, body),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found: try /status or /metrics\n".into()),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

/// `GET path` from the daemon at `address`; the body as text.
pub async fn get(address: SocketAddr, path: &str) -> Result<String, HttpError> {
    let fail = |reason: String| HttpError::Exchange { address, reason };
    let exchange = async {
        let stream = TcpStream::connect(address).await.map_err(|e| fail(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| fail(e.to_string()))?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(HOST, address.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| fail(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
        if !status.is_success() {
            return Err(HttpError::Status { address, status });
        }
        String::from_utf8(body.to_vec()).map_err(|e| fail(e.to_string()))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange).await.map_err(|_| fail("no answer within 5 s".into()))?
}
