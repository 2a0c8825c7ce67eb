//! `ferry run`: start-up and shutdown ([`run`]), the node's owned state
//! ([`node`]), the event loop and its services ([`event_loop`], [`conn`],
//! [`admin`], [`signals`]; the keepalive and metrics services live with
//! their protocols), and the views the admin API answers with
//! ([`queries`]); [`lock`] keeps it to one process per node.

pub mod admin;
pub mod conn;
pub mod event_loop;
pub mod lock;
pub mod node;
pub mod queries;
pub mod run;
pub mod signals;
