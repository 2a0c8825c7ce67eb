//! The CLI's side of the admin socket: one request, one answer, typed.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::protocol::{Envelope, Request, Response, VERSION};

/// Why a call to the running ferry did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nobody answers on the socket (or no permission).
    #[error("connecting to {} (is `ferry run` running, and are you root?)", socket.display())]
    Connect {
        /// The admin socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke, or timed out, before the answer.
    #[error("talking to {}", socket.display())]
    Io {
        /// The admin socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not the protocol (another program on the socket?).
    #[error("ferry's answer is not understood: {0}")]
    Protocol(String),
    /// ferry refused the request (bad table, unknown AP, ...), with its
    /// one-line reason.
    #[error("{0}")]
    Refused(String),
}

/// Sends `request` to the ferry listening on `socket` and returns its
/// result as `T`.
pub fn call<T: DeserializeOwned>(
    socket: &Path,
    request: Request,
    timeout: Duration,
) -> Result<T, CallError> {
    let io = |source| CallError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(&Envelope {
        v: VERSION,
        request,
    })
    .map_err(|e| CallError::Protocol(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut r = BufReader::new(s);
    let mut reply = String::new();
    r.read_line(&mut reply).map_err(io)?;
    if reply.is_empty() {
        return Err(CallError::Protocol(
            "ferry closed the connection without answering".into(),
        ));
    }
    let resp: Response =
        serde_json::from_str(&reply).map_err(|e| CallError::Protocol(e.to_string()))?;
    if !resp.ok {
        return Err(CallError::Refused(
            resp.error
                .unwrap_or_else(|| "failed, no reason given".into()),
        ));
    }
    let raw = resp
        .result
        .ok_or_else(|| CallError::Protocol("ok without a result".into()))?;
    serde_json::from_str(raw.get()).map_err(|e| CallError::Protocol(e.to_string()))
}
