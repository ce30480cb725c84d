//! The OCI and Docker image documents Shoal reads (index, manifest, config), their media
//! types, platform selection and the chain IDs that name unpacked snapshots.
//!
//! Only the fields Shoal uses are parsed; blobs are always stored byte for byte as received,
//! since their digests are their names.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Manifest media types a registry is asked for, in order of preference.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// The platform Shoal runs containers for.
pub const PLATFORM_OS: &str = "linux";
/// The node's own architecture in OCI's words (Go's GOARCH), the manifest an index is
/// resolved to: `amd64` on x86-64, `arm64` on AArch64 …
pub fn platform_arch() -> &'static str {
    oci_arch(std::env::consts::ARCH)
}

/// Rust's name for an architecture as OCI (Go) names it.
fn oci_arch(rust_arch: &'static str) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Index, manifest and config documents larger than this are refused: real ones are a few KiB,
/// and they are held in memory.
pub const MAX_DOCUMENT: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// Which kind of document a descriptor points at, from its media type, or when that is
/// missing or generic (OCI allows omitting it) from the document's shape.
pub fn kind_of(media_type: &str, body: Option<&[u8]>) -> Option<Kind> {
    match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => return Some(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => return Some(Kind::Manifest),
        _ => {}
    }
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let shape: Shape = serde_json::from_slice(body?).ok()?;
    match shape.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => Some(Kind::Index),
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Some(Kind::Manifest),
        _ if shape.manifests.is_some() => Some(Kind::Index),
        _ if shape.layers.is_some() => Some(Kind::Manifest),
        _ => None,
    }
}

/// The media type to record for a document of `kind` that did not say its own.
pub fn media_type_for(kind: &Kind, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
    }
    if let Ok(Typed {
        media_type: Some(mt),
    }) = serde_json::from_slice(body)
    {
        if !mt.is_empty() {
            return mt;
        }
    }
    match kind {
        Kind::Index => OCI_INDEX.to_string(),
        Kind::Manifest => OCI_MANIFEST.to_string(),
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    pub fn to_containerd(&self) -> containerd_client::types::Descriptor {
        containerd_client::types::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// The linux/amd64 manifest, as containerd's default platform matcher picks it: the first
    /// entry for that platform, or the only entry when it names no platform at all.
    pub fn select_platform(&self) -> Option<&Descriptor> {
        let matching = self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == platform_arch())
        });
        matching.or_else(|| match self.manifests.as_slice() {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
    }

    /// The platforms the index offers, for error messages.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The image configuration (OCI and Docker share this shape).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// The image's `HEALTHCHECK` (docker writes it in docker-save and OCI configs alike).
    #[serde(default)]
    pub healthcheck: Option<ImageHealthcheck>,
}

/// Docker's `config.Healthcheck`: durations in nanoseconds, 0 (or absent) for the default.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageHealthcheck {
    #[serde(default)]
    pub test: Option<Vec<String>>,
    #[serde(default)]
    pub interval: Option<i64>,
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub start_period: Option<i64>,
    #[serde(default)]
    pub retries: Option<i64>,
}

