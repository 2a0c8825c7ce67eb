//! ferry's traffic generator ([`traffic`]), BPF_PROG_TEST_RUN
//! micro-benchmark ([`micro`]), control-process benchmark ([`control`]) and
//! HA pair benchmark ([`failover`]).

// The benchmark scenarios are long sequential scripts; splitting them is
// left to the live-benchmark issue (11), which reshapes this crate.
#![allow(clippy::too_many_lines)]
pub mod all;
pub mod control;
pub mod daemon;
pub mod failover;
pub mod live;
pub mod micro;
pub mod rebind;
pub mod traffic;
