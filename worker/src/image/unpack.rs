//! From stored content to a runnable image: reading an image's documents, labelling its blobs
//! for containerd's garbage collector, and unpacking its layers into a snapshot chain.
//!
//! This is what containerd's own unpacker does, over the gRPC API: for each layer, prepare an
//! active snapshot on top of the previous chain ID, let the diff service apply the layer blob
//! into its mounts, and commit it under the layer's chain ID. A chain ID names the same
//! filesystem whatever image it comes from, so layers shared between images are unpacked once.

use std::collections::BTreeMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use tonic::Code;

use super::media::{
    chain_ids, kind_of, Descriptor, ImageConfig, Index, Kind, Manifest, PLATFORM_OS,
};
use super::store::Store;
use super::{ImageError, SNAPSHOTTER};
use crate::containerd::not_found_as_none;

/// containerd's GC follows labels with this prefix from one blob to the blobs it names.
const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Label on a config blob naming the top snapshot of the unpacked image, per snapshotter.
const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";
/// Label on a layer blob giving its uncompressed digest (its diff ID).
const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// An image's documents as read from the content store.
#[derive(Debug, Clone)]
pub(crate) struct ImageContent {
    /// What the image record points at: a manifest, or an index of them.
    pub target: Descriptor,
    /// The index, when the target is one.
    pub index: Option<Index>,
    /// The linux/amd64 manifest.
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// Chain ID of each layer, bottom first.
    pub chain: Vec<String>,
}

impl ImageContent {
    /// The snapshot a container of this image starts from.
    pub fn top_chain_id(&self) -> &str {
        self.chain.last().map(String::as_str).unwrap_or_default()
    }

    /// Blob sizes added up: what the image occupies in the content store (compressed).
    pub fn size(&self) -> u64 {
        let mut total = self.manifest_desc.size + self.manifest.config.size;
        if self.index.is_some() {
            total += self.target.size;
        }
        total += self.manifest.layers.iter().map(|l| l.size).sum::<i64>();
        total.max(0) as u64
    }
}

