//! The HA pair (issue 10), built from the bottom up. What exists so far:
//!
//! - [`key`]: the pair's shared secret, refused unless private and 32-64
//!   bytes, and the key id both nodes derive from it;
//! - [`wire`]: the envelope of every peer message (heartbeats and the sync
//!   stream): versioned, HMAC-SHA256, per-start epochs and per-channel
//!   sequence numbers, each refusal counted by class;
//! - [`election`]: who masters each group, VRRPv3's rules as a pure state
//!   machine on a caller's clock.
//!
//! Not yet: the `[ha]` configuration, the heartbeat thread, the sync
//! stream, the per-group role map in the data plane, failover, licences
//! and the cluster commands. Until they exist ferry runs as one node.

pub mod election;
pub mod key;
pub mod wire;
