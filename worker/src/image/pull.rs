//! Pulling an image from its registry into containerd's content store, with `oci-client`.
//!
//! Manifests and blobs are stored byte for byte as the registry serves them (their digests
//! are their names). Registries on loopback addresses are spoken to over plain HTTP, as docker
//! treats them as insecure registries by default; every other registry over HTTPS.

use std::time::Duration;

use futures::StreamExt;
use oci_client::client::ClientConfig;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use shoal_proto::reference::Reference;

use super::media::{
    kind_of, media_type_for, sha256_digest, Descriptor, Index, Kind, Manifest, DOCKER_MANIFEST,
    OCI_MANIFEST,
};
use super::registry::credentials_for;
use super::store::{BlobWriter, Store};
use super::{error_chain, ImageError, NotFoundReason, PullOptions};

/// How long connecting to a registry may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Fetches the image `reference` names (its manifest or index, the linux/amd64 manifest,
/// config and layers) into the store, and returns the descriptor the image record should
/// point at.
pub(crate) async fn pull(
    store: &Store<'_>,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Descriptor, ImageError> {
    let image = reference.to_string();
    let registry = reference.registry.clone();
    let roots = options
        .tls
        .roots(&registry)
        .map_err(|e| pull_error_text(&image, &registry, e.to_string()))?;
    let client = oci_client::Client::new(ClientConfig {
        protocol: options.tls.protocol(&registry),
        connect_timeout: Some(CONNECT_TIMEOUT),
        extra_root_certificates: roots,
        ..Default::default()
    });
    let oref: oci_client::Reference = image
        .parse()
        .map_err(|e| ImageError::Unsupported(format!("{image} cannot be pulled: {e}")))?;
    let auth = credentials_for(options.auth.as_ref(), &registry);
    tracing::info!(%image, %registry, "pulling image");

    let (body, _) = client
        .pull_manifest_raw(&oref, &auth, super::media::ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| lookup_error(&image, &registry, e))?;
    let digest = sha256_digest(&body);
    if let Some(wanted) = &reference.digest {
        if *wanted != digest {
            return Err(ImageError::Corrupt(format!(
                "registry {registry} served content hashing to {digest} for {image}"
            )));
        }
    }
    let kind = kind_of("", Some(&body)).ok_or_else(|| {
        ImageError::Unsupported(format!(
            "registry {registry} served {image} in a format that is neither an OCI/Docker v2 \
             manifest nor an index (Docker schema 1 images are not supported)"
        ))
    })?;
    let target = Descriptor {
        media_type: media_type_for(&kind, &body),
        digest: digest.clone(),
        size: body.len() as i64,
        annotations: None,
        platform: None,
    };
    store.write_all(&digest, &body).await?;

    let manifest_body = match kind {
        Kind::Manifest => body.to_vec(),
        Kind::Index => {
            let index: Index = serde_json::from_slice(&body).map_err(|e| {
                ImageError::Corrupt(format!("{image}: the image index is not valid: {e}"))
            })?;
            let chosen =
                index
                    .select_platform()
                    .cloned()
                    .ok_or_else(|| ImageError::NoPlatform {
                        image: image.clone(),
                        available: index.platforms().join(", "),
                    })?;
            let child = oci_client::Reference::with_digest(
                oref.registry().to_string(),
                oref.repository().to_string(),
                chosen.digest.clone(),
            );
            let (child_body, _) = client
                .pull_manifest_raw(&child, &auth, &[OCI_MANIFEST, DOCKER_MANIFEST])
                .await
                .map_err(|e| pull_error(&image, &registry, e))?;
            if sha256_digest(&child_body) != chosen.digest {
                return Err(ImageError::Corrupt(format!(
                    "registry {registry} served wrong content for manifest {} of {image}",
                    chosen.digest
                )));
            }
            store.write_all(&chosen.digest, &child_body).await?;
            child_body.to_vec()
        }
    };
    let manifest: Manifest = serde_json::from_slice(&manifest_body).map_err(|e| {
        ImageError::Corrupt(format!("{image}: the image manifest is not valid: {e}"))
    })?;

    for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if store.has(&desc.digest).await? {
            continue;
        }
        fetch_blob(store, &client, &oref, &image, &registry, desc).await?;
    }
    tracing::info!(%image, digest = %target.digest, "image pulled");
    Ok(target)
}

async fn fetch_blob(
    store: &Store<'_>,
    client: &oci_client::Client,
    oref: &oci_client::Reference,
    image: &str,
    registry: &str,
    desc: &Descriptor,
) -> Result<(), ImageError> {
    tracing::debug!(image, digest = %desc.digest, size = desc.size, "fetching blob");
    let stream = client
        .pull_blob_stream(oref, desc.digest.as_str())
        .await
        .map_err(|e| pull_error(image, registry, e))?;
    let Some(mut writer) = store
        .writer(Some(&desc.digest), u64::try_from(desc.size).ok())
        .await?
    else {
        return Ok(());
    };
    match copy(&mut writer, stream, image, registry).await {
        Ok(()) => writer.commit().await.map(|_| ()),
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

async fn copy(
    writer: &mut BlobWriter<'_>,
    mut stream: oci_client::client::SizedStream,
    image: &str,
    registry: &str,
) -> Result<(), ImageError> {
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ImageError::Pull {
            image: image.to_string(),
            registry: registry.to_string(),
            detail: error_chain(&e),
        })?;
        writer.write(&chunk).await?;
    }
    Ok(())
}

/// Errors of the first request, which decide whether the image exists at all.
fn lookup_error(image: &str, registry: &str, err: OciDistributionError) -> ImageError {
    let not_found = |reason| ImageError::NotFound {
        image: image.to_string(),
        registry: registry.to_string(),
        reason,
    };
    match &err {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            not_found(NotFoundReason::NotInRegistry)
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            not_found(NotFoundReason::NotInRegistry)
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found(NotFoundReason::NotInRegistry)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                not_found(NotFoundReason::AccessDenied)
            } else {
                pull_error(image, registry, err)
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => not_found(NotFoundReason::AccessDenied),
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            not_found(NotFoundReason::RegistryUnreachable(root_cause(&err)))
        }
        _ => pull_error(image, registry, err),
    }
}

fn pull_error(image: &str, registry: &str, err: OciDistributionError) -> ImageError {
    pull_error_text(image, registry, error_chain(&err))
}

fn pull_error_text(image: &str, registry: &str, detail: String) -> ImageError {
    ImageError::Pull {
        image: image.to_string(),
        registry: registry.to_string(),
        detail,
    }
}

/// The innermost cause ("Connection refused", "Name or service not known"): what a user can
/// act on when a registry cannot be reached.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
