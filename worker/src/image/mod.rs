//! Images: load archives, pull from registries, unpack into snapshots, list.
//!
//! Containerd 1.6 has no Transfer service, so Shoal does what `ctr` does by hand: blobs go into
//! the content store, an image record names the manifest, and each layer is applied by the diff
//! service onto a snapshot chain keyed by the layers' chain IDs.
//!
//! Images are named by their normalised reference (`docker.io/library/busybox:latest`, see
//! [`shoal_proto::reference`]), the same names containerd's and docker's tools use, and only
//! the linux/amd64 variant of a multi-platform image is fetched and unpacked.

mod archive;
pub mod media;
mod pull;
pub mod registry;
mod store;
mod unpack;

use std::path::{Path, PathBuf};

use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, ListImagesRequest, UpdateImageRequest,
};
use shoal_proto::reference::{parse_normalized, ReferenceError};
use tonic::Code;

use crate::containerd::{not_found_as_none, Containerd};
pub use registry::{is_insecure_registry, login, LoginError, RegistryTls};
use store::Store;
use unpack::{is_unpacked, label_and_unpack, read_image, ImageContent};

/// The snapshotter images are unpacked with, and container root filesystems prepared from.
pub const SNAPSHOTTER: &str = "overlayfs";

/// What the executor needs from an image to build a container's spec and root filesystem.
#[derive(Debug, Clone, Default)]
pub struct ResolvedImage {
    /// Normalised name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of the image's manifest: what the image record points at (for a multi-platform
    /// image, its index), the digest docker shows as the repo digest.
    pub digest: String,
    /// Chain ID of the top layer: the committed snapshot a container's rootfs is prepared from.
    pub top_chain_id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: Option<String>,
    /// The image's `HEALTHCHECK`, if it has one.
    pub healthcheck: Option<shoal_proto::HealthConfig>,
    /// Digest of the linux/amd64 manifest (equal to `digest` unless the image is an index).
    pub platform_manifest_digest: String,
    /// Digest of the image config: docker's image ID.
    pub config_digest: String,
    /// Snapshotter holding `top_chain_id` ([`SNAPSHOTTER`]).
    pub snapshotter: String,
}

/// One line of `shoal image ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Normalised name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of what the image record points at (manifest, or index).
    pub digest: String,
    /// Bytes of all the image's blobs for linux/amd64 (compressed layers, as stored).
    pub size: u64,
    /// When the image was built (its config's `created`), or else when it was stored here;
    /// milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// Why an image could not be found anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFoundReason {
    /// The registry answered that it has no such repository or tag.
    NotInRegistry,
    /// The registry refused anonymous access: the repository does not exist or is private.
    AccessDenied,
    /// The registry could not be reached (the detail says why).
    RegistryUnreachable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    #[error("{}", not_found_message(image, registry, reason))]
    NotFound {
        image: String,
        registry: String,
        reason: NotFoundReason,
    },
    #[error(
        "pulling {image} from registry {registry} failed: {detail}; check that the registry \
         is up and serves this image, then retry"
    )]
    Pull {
        image: String,
        registry: String,
        detail: String,
    },
    #[error(
        "cannot load image archive {}: {detail}. Expected an OCI image layout tar (oci-layout, \
         index.json and blobs/sha256/…) or a `docker save` tar (manifest.json, config JSON and \
         layer tars), optionally gzip-compressed",
        path.display()
    )]
    Archive { path: PathBuf, detail: String },
    #[error(
        "image {image} has no {} variant (it has: {available}); use an image built for {}",
        unpack::platform_name(),
        unpack::platform_name()
    )]
    NoPlatform { image: String, available: String },
    #[error(
        "image content {digest} is missing from containerd's content store; pull or load the \
         image again"
    )]
    ContentMissing { digest: String },
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("corrupt image: {0}")]
    Corrupt(String),
    #[error(
        "containerd failed while {op}: {code:?}: {message}; check that containerd is running \
         and healthy (its log says more)"
    )]
    Containerd {
        op: String,
        code: Code,
        message: String,
    },
    #[error("internal error in image handling: {0}; please report this")]
    Internal(String),
}

/// The error and its causes on one line: reqwest's own message ("error sending request")
/// hides the useful part ("Connection refused", "dns error") in its sources.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

