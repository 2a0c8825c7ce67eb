//! The admin API: the wire protocol ([`protocol`]), the typed answers the
//! daemon sends and the CLI prints ([`views`]), and the CLI's client
//! ([`client`]).

pub mod client;
pub mod protocol;
pub mod views;
