//! `ferry run`: start-up and shutdown ([`run`]), the node's owned state
//! ([`node`]), the event loop and its services ([`event_loop`], [`conn`],
//! [`admin`], [`signals`]; the keepalive and metrics services live with
//! their protocols), and the views the admin API answers with
//! ([`queries`]); [`lock`] keeps it to one process per node.

pub mod admin;
pub mod conn;
pub mod event_loop;
pub mod licensing;
pub mod lock;
pub mod node;
pub mod queries;
pub mod run;
pub mod signals;

/// A start `ferry run` refused before touching the data plane (exit
/// status 2, like any refused input): another process runs the node, the
/// bpffs is private to this mount namespace, or the state file does not
/// describe what runs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);
