//! The node's identity and swarm membership, persisted in `<data-dir>/node.json` so that a
//! restarted daemon rejoins its swarm without being told.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    pub manager: bool,
    pub listen_addr: String,
    pub advertise_addr: String,
    /// This manager's Raft ID (0 on a worker).
    #[serde(default)]
    pub raft_id: u64,
    /// Managers' addresses last heard of: where the agent looks for the leader.
    #[serde(default)]
    pub managers: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// Assigned when the node first enters a swarm; kept across `swarm leave` so that logs
    /// and metrics stay attributable.
    pub node_id: String,
    pub swarm: Option<Membership>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

impl Identity {
    pub fn load(data_dir: &Path) -> anyhow::Result<Identity> {
        let p = path(data_dir);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "refusing to start: {} is corrupt; restore it from a backup, or move the \
                     data dir {} away to start afresh",
                    p.display(),
                    data_dir.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Identity::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let p = path(data_dir);
        let tmp = p.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), Identity::default());
        let id = Identity {
            node_id: "n1".into(),
            swarm: Some(Membership {
                manager: true,
                listen_addr: "0.0.0.0:2377".into(),
                advertise_addr: "198.18.0.1:2377".into(),
                raft_id: 7,
                managers: vec!["198.18.0.1:2377".into()],
            }),
        };
        id.save(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), id);
        std::fs::write(dir.path().join("node.json"), b"{garbage").unwrap();
        let err = format!("{:#}", Identity::load(dir.path()).unwrap_err());
        assert!(err.contains("node.json is corrupt"), "{err}");
    }
}
