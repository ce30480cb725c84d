//! Loading image archives: OCI image layout tars and `docker save` tars, optionally gzipped.
//!
//! The archive is read once, front to back, on a blocking thread; every file is streamed into
//! containerd's content store as it passes (blobs under `blobs/sha256/` by their known digest,
//! other large files such as `docker save` layer tars by the digest their data hashes to), and
//! small files are kept in memory to be parsed once the whole archive is in. A `docker save`
//! image has no manifest, so one is written for it, as `docker load` does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use shoal_proto::reference::parse_normalized;
use tokio::sync::mpsc;

use super::media::{
    is_sha256_digest, kind_of, layer_media_type, media_type_for, sha256_digest, Descriptor, Index,
    OCI_CONFIG, OCI_MANIFEST,
};
use super::store::{BlobWriter, Store};
use super::ImageError;

/// Files up to this size are kept in memory (documents, small layers); larger ones are only
/// streamed to the content store.
const SMALL_FILE: u64 = 1 << 20;
/// The size of the pieces the reader thread hands over.
const CHUNK: usize = 1 << 20;

/// The annotation containerd and docker put the full image name in.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation: a tag, or (as skopeo writes it) a full reference.
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image found in an archive: the names to give it and what its record points at.
pub(crate) struct ArchiveImage {
    pub names: Vec<String>,
    pub target: Descriptor,
}

enum Event {
    Start { path: String, size: u64 },
    Data(Vec<u8>),
    End,
}

/// A file as it passed through.
struct Seen {
    digest: String,
    size: u64,
    /// The first bytes, to tell compressed layers from plain tars.
    head: Vec<u8>,
    /// The content, for small files.
    data: Option<Vec<u8>>,
    /// Whether it was written to the content store (or found there).
    stored: bool,
}

/// Streams the archive into the store and returns the images it holds (content written and
/// held by the store's lease; not yet labelled, unpacked or named).
pub(crate) async fn import(
    store: &Store<'_>,
    archive: &Path,
) -> Result<Vec<ArchiveImage>, ImageError> {
    let files = ingest(store, archive).await?;
    let bad = |detail: String| ImageError::Archive {
        path: archive.to_path_buf(),
        detail,
    };
    if let Some(index) = files.get("index.json") {
        let index = index
            .data
            .as_deref()
            .ok_or_else(|| bad("index.json is too large to be an image index".into()))?;
        oci_images(store, archive, &files, index).await
    } else if let Some(manifest) = files.get("manifest.json") {
        let manifest = manifest
            .data
            .as_deref()
            .ok_or_else(|| bad("manifest.json is too large to be a docker manifest".into()))?;
        docker_images(store, archive, &files, manifest).await
    } else if files.is_empty() {
        Err(bad("it contains no files (is it a tar file at all?)".into()))
    } else {
        Err(bad(
            "it has neither index.json nor manifest.json at its top level".into(),
        ))
    }
}

/// Reads every regular file of the archive, storing blobs and keeping small files.
async fn ingest(store: &Store<'_>, archive: &Path) -> Result<HashMap<String, Seen>, ImageError> {
    let (tx, mut rx) = mpsc::channel::<Result<Event, ImageError>>(4);
    let path = archive.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = read_archive(&path, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });

    let mut files = HashMap::new();
    let result = async {
        while let Some(event) = rx.recv().await {
            let Event::Start { path, size } = event? else {
                return Err(ImageError::internal("archive reader lost track of files"));
            };
            let seen = receive_file(store, archive, &mut rx, &path, size).await?;
            files.insert(path, seen);
        }
        Ok(())
    }
    .await;
    // Dropping the receiver makes a still-running reader stop at its next send.
    drop(rx);
    let _ = reader.await;
    result.map(|()| files)
}

