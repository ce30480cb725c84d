//! A real, tiny test image built from Debian's busybox-static, with no registry or internet.
//!
//! The image has one layer: `/bin/busybox`, a symlink in `/bin` for every applet
//! `busybox --list` names, `/etc/passwd` and `/etc/group` with `root` and `nobody`, and the
//! usual empty top-level directories (`/tmp` world-writable). Its config runs `sh` with the
//! standard `PATH`, like docker's official busybox image. Every timestamp, owner and ordering is
//! fixed, so the same busybox binary always gives the same layer, config and manifest digests.
//!
//! [`build_busybox_oci_archive`] writes it as an OCI image layout tar (what `ctr export` and
//! `skopeo copy … oci-archive:` produce), [`build_busybox_docker_archive`] as a `docker save`
//! tar (manifest.json, config and an uncompressed layer tar) carrying the same layer;
//! [`build_busybox_docker_archive_with_healthcheck`] the same with a `HEALTHCHECK`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Where Debian's busybox-static package installs the binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";
/// The name the test image gets unless told otherwise.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
/// Another name for [`BUSYBOX_IMAGE`].
pub const DEFAULT_NAME: &str = BUSYBOX_IMAGE;

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// 2024-01-01T00:00:00Z: every file and the image itself claim this time, for determinism.
const EPOCH: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of the busybox test image, as bytes, with their digests.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The layer as an uncompressed tar.
    pub layer_tar: Vec<u8>,
    /// The same layer gzip-compressed (what the OCI manifest references).
    pub layer_gzip: Vec<u8>,
    /// `sha256:` digest of `layer_tar`: the config's `rootfs.diff_ids[0]` and the chain ID of
    /// the image's only snapshot.
    pub diff_id: String,
    /// `sha256:` digest of `layer_gzip`.
    pub layer_digest: String,
    /// The image config JSON.
    pub config: Vec<u8>,
    pub config_digest: String,
    /// The OCI image manifest JSON.
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Builds the busybox test image from [`BUSYBOX_PATH`].
pub fn busybox_image() -> Result<TestImage> {
    busybox_image_with(&serde_json::Map::new())
}

/// The busybox test image with `extra` added to its config's `config` (docker's container
/// config: e.g. `"Healthcheck"` for a `HEALTHCHECK`).
pub fn busybox_image_with(extra: &serde_json::Map<String, serde_json::Value>) -> Result<TestImage> {
    let mut container_config = serde_json::Map::new();
    container_config.insert("Env".into(), json!([PATH_ENV]));
    container_config.insert("Cmd".into(), json!(["sh"]));
    container_config.extend(extra.clone());
    let layer_tar = busybox_layer_tar()?;
    let diff_id = sha256_digest(&layer_tar);
    let layer_gzip = gzip(&layer_tar)?;
    let layer_digest = sha256_digest(&layer_gzip);

    let config = serde_json::to_vec(&json!({
        "architecture": go_arch(),
        "os": "linux",
        "created": CREATED,
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{
            "created": CREATED,
            "created_by": "shoal-tests build-test-image: Debian busybox-static",
        }],
    }))?;
    let config_digest = sha256_digest(&config);

    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_OCI_CONFIG,
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": MEDIA_TYPE_OCI_LAYER_GZIP,
            "digest": layer_digest,
            "size": layer_gzip.len(),
        }],
    }))?;
    let manifest_digest = sha256_digest(&manifest);

    Ok(TestImage {
        layer_tar,
        layer_gzip,
        diff_id,
        layer_digest,
        config,
        config_digest,
        manifest,
        manifest_digest,
    })
}

/// Writes the busybox test image to `out` as an OCI image layout tar named `name`
/// (e.g. `busybox:latest`; normalised to `docker.io/library/busybox:latest` in the
/// `io.containerd.image.name` annotation, with the tag in `org.opencontainers.image.ref.name`).
pub fn build_busybox_oci_archive(out: &Path, name: &str) -> Result<()> {
    let image = busybox_image()?;
    let reference = shoal_proto::reference::parse_normalized(name)
        .with_context(|| format!("image name {name:?}"))?;
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "io.containerd.image.name".into(),
        reference.to_string().into(),
    );
    if let Some(tag) = &reference.tag {
        annotations.insert(
            "org.opencontainers.image.ref.name".into(),
            tag.clone().into(),
        );
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [{
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "annotations": annotations,
            "platform": {"architecture": go_arch(), "os": "linux"},
        }],
    }))?;

    let mut files: Vec<(String, &[u8])> = vec![
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), &index),
    ];
    for (digest, data) in [
        (&image.manifest_digest, &image.manifest),
        (&image.config_digest, &image.config),
        (&image.layer_digest, &image.layer_gzip),
    ] {
        files.push((blob_path(digest), data));
    }
    write_archive(out, &["blobs", "blobs/sha256"], &files)
}

