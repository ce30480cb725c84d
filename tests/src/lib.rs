//! Test harness: real containerd instances, test images, daemons and network-namespace hosts,
//! each started with private paths and cleaned up on drop.

pub mod cluster;
pub mod containerd;
pub mod daemon;
pub mod image;
pub mod netns;
