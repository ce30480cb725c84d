//! Image handling against a real containerd (and, for pulls, a real registry): loading OCI and
//! `docker save` archives, listing, unpacking into snapshots, pulling, and the errors users
//! see for bad archives and unknown images.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use containerd_client::services::v1::snapshots::{
    RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{
    CreateRequest, DeleteImageRequest, DeleteRequest, InfoRequest,
};
use serde_json::json;
use shoal_tests::containerd::ContainerdHost;
use shoal_tests::image::{
    build_busybox_docker_archive, build_busybox_oci_archive, busybox_image, sha256_digest,
    TestImage,
};
use shoal_worker::containerd::Containerd;
use shoal_worker::image::{
    ensure_image, list_images, load_archive, ImageError, NotFoundReason, SNAPSHOTTER,
};

const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// 2024-01-01T00:00:00Z, the creation time the test image claims.
const TEST_IMAGE_CREATED_MS: i64 = 1_704_067_200_000;

struct Env {
    // Field order is drop order: the connection goes before containerd.
    cd: Containerd,
    host: ContainerdHost,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let host = ContainerdHost::start().expect("start a private containerd");
    let cd = Containerd::connect(host.socket(), "shoal")
        .await
        .expect("connect to the private containerd");
    Env {
        cd,
        host,
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn snapshot_exists(&self, key: &str) -> bool {
        self.cd
            .snapshots()
            .stat(self.cd.request(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.to_string(),
            }))
            .await
            .is_ok()
    }

    async fn content_labels(
        &self,
        digest: &str,
    ) -> Option<std::collections::HashMap<String, String>> {
        self.cd
            .content()
            .info(self.cd.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
            .ok()
            .and_then(|r| r.into_inner().info)
            .map(|i| i.labels)
    }

    /// Runs containerd's garbage collector to completion (deleting a lease with `sync`
    /// waits for a collection), so a test can see what GC keeps.
    async fn collect_garbage(&self) {
        let id = format!("gc-trigger-{}", std::process::id());
        self.cd
            .leases()
            .create(self.cd.request(CreateRequest {
                id: id.clone(),
                labels: Default::default(),
            }))
            .await
            .expect("create lease");
        self.cd
            .leases()
            .delete(self.cd.request(DeleteRequest { id, sync: true }))
            .await
            .expect("delete lease synchronously");
    }

    /// Checks that `name` is listed, resolved and unpacked as the busybox test image, and that
    /// garbage collection keeps all of it.
    async fn assert_busybox_present(&self, name: &str, manifest_digest: &str, img: &TestImage) {
        self.collect_garbage().await;

        let images = list_images(&self.cd).await.expect("list images");
        let info = images
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} not listed in {images:?}"));
        assert_eq!(info.digest, manifest_digest);
        assert_eq!(info.created_at_ms, TEST_IMAGE_CREATED_MS);
        assert!(info.size > 500_000, "implausible size {}", info.size);

        // The single layer's chain ID is its diff ID.
        assert!(
            self.snapshot_exists(&img.diff_id).await,
            "snapshot {} missing after GC; containerd log:\n{}",
            img.diff_id,
            self.host.log_tail(20)
        );
        let config_labels = self
            .content_labels(&img.config_digest)
            .await
            .expect("config blob kept by GC");
        assert_eq!(
            config_labels.get("containerd.io/gc.ref.snapshot.overlayfs"),
            Some(&img.diff_id)
        );
        let manifest_labels = self
            .content_labels(manifest_digest)
            .await
            .expect("manifest blob kept by GC");
        assert_eq!(
            manifest_labels.get("containerd.io/gc.ref.content.config"),
            Some(&img.config_digest)
        );

        let resolved = ensure_image(&self.cd, name).await.expect("resolve image");
        assert_eq!(resolved.name, name);
        assert_eq!(resolved.digest, manifest_digest);
        assert_eq!(resolved.top_chain_id, img.diff_id);
        assert_eq!(resolved.config_digest, img.config_digest);
        assert_eq!(resolved.cmd, vec!["sh"]);
        assert!(resolved.entrypoint.is_empty());
        assert_eq!(
            resolved.env,
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        );
        assert_eq!(resolved.working_dir, "");
        assert_eq!(resolved.user, "");
        assert_eq!(resolved.stop_signal, None);
    }
}