/// Receives one file's data from the reader and sends it where it belongs.
async fn receive_file(
    store: &Store<'_>,
    archive: &Path,
    rx: &mut mpsc::Receiver<Result<Event, ImageError>>,
    path: &str,
    size: u64,
) -> Result<Seen, ImageError> {
    let blob_digest = path
        .strip_prefix("blobs/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(alg, hex)| format!("{alg}:{hex}"))
        .filter(|d| is_sha256_digest(d));
    let small = size <= SMALL_FILE;
    // Known blobs are stored unless present; other files only if they are too big to keep
    // (a small docker layer or config is stored later, once it is known to be one).
    let mut writer: Option<BlobWriter<'_>> = match &blob_digest {
        Some(digest) if store.has(digest).await? => None,
        Some(digest) => store.writer(Some(digest), Some(size)).await?,
        None if small => None,
        None => store.writer(None, Some(size)).await?,
    };
    let stored = blob_digest.is_some() || writer.is_some();
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut data = small.then(Vec::new);
    let mut received = 0u64;

    let outcome: Result<(), ImageError> = async {
        loop {
            let event = rx.recv().await.ok_or_else(|| {
                ImageError::internal("archive reader stopped in the middle of a file")
            })??;
            match event {
                Event::Data(chunk) => {
                    received += chunk.len() as u64;
                    hasher.update(&chunk);
                    if head.len() < 8 {
                        head.extend(chunk.iter().take(8 - head.len()));
                    }
                    if let Some(buf) = data.as_mut() {
                        buf.extend_from_slice(&chunk);
                    }
                    if let Some(w) = writer.as_mut() {
                        w.write(&chunk).await?;
                    }
                }
                Event::End => return Ok(()),
                Event::Start { .. } => {
                    return Err(ImageError::internal("archive reader skipped a file's end"))
                }
            }
        }
    }
    .await;
    if let Err(e) = outcome {
        if let Some(w) = writer {
            w.abort().await;
        }
        return Err(e);
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(expected) = &blob_digest {
        if *expected != digest {
            if let Some(w) = writer {
                w.abort().await;
            }
            return Err(ImageError::Archive {
                path: archive.to_path_buf(),
                detail: format!("{path} is corrupt: its content hashes to {digest}"),
            });
        }
    }
    if received != size {
        if let Some(w) = writer {
            w.abort().await;
        }
        return Err(ImageError::Archive {
            path: archive.to_path_buf(),
            detail: format!("{path} is truncated ({received} of {size} bytes)"),
        });
    }
    if let Some(w) = writer {
        w.commit().await?;
    }
    Ok(Seen {
        digest,
        size,
        head,
        data,
        stored,
    })
}

/// The blocking half: decompresses if needed and walks the tar, sending each regular file.
fn read_archive(
    path: &Path,
    tx: &mpsc::Sender<Result<Event, ImageError>>,
) -> Result<(), ImageError> {
    let bad = |detail: String| ImageError::Archive {
        path: path.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let gzipped = reader
        .fill_buf()
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("it is not a valid tar file: {e}")))?;
    let send = |event| tx.blocking_send(Ok(event)).is_ok();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("it is not a valid tar file: {e}")))?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| bad(format!("it has an unreadable file name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        if !send(Event::Start {
            path: name.clone(),
            size: entry.size(),
        }) {
            return Ok(());
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                let n = entry
                    .read(&mut buf[filled..])
                    .map_err(|e| bad(format!("reading {name} failed: {e}")))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            if !send(Event::Data(buf)) {
                return Ok(());
            }
        }
        if !send(Event::End) {
            return Ok(());
        }
    }
    Ok(())
}

/// The images of an OCI image layout: each entry of index.json that carries a name.
async fn oci_images(
    store: &Store<'_>,
    archive: &Path,
    files: &HashMap<String, Seen>,
    index_json: &[u8],
) -> Result<Vec<ArchiveImage>, ImageError> {
    let bad = |detail: String| ImageError::Archive {
        path: archive.to_path_buf(),
        detail,
    };
    let index: Index = serde_json::from_slice(index_json)
        .map_err(|e| bad(format!("index.json is not a valid OCI image index: {e}")))?;
    let mut images = Vec::new();
    for entry in &index.manifests {
        let names = names_from_annotations(entry)
            .map_err(|e| bad(format!("index.json names an image badly: {e}")))?;
        if names.is_empty() {
            tracing::warn!(
                archive = %archive.display(),
                digest = %entry.digest,
                "skipping unnamed image in archive"
            );
            continue;
        }
        if !store.has(&entry.digest).await? {
            return Err(bad(format!(
                "index.json refers to {}, which is not in blobs/",
                entry.digest
            )));
        }
        let mut target = entry.clone();
        if kind_of(&target.media_type, None).is_none() {
            let body = match files
                .get(&blob_path(&entry.digest))
                .and_then(|s| s.data.clone())
            {
                Some(b) => b,
                None => store.read(&entry.digest).await?,
            };
            let kind = kind_of(&target.media_type, Some(&body)).ok_or_else(|| {
                bad(format!(
                    "{} (named {}) is neither an image manifest nor an index",
                    entry.digest, names[0]
                ))
            })?;
            target.media_type = media_type_for(&kind, &body);
        }
        target.annotations = None;
        target.platform = None;
        images.push(ArchiveImage { names, target });
    }
    if images.is_empty() {
        return Err(bad(format!(
            "none of the {} entries in index.json carries an image name (annotation \
             {ANNOTATION_CONTAINERD_NAME} or {ANNOTATION_REF_NAME}); export the image with \
             its name, e.g. `skopeo copy … oci-archive:FILE:NAME:TAG`",
            index.manifests.len()
        )));
    }
    Ok(images)
}