fn not_found_message(image: &str, registry: &str, reason: &NotFoundReason) -> String {
    let advice = "load it with `shoal image load -i FILE` (on the node that runs the task) or check the image name";
    match reason {
        NotFoundReason::NotInRegistry => {
            format!("image {image} was not found locally nor in registry {registry}; {advice}")
        }
        NotFoundReason::AccessDenied => format!(
            "image {image} was not found locally, and registry {registry} denied access to it \
             (the repository does not exist or needs credentials: `shoal login {registry}`, \
             then create or update the service with --with-registry-auth); {advice}"
        ),
        NotFoundReason::RegistryUnreachable(detail) => format!(
            "image {image} was not found locally, and registry {registry} cannot be reached \
             ({detail}); {advice}, or check that the registry is up and reachable"
        ),
    }
}

impl ImageError {
    pub(crate) fn containerd(op: &str, status: tonic::Status) -> Self {
        ImageError::Containerd {
            op: op.to_string(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    pub(crate) fn content_missing(digest: &str) -> Self {
        ImageError::ContentMissing {
            digest: digest.to_string(),
        }
    }

    pub(crate) fn internal(what: &str) -> Self {
        ImageError::Internal(what.to_string())
    }

    /// Whether the image exists neither locally nor in its registry (as far as can be told).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound { .. })
    }
}

/// Loads an image archive (OCI image layout or `docker save` tar, optionally gzipped) into
/// containerd: stores its blobs, names its images, unpacks them. Returns the names loaded.
pub async fn load_archive(cd: &Containerd, archive: &Path) -> Result<Vec<String>, ImageError> {
    let store = Store::leased(cd).await?;
    let result = load_leased(&store, archive).await;
    store.release().await;
    result
}

async fn load_leased(store: &Store<'_>, archive: &Path) -> Result<Vec<String>, ImageError> {
    let images = archive::import(store, archive).await?;
    let mut loaded = Vec::new();
    for image in images {
        let first = image.names[0].clone();
        let content = read_image(store, &first, &image.target)
            .await
            .map_err(|e| match e {
                ImageError::ContentMissing { digest } => ImageError::Archive {
                    path: archive.to_path_buf(),
                    detail: format!("image {first} needs blob {digest}, which is not in it"),
                },
                other => other,
            })?;
        label_and_unpack(store, &first, &content).await?;
        for name in &image.names {
            put_image_record(store.cd, name, &image.target).await?;
            tracing::info!(image = %name, digest = %image.target.digest, "image loaded");
            loaded.push(name.clone());
        }
    }
    Ok(loaded)
}

/// Creates the image record `name` pointing at `target`, or repoints an existing one.
async fn put_image_record(
    cd: &Containerd,
    name: &str,
    target: &media::Descriptor,
) -> Result<(), ImageError> {
    let image = Image {
        name: name.to_string(),
        target: Some(target.to_containerd()),
        ..Default::default()
    };
    let created = cd
        .images()
        .create(cd.request(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            cd.images()
                .update(cd.request(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".to_string()],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| ImageError::containerd("updating an image record", s))?;
            Ok(())
        }
        Err(s) => Err(ImageError::containerd("creating an image record", s)),
    }
}

async fn get_image_record(cd: &Containerd, name: &str) -> Result<Option<Image>, ImageError> {
    let got = cd
        .images()
        .get(cd.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await;
    let found =
        not_found_as_none(got).map_err(|s| ImageError::containerd("looking up an image", s))?;
    Ok(found.and_then(|resp| resp.into_inner().image))
}

/// A local image of repository `repo` whose record points at `digest`.
async fn find_by_digest(
    cd: &Containerd,
    repo: &str,
    digest: &str,
) -> Result<Option<Image>, ImageError> {
    let images = cd
        .images()
        .list(cd.request(ListImagesRequest {
            filters: vec![format!("target.digest=={digest}")],
        }))
        .await
        .map_err(|s| ImageError::containerd("listing images", s))?
        .into_inner()
        .images;
    Ok(images
        .into_iter()
        .find(|i| parse_normalized(&i.name).is_ok_and(|r| r.name() == repo)))
}

fn target_of(image: &Image) -> Result<media::Descriptor, ImageError> {
    let t = image.target.as_ref().ok_or_else(|| {
        ImageError::Corrupt(format!(
            "the image record {} has no target; load or pull the image again",
            image.name
        ))
    })?;
    Ok(media::Descriptor {
        media_type: t.media_type.clone(),
        digest: t.digest.clone(),
        size: t.size,
        annotations: None,
        platform: None,
    })
}

/// Makes sure the image `reference` is present and unpacked, pulling it from its registry
/// if it is not here, and returns what a container of it needs.
pub async fn ensure_image(cd: &Containerd, reference: &str) -> Result<ResolvedImage, ImageError> {
    ensure_image_with(cd, reference, &PullOptions::default()).await
}

/// How to pull when an image is not here: the credentials a service was given
/// (`--with-registry-auth`) and where registries' CA certificates are.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub auth: Option<shoal_proto::RegistryAuth>,
    pub tls: registry::RegistryTls,
}

/// [`ensure_image`], pulling with `options`.
pub async fn ensure_image_with(
    cd: &Containerd,
    reference: &str,
    options: &PullOptions,
) -> Result<ResolvedImage, ImageError> {
    let parsed = parse_normalized(reference)?;
    let name = parsed.to_string();

    let mut record = get_image_record(cd, &name).await?;
    if record.is_none() {
        if let Some(digest) = &parsed.digest {
            // As docker does, a digest reference is satisfied by any local image with that
            // content, whatever name it was loaded or pulled under.
            record = find_by_digest(cd, &parsed.name(), digest).await?;
        }
    }
    if let Some(record) = record {
        let target = target_of(&record)?;
        let reader = Store::read_only(cd);
        match read_image(&reader, &name, &target).await {
            Ok(content) if is_unpacked(&reader, &content).await? => {
                return Ok(resolved(&name, &content));
            }
            Ok(_) => {
                tracing::info!(image = %name, "image present but not unpacked; unpacking");
                let store = Store::leased(cd).await?;
                let result = unpack_present(&store, &name, &target).await;
                store.release().await;
                match result {
                    Ok(resolved) => return Ok(resolved),
                    Err(ImageError::ContentMissing { digest }) => {
                        tracing::warn!(image = %name, %digest, "layer missing; pulling again");
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(ImageError::ContentMissing { digest }) => {
                tracing::warn!(image = %name, %digest, "image content missing; pulling again");
            }
            Err(e) => return Err(e),
        }
    }

    let store = Store::leased(cd).await?;
    let result = pull_leased(&store, &parsed, options).await;
    store.release().await;
    result
}

async fn unpack_present(
    store: &Store<'_>,
    name: &str,
    target: &media::Descriptor,
) -> Result<ResolvedImage, ImageError> {
    let content = read_image(store, name, target).await?;
    label_and_unpack(store, name, &content).await?;
    Ok(resolved(name, &content))
}

async fn pull_leased(
    store: &Store<'_>,
    reference: &shoal_proto::reference::Reference,
    options: &PullOptions,
) -> Result<ResolvedImage, ImageError> {
    let name = reference.to_string();
    let target = pull::pull(store, reference, options).await?;
    let content = read_image(store, &name, &target).await?;
    label_and_unpack(store, &name, &content).await?;
    put_image_record(store.cd, &name, &target).await?;
    Ok(resolved(&name, &content))
}

fn resolved(name: &str, content: &ImageContent) -> ResolvedImage {
    let cfg = content.config.config.clone().unwrap_or_default();
    ResolvedImage {
        name: name.to_string(),
        digest: content.target.digest.clone(),
        top_chain_id: content.top_chain_id().to_string(),
        entrypoint: cfg.entrypoint.unwrap_or_default(),
        cmd: cfg.cmd.unwrap_or_default(),
        env: cfg.env.unwrap_or_default(),
        working_dir: cfg.working_dir.unwrap_or_default(),
        user: cfg.user.unwrap_or_default(),
        stop_signal: cfg.stop_signal.filter(|s| !s.is_empty()),
        healthcheck: cfg
            .healthcheck
            .as_ref()
            .map(media::ImageHealthcheck::to_config),
        platform_manifest_digest: content.manifest_desc.digest.clone(),
        config_digest: content.manifest.config.digest.clone(),
        snapshotter: SNAPSHOTTER.to_string(),
    }
}

/// Every image in the namespace, sorted by name.
pub async fn list_images(cd: &Containerd) -> Result<Vec<ImageInfo>, ImageError> {
    let records = cd
        .images()
        .list(cd.request(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(|s| ImageError::containerd("listing images", s))?
        .into_inner()
        .images;
    let reader = Store::read_only(cd);
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let target = target_of(&record)?;
        let stored_at = record
            .created_at
            .as_ref()
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .unwrap_or_default();
        // An image whose content is damaged still gets listed, so it can be seen and removed.
        let (size, created_at_ms) = match read_image(&reader, &record.name, &target).await {
            Ok(content) => {
                let built = content
                    .config
                    .created
                    .as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map(|t| t.timestamp_millis());
                (content.size(), built.unwrap_or(stored_at))
            }
            Err(e) => {
                tracing::warn!(image = %record.name, error = %e, "cannot read image content");
                (target.size.max(0) as u64, stored_at)
            }
        };
        out.push(ImageInfo {
            name: record.name.clone(),
            digest: target.digest,
            size,
            created_at_ms,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