/// Writes the busybox test image to `out` in the `docker save` format: `manifest.json`
/// naming `name` in `RepoTags`, the config as `<id>.json` and the uncompressed layer as
/// `<diff-id>/layer.tar`.
pub fn build_busybox_docker_archive(out: &Path, name: &str) -> Result<()> {
    write_docker_archive(out, name, &busybox_image()?)
}

/// [`build_busybox_docker_archive`] of an image with a `HEALTHCHECK`: docker's
/// `config.Healthcheck` (`Test`, and `Interval`, `Timeout`, `StartPeriod` in nanoseconds,
/// `Retries`), as `docker build` writes it.
pub fn build_busybox_docker_archive_with_healthcheck(
    out: &Path,
    name: &str,
    healthcheck: serde_json::Value,
) -> Result<()> {
    let mut extra = serde_json::Map::new();
    extra.insert("Healthcheck".into(), healthcheck);
    write_docker_archive(out, name, &busybox_image_with(&extra)?)
}

fn write_docker_archive(out: &Path, name: &str, image: &TestImage) -> Result<()> {
    let reference = shoal_proto::reference::parse_normalized(name)
        .with_context(|| format!("image name {name:?}"))?;
    let config_name = format!("{}.json", hex_part(&image.config_digest));
    let layer_dir = hex_part(&image.diff_id).to_string();
    let layer_name = format!("{layer_dir}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [reference.familiar()],
        "Layers": [layer_name],
    }]))?;
    let files: Vec<(String, &[u8])> = vec![
        (config_name.clone(), &image.config),
        (layer_name, &image.layer_tar),
        ("manifest.json".into(), &manifest),
    ];
    write_archive(out, &[layer_dir.as_str()], &files)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", hex_part(digest))
}

fn hex_part(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}

/// The architecture name Go (and so every image config) uses for this machine.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // GzBuilder writes mtime 0 and no file name, so the output depends on the input only.
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Writes a tar of `dirs` (created first) and `files`, with fixed owners and times.
fn write_archive(out: &Path, dirs: &[&str], files: &[(String, &[u8])]) -> Result<()> {
    let mut builder = tar::Builder::new(Vec::new());
    for dir in dirs {
        append_dir(&mut builder, dir, 0o755)?;
    }
    for (path, data) in files {
        append_file(&mut builder, path, 0o644, data)?;
    }
    let bytes = builder.into_inner()?;
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}

/// The image's only layer as an uncompressed tar.
pub fn busybox_layer_tar() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX_PATH).with_context(|| {
        format!("reading {BUSYBOX_PATH}; install Debian's busybox-static package")
    })?;
    let list = std::process::Command::new(BUSYBOX_PATH)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX_PATH} --list"))?;
    if !list.status.success() {
        bail!("{BUSYBOX_PATH} --list failed with {}", list.status);
    }
    let mut applets: Vec<String> = String::from_utf8(list.stdout)
        .context("busybox --list printed non-UTF-8")?
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(String::from)
        .collect();
    applets.sort();
    applets.dedup();

    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
    ] {
        append_dir(&mut b, dir, mode)?;
    }
    append_file(&mut b, "bin/busybox", 0o755, &busybox)?;
    for applet in &applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox")?;
        b.append_data(&mut h, format!("bin/{applet}"), std::io::empty())?;
    }
    append_file(&mut b, "etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n")?;
    append_file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    Ok(b.into_inner()?)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(EPOCH);
    h
}

fn append_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
    Ok(())
}

fn append_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_is_deterministic() {
        let a = busybox_image().unwrap();
        let b = busybox_image().unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.diff_id, sha256_digest(&a.layer_tar));
    }

    #[test]
    fn layer_has_shell_and_users() {
        let tar = busybox_layer_tar().unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["bin/busybox", "bin/sh", "etc/passwd", "etc/group", "tmp/"] {
            assert!(names.iter().any(|n| n == want), "layer lacks {want}");
        }
    }

    #[test]
    fn archives_are_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        build_busybox_oci_archive(&a, "busybox").unwrap();
        build_busybox_oci_archive(&b, "busybox:latest").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        build_busybox_docker_archive(&a, "busybox").unwrap();
        build_busybox_docker_archive(&b, "docker.io/library/busybox:latest").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
}