#[tokio::test]
async fn loads_oci_archive() {
    let env = env().await;
    let img = busybox_image().unwrap();
    let archive = env.path("busybox-oci.tar");
    build_busybox_oci_archive(&archive, "busybox:latest").unwrap();

    let names = load_archive(&env.cd, &archive)
        .await
        .expect("load OCI archive");
    assert_eq!(names, vec![BUSYBOX]);
    env.assert_busybox_present(BUSYBOX, &img.manifest_digest, &img)
        .await;
    let layer_labels = env.content_labels(&img.layer_digest).await.unwrap();
    assert_eq!(
        layer_labels.get("containerd.io/uncompressed"),
        Some(&img.diff_id)
    );

    // Loading again changes nothing and still succeeds; a short name resolves too.
    let again = load_archive(&env.cd, &archive).await.expect("reload");
    assert_eq!(again, vec![BUSYBOX]);
    assert_eq!(list_images(&env.cd).await.unwrap().len(), 1);
    let short = ensure_image(&env.cd, "busybox").await.unwrap();
    assert_eq!(short.digest, img.manifest_digest);
    let by_digest = ensure_image(&env.cd, &format!("busybox@{}", img.manifest_digest))
        .await
        .expect("a digest reference finds the image loaded by tag");
    assert_eq!(by_digest.top_chain_id, img.diff_id);

    // The snapshot holds the layer's files.
    let mounts = env
        .cd
        .snapshots()
        .view(env.cd.request(ViewSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: "inspect-rootfs".to_string(),
            parent: short.top_chain_id.clone(),
            labels: Default::default(),
        }))
        .await
        .expect("view the image's snapshot")
        .into_inner()
        .mounts;
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].r#type, "bind", "{mounts:?}");
    let rootfs = Path::new(&mounts[0].source);
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    // A view taken without a lease is fair game for containerd's GC, which may already have
    // collected it: gone either way is what matters here.
    match env
        .cd
        .snapshots()
        .remove(env.cd.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: "inspect-rootfs".to_string(),
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => panic!("removing the inspection view failed: {s}"),
    }

    // Only the image record keeps it all: without it, GC takes blobs and snapshots.
    env.cd
        .images()
        .delete(env.cd.request(DeleteImageRequest {
            name: BUSYBOX.to_string(),
            sync: true,
            target: None,
        }))
        .await
        .unwrap();
    env.collect_garbage().await;
    assert!(!env.snapshot_exists(&img.diff_id).await);
    for digest in [&img.manifest_digest, &img.config_digest, &img.layer_digest] {
        assert!(env.content_labels(digest).await.is_none(), "{digest} kept");
    }
}

