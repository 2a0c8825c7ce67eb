//! ferry's traffic generator ([`traffic`]), BPF_PROG_TEST_RUN
//! micro-benchmark ([`micro`]) and control-process benchmark ([`control`]).
pub mod control;
pub mod micro;
pub mod traffic;
