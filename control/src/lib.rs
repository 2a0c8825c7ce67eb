//! The `ferry` control process: configuration and the commands of the
//! `ferry` binary.
pub mod admin;
pub mod config;
pub mod daemon;
pub mod keepalive;
pub mod metrics;
pub mod swap;