/// The normalised names an index.json entry gives its image. `ref.name` counts only when it
/// is a full reference (skopeo); as a bare tag (containerd, docker) it goes with
/// `io.containerd.image.name`, which then holds the full name.
fn names_from_annotations(entry: &Descriptor) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    if let Some(name) = entry.annotation(ANNOTATION_CONTAINERD_NAME) {
        names.push(parse_normalized(name)?.to_string());
    } else if let Some(name) = entry.annotation(ANNOTATION_REF_NAME) {
        if name.contains(['/', ':', '@']) {
            names.push(parse_normalized(name)?.to_string());
        }
    }
    Ok(names)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// The images of a `docker save` archive, with an OCI manifest written for each.
async fn docker_images(
    store: &Store<'_>,
    archive: &Path,
    files: &HashMap<String, Seen>,
    manifest_json: &[u8],
) -> Result<Vec<ArchiveImage>, ImageError> {
    let bad = |detail: String| ImageError::Archive {
        path: archive.to_path_buf(),
        detail,
    };
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| bad(format!("manifest.json is not a docker save manifest: {e}")))?;
    let mut images = Vec::new();
    for entry in entries {
        let tags = entry.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            tracing::warn!(archive = %archive.display(), config = %entry.config,
                "skipping untagged image in archive");
            continue;
        }
        let names = tags
            .iter()
            .map(|t| parse_normalized(t).map(|r| r.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("manifest.json has a bad RepoTag: {e}")))?;

        let config_file = file(files, &entry.config, archive)?;
        let config_bytes = config_file.data.as_deref().ok_or_else(|| {
            bad(format!(
                "{} is too large to be an image config",
                entry.config
            ))
        })?;
        let config_digest = sha256_digest(config_bytes);
        store.write_all(&config_digest, config_bytes).await?;

        let mut layers = Vec::new();
        for layer_path in &entry.layers {
            let layer = file(files, layer_path, archive)?;
            if !layer.stored {
                let data = layer.data.as_deref().ok_or_else(|| {
                    ImageError::internal("a large archive file was neither kept nor stored")
                })?;
                store.write_all(&layer.digest, data).await?;
            }
            layers.push(json!({
                "mediaType": layer_media_type(&layer.head),
                "digest": layer.digest,
                "size": layer.size,
            }));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers,
        }))
        .map_err(|e| ImageError::internal(&format!("encoding a manifest: {e}")))?;
        let manifest_digest = sha256_digest(&manifest);
        store.write_all(&manifest_digest, &manifest).await?;
        images.push(ArchiveImage {
            names,
            target: Descriptor {
                media_type: OCI_MANIFEST.to_string(),
                digest: manifest_digest,
                size: manifest.len() as i64,
                annotations: None,
                platform: None,
            },
        });
    }
    if images.is_empty() {
        return Err(bad(
            "no image in manifest.json has RepoTags; save the image by name \
             (`docker save NAME:TAG`)"
                .into(),
        ));
    }
    Ok(images)
}

fn file<'f>(
    files: &'f HashMap<String, Seen>,
    path: &str,
    archive: &Path,
) -> Result<&'f Seen, ImageError> {
    let key = path.trim_start_matches("./").trim_start_matches('/');
    files.get(key).ok_or_else(|| ImageError::Archive {
        path: PathBuf::from(archive),
        detail: format!("manifest.json refers to {path}, which is not in the archive"),
    })
}

fn blob_path(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("blobs/{alg}/{hex}"),
        None => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: "sha256:x".into(),
            size: 1,
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            platform: None,
        }
    }

    #[test]
    fn names_come_from_annotations() {
        let both = entry(&[
            (
                ANNOTATION_CONTAINERD_NAME,
                "docker.io/library/busybox:latest",
            ),
            (ANNOTATION_REF_NAME, "latest"),
        ]);
        assert_eq!(
            names_from_annotations(&both).unwrap(),
            vec!["docker.io/library/busybox:latest"]
        );
        let skopeo = entry(&[(ANNOTATION_REF_NAME, "localhost:5000/app:1")]);
        assert_eq!(
            names_from_annotations(&skopeo).unwrap(),
            vec!["localhost:5000/app:1"]
        );
        let bare_tag = entry(&[(ANNOTATION_REF_NAME, "latest")]);
        assert!(names_from_annotations(&bare_tag).unwrap().is_empty());
        let bad = entry(&[(ANNOTATION_CONTAINERD_NAME, "Bad/Name")]);
        assert!(names_from_annotations(&bad).is_err());
    }

    #[test]
    fn blob_paths() {
        assert_eq!(blob_path("sha256:abc"), "blobs/sha256/abc");
    }
}