/// Reads the documents of the image whose record points at `target`, named `image` in errors.
pub(crate) async fn read_image(
    store: &Store<'_>,
    image: &str,
    target: &Descriptor,
) -> Result<ImageContent, ImageError> {
    let body = store.read(&target.digest).await?;
    let kind = kind_of(&target.media_type, Some(&body)).ok_or_else(|| {
        ImageError::Unsupported(format!(
            "{image} points at {} of media type {:?}, which is neither an image index nor an \
             image manifest (Docker schema 1 images are not supported; re-push the image with \
             a current tool)",
            target.digest, target.media_type
        ))
    })?;
    let (index, manifest_desc, manifest_body) = match kind {
        Kind::Manifest => (None, target.clone(), body),
        Kind::Index => {
            let index: Index = parse_json(image, "image index", &body)?;
            let chosen = index
                .select_platform()
                .cloned()
                .ok_or_else(|| no_platform(image, &index))?;
            let body = store.read(&chosen.digest).await?;
            (Some(index), chosen, body)
        }
    };
    let manifest: Manifest = parse_json(image, "image manifest", &manifest_body)?;
    let config_body = store.read(&manifest.config.digest).await?;
    let config: ImageConfig = parse_json(image, "image config", &config_body)?;
    if index.is_none() && !config.os.is_empty() && config.os != PLATFORM_OS {
        return Err(ImageError::NoPlatform {
            image: image.to_string(),
            available: format!("{}/{}", config.os, config.architecture),
        });
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Corrupt(format!(
            "{image}: the manifest lists {} layers but the config's rootfs.diff_ids lists {}",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    if manifest.layers.is_empty() {
        return Err(ImageError::Unsupported(format!(
            "{image} has no layers, so there is no root filesystem to run"
        )));
    }
    let chain = chain_ids(&config.rootfs.diff_ids);
    Ok(ImageContent {
        target: target.clone(),
        index,
        manifest_desc,
        manifest,
        config,
        chain,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    image: &str,
    what: &str,
    body: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(body)
        .map_err(|e| ImageError::Corrupt(format!("{image}: the {what} is not valid: {e}")))
}

fn no_platform(image: &str, index: &Index) -> ImageError {
    let platforms = index.platforms();
    ImageError::NoPlatform {
        image: image.to_string(),
        available: if platforms.is_empty() {
            "no platform information".to_string()
        } else {
            platforms.join(", ")
        },
    }
}

/// Whether the image's top snapshot exists (and so the whole chain under it).
pub(crate) async fn is_unpacked(
    store: &Store<'_>,
    content: &ImageContent,
) -> Result<bool, ImageError> {
    snapshot_exists(store, content.top_chain_id()).await
}

async fn snapshot_exists(store: &Store<'_>, key: &str) -> Result<bool, ImageError> {
    let result = store
        .cd
        .snapshots()
        .stat(store.req(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        }))
        .await;
    let found = not_found_as_none(result)
        .map_err(|s| ImageError::containerd("looking up a snapshot", s))?;
    Ok(found.is_some())
}

/// Labels the image's blobs so GC keeps them (index → manifest → config and layers, config →
/// snapshot) and unpacks every layer not unpacked yet. All content must be in the store.
pub(crate) async fn label_and_unpack(
    store: &Store<'_>,
    image: &str,
    content: &ImageContent,
) -> Result<(), ImageError> {
    let manifest = &content.manifest;
    for (i, layer) in manifest.layers.iter().enumerate() {
        if !store.has(&layer.digest).await? {
            return Err(ImageError::content_missing(&layer.digest));
        }
        let mut labels = BTreeMap::new();
        labels.insert(
            UNCOMPRESSED.to_string(),
            content.config.rootfs.diff_ids[i].clone(),
        );
        store.set_labels(&layer.digest, &labels).await?;
    }

    unpack(store, image, content).await?;

    let mut labels = BTreeMap::new();
    labels.insert(
        format!("{GC_REF_SNAPSHOT}.{SNAPSHOTTER}"),
        content.top_chain_id().to_string(),
    );
    store.set_labels(&manifest.config.digest, &labels).await?;

    let mut labels = BTreeMap::new();
    labels.insert(
        format!("{GC_REF_CONTENT}.config"),
        manifest.config.digest.clone(),
    );
    for (i, layer) in manifest.layers.iter().enumerate() {
        labels.insert(format!("{GC_REF_CONTENT}.l.{i}"), layer.digest.clone());
    }
    store
        .set_labels(&content.manifest_desc.digest, &labels)
        .await?;

    if let Some(index) = &content.index {
        // Only the children that are here: a pull fetches one platform of a multi-platform
        // image, and GC labels to absent blobs would only confuse readers.
        let mut labels = BTreeMap::new();
        for (i, child) in index.manifests.iter().enumerate() {
            if store.info(&child.digest).await?.is_some() {
                labels.insert(format!("{GC_REF_CONTENT}.m.{i}"), child.digest.clone());
            }
        }
        store.set_labels(&content.target.digest, &labels).await?;
    }
    Ok(())
}

/// Applies each layer onto its parent chain, skipping chains that are already snapshots.
async fn unpack(store: &Store<'_>, image: &str, content: &ImageContent) -> Result<(), ImageError> {
    let mut parent = String::new();
    for (i, layer) in content.manifest.layers.iter().enumerate() {
        let chain_id = &content.chain[i];
        let diff_id = &content.config.rootfs.diff_ids[i];
        if snapshot_exists(store, chain_id).await? {
            store
                .hold(&format!("snapshots/{SNAPSHOTTER}"), chain_id)
                .await?;
            parent = chain_id.clone();
            continue;
        }
        // The random part keeps concurrent unpacks of the same layer apart; the loser's
        // commit finds the chain ID taken and drops its copy.
        let key = format!("extract-{:016x} {chain_id}", rand::random::<u64>());
        let mounts = store
            .cd
            .snapshots()
            .prepare(store.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.clone(),
                parent: parent.clone(),
                labels: Default::default(),
            }))
            .await
            .map_err(|s| ImageError::containerd("preparing a snapshot to unpack into", s))?
            .into_inner()
            .mounts;
        let result = apply_and_commit(store, image, layer, diff_id, chain_id, &key, mounts).await;
        if let Err(e) = result {
            remove_snapshot(store, &key).await;
            return Err(e);
        }
        tracing::info!(image, layer = i, %chain_id, digest = %layer.digest, "layer unpacked");
        parent = chain_id.clone();
    }
    Ok(())
}

async fn apply_and_commit(
    store: &Store<'_>,
    image: &str,
    layer: &Descriptor,
    diff_id: &str,
    chain_id: &str,
    key: &str,
    mounts: Vec<containerd_client::types::Mount>,
) -> Result<(), ImageError> {
    let applied = store
        .cd
        .diff()
        .apply(store.req(ApplyRequest {
            diff: Some(layer.to_containerd()),
            mounts,
            payloads: Default::default(),
            sync_fs: false,
        }))
        .await
        .map_err(|s| {
            ImageError::containerd(
                &format!("applying layer {} ({})", layer.digest, layer.media_type),
                s,
            )
        })?
        .into_inner()
        .applied
        .map(|d| d.digest)
        .unwrap_or_default();
    if applied != diff_id {
        return Err(ImageError::Corrupt(format!(
            "{image}: layer {} unpacks to {applied}, but the config says its diff ID is \
             {diff_id}",
            layer.digest
        )));
    }
    let committed = store
        .cd
        .snapshots()
        .commit(store.req(CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            name: chain_id.to_string(),
            key: key.to_string(),
            labels: Default::default(),
        }))
        .await;
    match committed {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            remove_snapshot(store, key).await;
            Ok(())
        }
        Err(s) => Err(ImageError::containerd("committing an unpacked layer", s)),
    }
}

async fn remove_snapshot(store: &Store<'_>, key: &str) {
    let result = store
        .cd
        .snapshots()
        .remove(store.req(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        }))
        .await;
    if let Err(status) = result {
        tracing::warn!(key, error = %status, "could not remove unpack snapshot");
    }
}

/// linux/amd64, as it is named in errors.
pub(crate) fn platform_name() -> String {
    format!("{PLATFORM_OS}/{}", super::media::platform_arch())
}
