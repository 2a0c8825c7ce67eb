//! ferry's traffic generator ([`traffic`]) and BPF_PROG_TEST_RUN
//! micro-benchmark ([`micro`]).
pub mod micro;
pub mod traffic;
