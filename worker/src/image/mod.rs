//! Images: load archives, pull from registries, unpack into snapshots, list.
//!
//! Containerd 1.6 has no Transfer service, so Shoal does what `ctr` does by hand: blobs go into
//! the content store, an image record names the manifest, and each layer is applied by the diff
//! service onto a snapshot chain keyed by the layers' chain IDs.

/// What the executor needs from an image to build a container's spec and root filesystem.
#[derive(Debug, Clone, Default)]
pub struct ResolvedImage {
    /// Normalised name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of the image's manifest.
    pub digest: String,
    /// Chain ID of the top layer: the committed snapshot a container's rootfs is prepared from.
    pub top_chain_id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: Option<String>,
}
