//! Test harness: real containerd instances, test images, daemons and network-namespace hosts,
//! each started with private paths and cleaned up on drop; and the helpers the end-to-end tests
//! (`tests/`) and the benchmarks (`src/bin/`) share to drive and read them.

pub mod bench;
pub mod cluster;
pub mod containerd;
pub mod daemon;
pub mod disk;
pub mod histogram;
pub mod history;
pub mod hollow;
pub mod http;
pub mod image;
pub mod listing;
pub mod memory;
pub mod mtls;
pub mod netns;
pub mod phases;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod swarm;
pub mod table;
pub mod tasknet;
pub mod token_server;
pub mod workloads;
