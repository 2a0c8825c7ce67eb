//! The admin API: line-delimited JSON over a Unix socket (mode 0600, so
//! root only), one request line, one response line.
//!
//! ```text
//! -> {"v":2,"cmd":"status"}
//! <- {"v":2,"ok":true,"result":{...}}
//! -> {"v":2,"cmd":"tunnel_remove","ap":"ap9"}
//! <- {"v":2,"ok":false,"error":"no tunnel \"ap9\""}
//! ```
//!
//! `v` is the protocol version; a server refuses requests of a version it
//! does not speak, with an error saying which it does. Every CLI subcommand
//! that talks to a running ferry goes through [`super::client::call`].
//!
//! Version 2 (this release): a change's `kind` is one of the
//! [`super::views::ChangeKind`] spellings and a single-tunnel change names
//! its tunnel in `ap`; tunnel rows and `ferry check` say `state`
//! ("active"/"standby") where version 1 said `role` ("master"/"backup").
//! Within version 2, `swap`, `reload` and `rollback` take `dry_run` (the
//! answer is then a plan and nothing changes) and `swap` and `reload`
//! take `force` (past the mass-removal guard); both default to false.
//! `cluster_status`, `cluster_history` and `cluster_role` answer for the
//! HA pair (an error on a node without `[ha]`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};

/// The protocol version this build speaks.
pub const VERSION: u32 = 2;

/// Longest request line accepted (a swap carries a whole table file).
pub const MAX_REQUEST: usize = 64 << 20;

/// One admin request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Node, interfaces, generation, keepalive and swap summary.
    Status,
    /// The tunnel table with per-tunnel statistics and liveness.
    Tunnels,
    /// Stations in the live table.
    Stations {
        /// Only stations behind this AP.
        #[serde(default)]
        ap: Option<String>,
        /// At most this many (default 1000).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// The programs' counters by reason, and learning events.
    Counters,
    /// Replace the whole tunnel table with a table file's contents.
    Swap {
        /// File name (for error messages).
        file: String,
        /// The table file's text.
        text: String,
        /// Apply even a table that removes every tunnel or more than
        /// `admin.max_removal_percent` of them.
        #[serde(default)]
        force: bool,
        /// Answer with what it would do (a [`super::views::Plan`]) and
        /// change nothing.
        #[serde(default)]
        dry_run: bool,
    },
    /// Flip back to the previous generation.
    Rollback {
        /// As for [`Request::Swap`].
        #[serde(default)]
        dry_run: bool,
    },
    /// Add one tunnel (`[[tunnel]]` TOML text).
    TunnelAdd {
        /// The `[[tunnel]]` entry.
        text: String,
    },
    /// Remove one tunnel.
    TunnelRemove {
        /// AP name.
        ap: String,
    },
    /// Make a tunnel active (forwarding).
    Promote {
        /// AP name.
        ap: String,
    },
    /// Make a tunnel standby (installed, not forwarding).
    Demote {
        /// AP name.
        ap: String,
    },
    /// Re-read the configuration file and apply it as a swap (as SIGHUP).
    Reload {
        /// As for [`Request::Swap`].
        #[serde(default)]
        force: bool,
        /// As for [`Request::Swap`].
        #[serde(default)]
        dry_run: bool,
    },
    /// The HA pair: groups, peer, sync ([`crate::ha::view::ClusterStatus`]).
    ClusterStatus,
    /// The HA history ([`crate::ha::view::Event`]s, oldest first).
    ClusterHistory,
    /// With `election = "external"`: take `role` for `group`.
    ClusterRole {
        /// The group.
        group: String,
        /// "master" or "backup".
        role: crate::ha::election::Role,
    },
    /// `ferry cluster resync`: a bulk snapshot both ways.
    ClusterResync,
    /// `ferry failover`: hand `group` (or every group mastered here) to
    /// the peer, make-before-break; answers the handover ids.
    Failover {
        /// The group; every group this node masters when absent.
        #[serde(default)]
        group: Option<String>,
        /// The drain's timing (defaults when absent).
        #[serde(default)]
        options: Option<crate::ha::handover::Options>,
    },
    /// The handovers with these ids (every recent one when empty).
    Handovers {
        /// Ids from [`Request::Failover`].
        #[serde(default)]
        ids: Vec<u64>,
    },
}

/// A request on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version.
    pub v: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// A response on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when `ok` (kept as JSON text: large answers are
    /// written without building a tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// One line saying what went wrong, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success.
    pub fn ok(result: Box<RawValue>) -> Self {
        Self {
            v: VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure, as one line.
    pub fn err(e: impl std::fmt::Display) -> Self {
        Self {
            v: VERSION,
            ok: false,
            result: None,
            error: Some(e.to_string().replace('\n', " ")),
        }
    }
}

/// Parses a request line, checking the version.
pub fn parse_request(line: &str) -> Result<Request, String> {
    // The version first, from a probe that skips everything else (a swap
    // request carries a whole table: no `Value` tree of it).
    #[derive(Deserialize)]
    struct Probe {
        v: Option<Value>,
    }
    let p: Probe = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    match p.v.as_ref().and_then(Value::as_u64) {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => {
            return Err(format!(
                "protocol version {n} not supported (this ferry speaks {VERSION})"
            ));
        }
        None => {
            return Err(format!(
                "missing protocol version \"v\" (this ferry speaks {VERSION})"
            ));
        }
    }
    let env: Envelope = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    Ok(env.request)
}

/// `r` as one line of the wire.
pub fn reply_line(r: &Response) -> Vec<u8> {
    let mut v = serde_json::to_vec(r).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_versions_are_checked() {
        let line = serde_json::to_string(&Envelope {
            v: VERSION,
            request: Request::Promote { ap: "ap1".into() },
        })
        .unwrap();
        assert_eq!(line, r#"{"v":2,"cmd":"promote","ap":"ap1"}"#);
        assert_eq!(
            parse_request(&line).unwrap(),
            Request::Promote { ap: "ap1".into() }
        );
        assert_eq!(
            parse_request(r#"{"v":2,"cmd":"stations"}"#).unwrap(),
            Request::Stations {
                ap: None,
                limit: None
            }
        );
        let e = parse_request(r#"{"v":1,"cmd":"status"}"#).unwrap_err();
        assert!(e.contains("version 1 not supported"), "{e}");
        let e = parse_request(r#"{"cmd":"status"}"#).unwrap_err();
        assert!(e.contains("missing protocol version"), "{e}");
        let e = parse_request(r#"{"v":2,"cmd":"format_disk"}"#).unwrap_err();
        assert!(e.contains("bad request"), "{e}");
        let r = serde_json::to_string(&Response::err("a\nb")).unwrap();
        assert_eq!(r, r#"{"v":2,"ok":false,"error":"a b"}"#);
    }
}
