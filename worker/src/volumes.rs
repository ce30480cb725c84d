//! The node's local volumes (docker's `local` driver): a named volume is a directory
//! `<data-dir>/volumes/<name>/_data`, made the first time a task mounts it, with its metadata
//! beside it in `meta.json`. It outlives its tasks, like docker's, until `shoal volume rm`.
//! An anonymous volume (a `--mount type=volume` without a source) is named after nothing the
//! user gave, belongs to one task and goes when that task's container is removed, as swarmkit
//! removes a task container's anonymous volumes.
//!
//! Which containers use a volume is on the containers themselves (the [`LABEL_VOLUMES`]
//! label), so a volume in use is found even after a daemon restart.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Container label listing the named and anonymous volumes a container mounts, comma-separated.
pub const LABEL_VOLUMES: &str = "shoal.volumes";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {name}: {what} {path}: {source}; check that the data directory is writable")]
    Io {
        name: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("volume {name}: its metadata {path} is not valid JSON: {reason}")]
    Metadata {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

/// What `volume inspect` shows, and what `meta.json` holds (without the mountpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    /// RFC 3339, as docker's `CreatedAt`.
    pub created_at: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// The task an anonymous volume belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_for: Option<String>,
    /// `<data-dir>/volumes/<name>/_data`: what the containers mount.
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

/// The node's volumes; see the module documentation.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

fn io_err(name: &str, what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError {
    let (name, path) = (name.to_string(), path.to_path_buf());
    move |source| VolumeError::Io {
        name,
        what,
        path,
        source,
    }
}

impl Volumes {
    /// The volumes under `<data_dir>/volumes`.
    pub fn new(data_dir: &Path) -> Self {
        Volumes {
            dir: data_dir.join("volumes"),
        }
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("meta.json")
    }

    /// The volume, made now if it does not exist (with `labels`); `true` when made now.
    pub fn ensure(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
        anonymous_for: Option<&str>,
    ) -> Result<(VolumeInfo, bool), VolumeError> {
        match self.get(name) {
            Ok(v) => return Ok((v, false)),
            Err(VolumeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let data = self.dir.join(name).join("_data");
        std::fs::create_dir_all(&data).map_err(io_err(name, "cannot create", &data))?;
        let info = VolumeInfo {
            name: name.to_string(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels: labels.clone(),
            anonymous_for: anonymous_for.map(str::to_string),
            mountpoint: data,
        };
        let meta = self.meta_path(name);
        let json = serde_json::to_vec_pretty(&info).map_err(|e| VolumeError::Metadata {
            name: name.to_string(),
            path: meta.clone(),
            reason: e.to_string(),
        })?;
        // Written last and whole (rename), so a volume with metadata is a complete one.
        let tmp = meta.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(io_err(name, "cannot write", &tmp))?;
        std::fs::rename(&tmp, &meta).map_err(io_err(name, "cannot write", &meta))?;
        Ok((info, true))
    }

    /// One volume.
    pub fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let meta = self.meta_path(name);
        let bytes = match std::fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io_err(name, "cannot read", &meta)(e)),
        };
        let mut info: VolumeInfo =
            serde_json::from_slice(&bytes).map_err(|e| VolumeError::Metadata {
                name: name.to_string(),
                path: meta,
                reason: e.to_string(),
            })?;
        info.mountpoint = self.dir.join(name).join("_data");
        Ok(info)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("*", "cannot list", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match self.get(&name) {
                Ok(v) => out.push(v),
                // A directory without metadata is a volume being made, or not a volume.
                Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes the volume and its data; whether it is in use is the caller's to check.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let dir = self.dir.join(name);
        // The metadata goes first: a half-removed volume is not listed.
        let meta = self.meta_path(name);
        std::fs::remove_file(&meta).map_err(io_err(name, "cannot remove", &meta))?;
        std::fs::remove_dir_all(&dir).map_err(io_err(name, "cannot remove", &dir))
    }

    /// Removes the anonymous volumes of `task_id`.
    pub fn remove_anonymous_of(&self, task_id: &str) -> Result<(), VolumeError> {
        for v in self.list()? {
            if v.anonymous_for.as_deref() == Some(task_id) {
                self.remove(&v.name)?;
            }
        }
        Ok(())
    }
}

/// The name of a task's anonymous volume for the mount at `index`: unique on the node and
/// tied to the task, so a restarted daemon finds the same one.
pub fn anonymous_name(task_id: &str, index: usize) -> String {
    format!("{task_id}-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_made_once_listed_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vols = Volumes::new(dir.path());
        assert!(vols.list().expect("list").is_empty());
        let labels = HashMap::from([("a".to_string(), "b".to_string())]);
        let (v, made) = vols.ensure("data", &labels, None).expect("ensure");
        assert!(made);
        assert!(v.mountpoint.ends_with("volumes/data/_data"));
        assert!(v.mountpoint.is_dir());
        std::fs::write(v.mountpoint.join("f"), "kept").expect("write");
        let (again, made) = vols.ensure("data", &HashMap::new(), None).expect("ensure");
        assert!(!made);
        assert_eq!(again.labels, labels, "labels are set when made, not later");
        assert_eq!(
            std::fs::read_to_string(again.mountpoint.join("f")).expect("read"),
            "kept"
        );
        vols.ensure(&anonymous_name("task1", 0), &HashMap::new(), Some("task1"))
            .expect("anonymous");
        let names: Vec<String> = vols
            .list()
            .expect("list")
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, vec!["data", "task1-0"]);
        vols.remove_anonymous_of("task1").expect("remove anonymous");
        assert_eq!(vols.list().expect("list").len(), 1);
        vols.remove("data").expect("remove");
        assert!(matches!(vols.get("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(vols.remove("data"), Err(VolumeError::NotFound(_))));
    }
}