#[tokio::test]
async fn loads_docker_save_archive_plain_and_gzipped() {
    let env = env().await;
    let img = busybox_image().unwrap();
    let archive = env.path("busybox-docker.tar");
    build_busybox_docker_archive(&archive, "busybox:latest").unwrap();

    let names = load_archive(&env.cd, &archive)
        .await
        .expect("load docker-save archive");
    assert_eq!(names, vec![BUSYBOX]);
    // docker save has no manifest; the one written for it references the uncompressed layer.
    let listed = list_images(&env.cd).await.unwrap();
    let digest = listed[0].digest.clone();
    assert_ne!(digest, img.manifest_digest);
    env.assert_busybox_present(BUSYBOX, &digest, &img).await;
    let layer_labels = env.content_labels(&img.diff_id).await.unwrap();
    assert_eq!(
        layer_labels.get("containerd.io/uncompressed"),
        Some(&img.diff_id)
    );

    // The same layer under another name, gzip-compressed as `docker save | gzip` makes it.
    let named = env.path("tools.tar");
    build_busybox_docker_archive(&named, "registry.example.com/tools/busybox:gz").unwrap();
    let gz = env.path("tools.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&named).unwrap()).unwrap();
    enc.finish().unwrap();
    let names = load_archive(&env.cd, &gz)
        .await
        .expect("load gzipped archive");
    assert_eq!(names, vec!["registry.example.com/tools/busybox:gz"]);
    let resolved = ensure_image(&env.cd, "registry.example.com/tools/busybox:gz")
        .await
        .unwrap();
    assert_eq!(resolved.top_chain_id, img.diff_id);
    assert_eq!(list_images(&env.cd).await.unwrap().len(), 2);
}

/// An OCI layout whose index.json points at a multi-platform index: the linux/amd64 manifest
/// is unpacked, the absent arm64 one is ignored.
#[tokio::test]
async fn loads_multi_platform_index() {
    let env = env().await;
    let img = busybox_image().unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256_digest(b"an arm64 manifest that is not in the archive"),
                "size": 44,
                "platform": {"architecture": "arm64", "os": "linux"},
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": img.manifest_digest,
                "size": img.manifest.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
        ],
    }))
    .unwrap();
    let index_digest = sha256_digest(&index);
    let top = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "localhost:5000/multi:1"},
        }],
    }))
    .unwrap();
    let archive = env.path("multi.tar");
    write_tar(
        &archive,
        &[
            ("index.json".into(), top),
            (blob(&index_digest), index.clone()),
            (blob(&img.manifest_digest), img.manifest.clone()),
            (blob(&img.config_digest), img.config.clone()),
            (blob(&img.layer_digest), img.layer_gzip.clone()),
        ],
    );

    let names = load_archive(&env.cd, &archive)
        .await
        .expect("load index archive");
    assert_eq!(names, vec!["localhost:5000/multi:1"]);
    let resolved = ensure_image(&env.cd, "localhost:5000/multi:1")
        .await
        .unwrap();
    assert_eq!(resolved.digest, index_digest);
    assert_eq!(resolved.platform_manifest_digest, img.manifest_digest);
    assert_eq!(resolved.top_chain_id, img.diff_id);
    env.collect_garbage().await;
    let labels = env.content_labels(&index_digest).await.expect("index kept");
    assert_eq!(
        labels.get("containerd.io/gc.ref.content.m.1"),
        Some(&img.manifest_digest)
    );
    assert!(env.snapshot_exists(&img.diff_id).await);
}

