//! The `ferry` control process, by concept:
//!
//! - [`config`]: the TOML schema, validation and error positions;
//! - [`tables`]: the running tables and every way they change, over a
//!   small trait implemented by the kernel's maps and the reference model;
//! - [`commands`]: the one path through which every table change goes;
//! - [`runtime`]: start-up, the node's state, the event loop and services;
//! - [`api`]: the admin protocol and the typed views it answers with;
//! - [`keepalive`], [`metrics`]: protocol logic and their services;
//! - [`state`], [`pins`], [`host`]: the state file, bpffs pins, host setup;
//! - [`ha`]: the HA pair's parts, as far as they are built.

pub mod api;
pub mod attachments;
pub mod commands;
pub mod config;
pub mod ha;
pub mod host;
pub mod keepalive;
pub mod metrics;
pub mod nexthops;
pub mod pins;
pub mod runtime;
pub mod state;
pub mod tables;
