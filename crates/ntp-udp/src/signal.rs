//! The end of a long-running process: a future that completes on the first
//! SIGINT or SIGTERM (in a container a tool may be process 1, which the
//! kernel does not kill on a signal it ignores).

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// The signal's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }
}

/// Installs the handlers now (so a signal that comes early is not lost)
/// and returns the future that completes on the first of the two. Must be
/// called within a tokio runtime.
pub fn stop_signal() -> io::Result<impl Future<Output = Stop>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => Stop::Interrupt,
            _ = terminate.recv() => Stop::Terminate,
        }
    })
}
