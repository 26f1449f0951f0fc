//! The control socket: a Unix domain socket, owner-only (mode 0600), on
//! which `ntpd-sim sources list|add|remove` asks a running daemon to list,
//! add or remove sources. One JSON object a line each way: a [`Request`],
//! then its [`Response`]. Only the socket's owner (the daemon's user) and
//! root may connect: the file mode says so to the kernel, and the peer's
//! credentials (`SO_PEERCRED`) are checked again on every connection.
//! Nothing here is reachable from the network.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::ControlConfig;
use crate::observe::status::SourceReport;

/// Longest request line taken, bytes.
const MAX_LINE: u64 = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Every source.
    List,
    /// Add a server, or with `pool` a pool, until the daemon stops.
    Add {
        /// `HOST[:PORT]` (or `nts://HOST[:PORT]` for a server).
        name: String,
        /// A pool rather than a server.
        #[serde(default)]
        pool: bool,
    },
    /// Remove a source by its name.
    Remove {
        /// As listed.
        name: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether it was done.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
    /// The sources, after the change.
    #[serde(default)]
    pub sources: Vec<SourceReport>,
}

impl Response {
    /// A refusal.
    #[must_use]
    pub fn error(message: impl Into<String>) -> Self {
        Self { ok: false, message: message.into(), sources: Vec::new() }
    }
}

/// A request handed to the upstream task, with where its answer goes.
pub type Call = (Request, oneshot::Sender<Response>);

/// The bound control socket.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    owner: u32,
    inode: u64,
}

/// Binds the control socket of `config`. The socket is made under a
/// temporary name, given mode 0600 and only then renamed into place, so
/// it is never reachable with wider permissions. A socket file left by a
/// daemon that died is replaced; one that a running daemon answers on is
/// not.
pub fn bind(config: &ControlConfig) -> io::Result<ControlSocket> {
    let path = &config.socket;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if config.default_path {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(existing) = std::fs::symlink_metadata(path) {
        if !existing.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "it exists and is not a socket"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "another daemon answers on it"));
        }
        std::fs::remove_file(path)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    let placed = std::fs::metadata(path)?;
    Ok(ControlSocket { listener, path: path.clone(), owner: placed.uid(), inode: placed.ino() })
}

impl ControlSocket {
    /// Where it is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers connections until `shutdown` completes, handing each
    /// request to `calls`; then removes the socket file (if it is still
    /// the one it made).
    pub async fn serve(self, calls: mpsc::Sender<Call>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let allowed = stream.peer_cred().is_ok_and(|c| c.uid() == self.owner || c.uid() == 0);
                        if allowed {
                            tokio::spawn(connection(stream, calls.clone()));
                        } else {
                            warn!(peer = ?stream.peer_cred().ok().map(|c| c.uid()), "control socket: refused a user who is not its owner");
                        }
                    }
                    Err(error) => {
                        warn!(%error, "control socket: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One client: requests and answers, a line each, until it hangs up.
async fn connection(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE * 16));
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut lines).take(MAX_LINE).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = match serde_json::from_str::<Request>(line.trim()) {
            Ok(request) => {
                debug!(?request, "control request");
                let (answer, answered) = oneshot::channel();
                if calls.send((request, answer)).await.is_err() {
                    return;
                }
                answered.await.unwrap_or_else(|_| Response::error("the daemon is stopping"))
            }
            Err(error) => Response::error(format!("not a request: {error}")),
        };
        let mut text = serde_json::to_string(&response).unwrap_or_default();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Starts the control socket if one is configured. A default path that
/// cannot be used (no run directory, another daemon on it) is logged and
/// the daemon goes on without; a path given on purpose is an error.
pub fn start(config: Option<&ControlConfig>) -> io::Result<Option<ControlSocket>> {
    let Some(config) = config else { return Ok(None) };
    match bind(config) {
        Ok(socket) => {
            info!(path = %socket.path.display(), "control socket for ntpd-sim sources");
            Ok(Some(socket))
        }
        Err(error) if config.default_path => {
            warn!(path = %config.socket.display(), %error, "no control socket (give --control-socket PATH, or --no-control-socket)");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The client side: sends `request` to the daemon at `path`, returns its answer.
pub async fn request(path: &Path, request: &Request) -> io::Result<Response> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).take(MAX_LINE * 16).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_each() {
        let add = Request::Add { name: "pool.example:123".into(), pool: true };
        let text = serde_json::to_string(&add).unwrap();
        assert_eq!(text, r#"{"command":"add","name":"pool.example:123","pool":true}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"command":"list"}"#).unwrap(), Request::List);
        let server: Request = serde_json::from_str(r#"{"command":"add","name":"a"}"#).unwrap();
        assert_eq!(server, Request::Add { name: "a".into(), pool: false });
        assert!(serde_json::from_str::<Request>(r#"{"command":"remove","nmae":"a"}"#).is_err());
    }

    #[tokio::test]
    async fn the_socket_is_owner_only_and_answers_a_line_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let config = ControlConfig { socket: path.clone(), default_path: false };
        let socket = bind(&config).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(bind(&config).is_err(), "a socket in use is not taken over");
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        assert!(bind(&ControlConfig { socket: file.clone(), default_path: false }).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me", "a file that is not a socket is left alone");
        let (calls, mut incoming) = mpsc::channel::<Call>(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(socket.serve(calls, async move {
            let _ = stopped.await;
        }));
        let answerer = tokio::spawn(async move {
            while let Some((request, answer)) = incoming.recv().await {
                let _ = answer.send(Response { ok: true, message: format!("{request:?}"), sources: Vec::new() });
            }
        });
        let response = super::request(&path, &Request::List).await.unwrap();
        assert!(response.ok && response.message == "List", "{response:?}");
        let _ = stop.send(());
        server.await.unwrap();
        answerer.abort();
        assert!(!path.exists(), "removed at shutdown");
    }
}
