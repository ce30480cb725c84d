//! The secrets and configs the dispatcher sent for this node's tasks (swarmkit's dependency
//! store): held in memory only, replaced by each session message, and turned into a task's
//! files ([`TaskFile`]) when its container is started.

use std::collections::HashMap;
use std::sync::Mutex;

use shoal_proto::validate::secrets::Kind;
use shoal_proto::{Config, Secret, Task};

use crate::executor::TaskFile;

#[derive(Default)]
struct Held {
    secrets: HashMap<String, Secret>,
    configs: HashMap<String, Config>,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Dependencies {
    held: Mutex<Held>,
}

/// Why a task's files cannot be made.
#[derive(Debug, thiserror::Error)]
#[error(
    "{kind} {name} ({id}) was not sent to this node: the manager no longer has it, or has not \
     sent it yet"
)]
pub(super) struct Missing {
    kind: Kind,
    name: String,
    id: String,
}

fn id_number(value: &str) -> u32 {
    // Checked by the manager (`validate::secrets`); a value it let through is a number.
    value.parse().unwrap_or(0)
}

impl Dependencies {
    /// What the last session message carried replaces what was held.
    pub(super) fn set(&self, secrets: Vec<Secret>, configs: Vec<Config>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.secrets = secrets.into_iter().map(|s| (s.id.clone(), s)).collect();
        held.configs = configs.into_iter().map(|c| (c.id.clone(), c)).collect();
    }

    /// The files of `task`'s `--secret`s and `--config`s, in that order.
    pub(super) fn files_of(&self, task: &Task) -> Result<Vec<TaskFile>, Missing> {
        let Some(c) = task.spec.as_ref() else {
            return Ok(Vec::new());
        };
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let secrets = c.secrets.iter().map(|r| {
            let data = held.secrets.get(&r.secret_id).and_then(|s| s.spec.as_ref());
            let target = Target {
                kind: Kind::Secret,
                name: &r.secret_name,
                id: &r.secret_id,
                target: &r.target,
                uid: &r.uid,
                gid: &r.gid,
                mode: r.mode,
            };
            target.file(data.map(|s| &s.data))
        });
        let configs = c.configs.iter().map(|r| {
            let data = held.configs.get(&r.config_id).and_then(|s| s.spec.as_ref());
            let target = Target {
                kind: Kind::Config,
                name: &r.config_name,
                id: &r.config_id,
                target: &r.target,
                uid: &r.uid,
                gid: &r.gid,
                mode: r.mode,
            };
            target.file(data.map(|s| &s.data))
        });
        secrets.chain(configs).collect()
    }
}

/// One reference, whichever kind.
struct Target<'a> {
    kind: Kind,
    name: &'a str,
    id: &'a str,
    target: &'a str,
    uid: &'a str,
    gid: &'a str,
    mode: u32,
}

impl Target<'_> {
    /// The file, given the data this node holds for it.
    fn file(&self, data: Option<&Vec<u8>>) -> Result<TaskFile, Missing> {
        let data = data.ok_or_else(|| Missing {
            kind: self.kind,
            name: self.name.to_string(),
            id: self.id.to_string(),
        })?;
        Ok(TaskFile {
            path: self.kind.path(self.target),
            uid: id_number(self.uid),
            gid: id_number(self.gid),
            mode: self.mode,
            data: data.clone(),
        })
    }
}