impl ImageHealthcheck {
    /// As the spec holds it: milliseconds, a negative value (which docker never writes) as 0.
    pub fn to_config(&self) -> shoal_proto::HealthConfig {
        let ms = |ns: Option<i64>| u64::try_from(ns.unwrap_or(0)).unwrap_or(0) / 1_000_000;
        shoal_proto::HealthConfig {
            test: self.test.clone().unwrap_or_default(),
            interval_ms: ms(self.interval),
            timeout_ms: ms(self.timeout),
            retries: u64::try_from(self.retries.unwrap_or(0)).unwrap_or(0),
            start_period_ms: ms(self.start_period),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Chain IDs for a stack of layers: the first is its diff ID, each next one is the digest of
/// "<previous chain ID> <diff ID>". A chain ID names the snapshot holding all layers up to it.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Whether `digest` is a well-formed `sha256:` digest (the only algorithm Shoal stores).
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The layer media type for a blob whose first bytes are `head` (used for `docker save`
/// layers, which carry no media type).
pub fn layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        OCI_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        OCI_LAYER_ZSTD
    } else {
        OCI_LAYER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256_digest(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn an_images_healthcheck_is_read_in_milliseconds() {
        // As `docker build` writes `HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD …`.
        let config: ImageConfig = serde_json::from_str(
            r#"{"config": {"Cmd": ["sh"], "Healthcheck": {
                "Test": ["CMD-SHELL", "wget -q -O /dev/null http://localhost/"],
                "Interval": 5000000000, "Timeout": 3000000000, "Retries": 2}},
              "rootfs": {"type": "layers", "diff_ids": []}}"#,
        )
        .unwrap();
        let check = config.config.unwrap().healthcheck.unwrap().to_config();
        assert_eq!(
            check,
            shoal_proto::HealthConfig {
                test: vec![
                    "CMD-SHELL".into(),
                    "wget -q -O /dev/null http://localhost/".into()
                ],
                interval_ms: 5_000,
                timeout_ms: 3_000,
                retries: 2,
                start_period_ms: 0,
            }
        );
        let none: ImageConfig =
            serde_json::from_str(r#"{"config": {}, "rootfs": {"type": "layers"}}"#).unwrap();
        assert!(none.config.unwrap().healthcheck.is_none());
    }

    #[test]
    fn kinds_are_detected_from_type_or_shape() {
        assert_eq!(kind_of(OCI_INDEX, None), Some(Kind::Index));
        assert_eq!(kind_of(DOCKER_MANIFEST, None), Some(Kind::Manifest));
        assert_eq!(
            kind_of("", Some(br#"{"schemaVersion":2,"manifests":[]}"#)),
            Some(Kind::Index)
        );
        assert_eq!(
            kind_of("", Some(br#"{"config":{},"layers":[]}"#)),
            Some(Kind::Manifest)
        );
        assert_eq!(kind_of("", Some(b"{}")), None);
        assert_eq!(kind_of("text/plain", Some(b"not json")), None);
    }

    #[test]
    fn platform_selection() {
        let index: Index = serde_json::from_str(
            r#"{"manifests":[
              {"mediaType":"x","digest":"sha256:1","size":1,"platform":{"os":"linux","architecture":"arm64"}},
              {"mediaType":"x","digest":"sha256:2","size":1,"platform":{"os":"linux","architecture":"amd64"}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(index.select_platform().unwrap().digest, "sha256:2");
        let only: Index =
            serde_json::from_str(r#"{"manifests":[{"digest":"sha256:3","size":1}]}"#).unwrap();
        assert_eq!(only.select_platform().unwrap().digest, "sha256:3");
        let arm: Index = serde_json::from_str(
            r#"{"manifests":[{"digest":"sha256:1","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#,
        )
        .unwrap();
        assert!(arm.select_platform().is_none());
        assert_eq!(arm.platforms(), vec!["linux/arm64/v8"]);
    }

    #[test]
    fn layer_compression_is_sniffed() {
        assert_eq!(layer_media_type(&[0x1f, 0x8b, 8]), OCI_LAYER_GZIP);
        assert_eq!(layer_media_type(&[0x28, 0xb5, 0x2f, 0xfd]), OCI_LAYER_ZSTD);
        assert_eq!(layer_media_type(b"bin/"), OCI_LAYER);
    }

    #[test]
    fn the_nodes_architecture_in_ocis_words() {
        assert_eq!(oci_arch("x86_64"), "amd64");
        assert_eq!(oci_arch("aarch64"), "arm64");
        assert_eq!(oci_arch("s390x"), "s390x");
        assert_eq!(oci_arch("riscv64"), "riscv64");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(platform_arch(), "amd64");
    }
}