#[tokio::test]
async fn malformed_archives_are_rejected_clearly() {
    let env = env().await;
    let img = busybox_image().unwrap();

    let garbage = env.path("garbage.tar");
    std::fs::write(&garbage, vec![0x42u8; 4096]).unwrap();
    let err = load_archive(&env.cd, &garbage).await.unwrap_err();
    assert!(matches!(err, ImageError::Archive { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("garbage.tar"), "{msg}");
    assert!(msg.contains("Expected an OCI image layout tar"), "{msg}");

    let unrelated = env.path("unrelated.tar");
    write_tar(&unrelated, &[("hello.txt".into(), b"hi".to_vec())]);
    let msg = load_archive(&env.cd, &unrelated)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("neither index.json nor manifest.json"),
        "{msg}"
    );

    let missing = env.path("missing.tar");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
            "annotations": {"io.containerd.image.name": BUSYBOX},
        }],
    }))
    .unwrap();
    write_tar(
        &missing,
        &[
            ("index.json".into(), index.clone()),
            (blob(&img.manifest_digest), img.manifest.clone()),
        ],
    );
    let err = load_archive(&env.cd, &missing).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::Archive { .. }), "{err:?}");
    assert!(msg.contains(&img.config_digest), "{msg}");

    let corrupt = env.path("corrupt.tar");
    write_tar(
        &corrupt,
        &[
            ("index.json".into(), index),
            (blob(&img.manifest_digest), b"{\"not\":\"it\"}".to_vec()),
        ],
    );
    let msg = load_archive(&env.cd, &corrupt)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("corrupt"), "{msg}");

    let nothing = env.path("does-not-exist.tar");
    let msg = load_archive(&env.cd, &nothing)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot open"), "{msg}");

    assert!(list_images(&env.cd).await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_images_are_not_found() {
    let env = env().await;

    // Nothing listens on port 1: the registry is unreachable, and the error says which.
    let err = ensure_image(&env.cd, "127.0.0.1:1/nosuch/image:1")
        .await
        .unwrap_err();
    match &err {
        ImageError::NotFound {
            registry,
            reason: NotFoundReason::RegistryUnreachable(_),
            ..
        } => assert_eq!(registry, "127.0.0.1:1"),
        other => panic!("expected NotFound/unreachable, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(msg.contains("shoal image load"), "{msg}");

    // Docker Hub cannot be reached from the test machine, or has no such image: either way
    // the image is not found, and the error names the image and the registry.
    let err = ensure_image(&env.cd, "shoal-test-no-such-image-4f2a")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("docker.io/library/shoal-test-no-such-image-4f2a:latest"),
        "{msg}"
    );
    assert!(msg.contains("registry docker.io"), "{msg}");

    let err = ensure_image(&env.cd, "Busybox").await.unwrap_err();
    assert!(err.to_string().contains("must be lowercase"), "{err}");
}

/// Debian's docker-registry on a free loopback port, storing into a private directory;
/// killed on drop.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let registry = Registry { child, addr };
        shoal_tests::registry::wait_listening(&registry.addr, dir);
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes the OCI archive to the (plain HTTP) registry as `name` with skopeo.
fn push(archive: &Path, name: &str, extra: &[&str]) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{name}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pulls_from_a_registry() {
    let env = env().await;
    let img = busybox_image().unwrap();
    let registry = Registry::start(env.dir.path());
    let archive = env.path("busybox-oci.tar");
    build_busybox_oci_archive(&archive, "busybox:latest").unwrap();
    let name = format!("{}/test/busybox:1", registry.addr);
    push(&archive, &name, &[]);

    let resolved = ensure_image(&env.cd, &name)
        .await
        .expect("pull from registry");
    assert_eq!(resolved.name, name);
    assert_eq!(resolved.top_chain_id, img.diff_id);
    assert_eq!(resolved.cmd, vec!["sh"]);
    // skopeo pushes the OCI manifest unchanged.
    assert_eq!(resolved.digest, img.manifest_digest);
    env.assert_busybox_present(&name, &img.manifest_digest, &img)
        .await;

    // Now it is local: resolving again works with the registry gone.
    drop(registry);
    let again = ensure_image(&env.cd, &name).await.expect("resolve locally");
    assert_eq!(again.digest, resolved.digest);
    assert_eq!(list_images(&env.cd).await.unwrap().len(), 1);
}

#[tokio::test]
async fn pulls_zstd_compressed_layers() {
    let env = env().await;
    let img = busybox_image().unwrap();
    let registry = Registry::start(env.dir.path());
    let archive = env.path("busybox-oci.tar");
    build_busybox_oci_archive(&archive, "busybox:latest").unwrap();
    let name = format!("{}/test/busybox-zstd:1", registry.addr);
    push(
        &archive,
        &name,
        &["--dest-compress", "--dest-compress-format", "zstd"],
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .expect("run skopeo inspect");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("manifest JSON");
    assert_eq!(
        manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
        "{manifest}"
    );

    let resolved = ensure_image(&env.cd, &name)
        .await
        .expect("pull zstd layers");
    // The same files, whatever the compression: the same uncompressed layer.
    assert_eq!(resolved.top_chain_id, img.diff_id);
    assert_eq!(resolved.cmd, vec!["sh"]);
}

#[tokio::test]
async fn registry_without_the_image_says_not_found() {
    let env = env().await;
    let registry = Registry::start(env.dir.path());
    let name = format!("{}/test/nosuch:1", registry.addr);
    let err = ensure_image(&env.cd, &name).await.unwrap_err();
    match &err {
        ImageError::NotFound {
            reason: NotFoundReason::NotInRegistry,
            registry: r,
            ..
        } => assert_eq!(*r, registry.addr),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "not found locally nor in registry {}",
            registry.addr
        )),
        "{msg}"
    );
}

fn blob(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}
