//! The `ferry` control process: configuration and the commands of the
//! `ferry` binary.
pub mod config;
pub mod keepalive;
