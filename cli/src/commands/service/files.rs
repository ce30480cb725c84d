//! `--secret`/`--config` on `service create`, and `--secret-add/--secret-rm/--config-add/
//! --config-rm` on `service update`, as docker's (values parsed by
//! `shoal_proto::validate::secrets`, so the daemon refuses the same values with the same
//! words). The manager resolves the names to IDs and refuses unknown ones.
//!
//! Unlike docker's, an added reference replaces one already at the same target, so
//! `--secret-add source=db_pass_v2,target=db_pass` alone rotates a secret; `--secret-rm
//! db_pass` with it works as in docker.

use anyhow::{bail, Result};
use clap::Args;
use shoal_proto::validate::secrets::{parse_config, parse_secret, Kind};
use shoal_proto::{ConfigReference, ContainerSpec, SecretReference};

use crate::output::Pretty;

fn secret_flag(s: &str) -> Result<SecretReference, String> {
    parse_secret(s).map_err(|e| e.to_string())
}

fn config_flag(s: &str) -> Result<ConfigReference, String> {
    parse_config(s).map_err(|e| e.to_string())
}

/// `service create`'s flags.
#[derive(Debug, Args, Default)]
pub struct FileFlags {
    /// Specify secrets to expose to the service: NAME, or
    /// source=NAME,target=FILE,uid=0,gid=0,mode=0444 (at /run/secrets/FILE)
    #[arg(long = "secret", value_name = "SECRET", value_parser = secret_flag)]
    pub secret: Vec<SecretReference>,
    /// Specify configurations to expose to the service: NAME, or
    /// source=NAME,target=PATH,uid=0,gid=0,mode=0444 (at /NAME by default)
    #[arg(long = "config", value_name = "CONFIG", value_parser = config_flag)]
    pub config: Vec<ConfigReference>,
}

impl FileFlags {
    pub fn apply(&self, c: &mut ContainerSpec) {
        c.secrets.clone_from(&self.secret);
        c.configs.clone_from(&self.config);
    }
}

/// `service update`'s flags.
#[derive(Debug, Args, Default)]
pub struct FileUpdateFlags {
    /// Add or replace a secret (one already at the same target is replaced)
    #[arg(long = "secret-add", value_name = "SECRET", value_parser = secret_flag)]
    pub secret_add: Vec<SecretReference>,
    /// Remove a secret by its name
    #[arg(long = "secret-rm", value_name = "NAME")]
    pub secret_rm: Vec<String>,
    /// Add or replace a config (one already at the same target is replaced)
    #[arg(long = "config-add", value_name = "CONFIG", value_parser = config_flag)]
    pub config_add: Vec<ConfigReference>,
    /// Remove a config by its name
    #[arg(long = "config-rm", value_name = "NAME")]
    pub config_rm: Vec<String>,
}

/// What an update does to one kind's list of references.
struct Refs<'a, R> {
    kind: Kind,
    list: &'a mut Vec<R>,
    name: fn(&R) -> &str,
    target: fn(&R) -> &str,
}

impl<R: Clone> Refs<'_, R> {
    /// Every `rm` first (each must name a reference), then each `add`, replacing a reference
    /// whose file is at the same path.
    fn update(self, rm: &[String], add: &[R]) -> Result<()> {
        let Refs {
            kind,
            list,
            name,
            target,
        } = self;
        for wanted in rm {
            let before = list.len();
            list.retain(|r| name(r) != wanted);
            if list.len() == before {
                let names: Vec<&str> = list.iter().map(name).collect();
                bail!(
                    "--{kind}-rm {wanted}: the service uses no {kind} of that name (its {kind}s: \
                     {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
        }
        for r in add {
            let path = kind.path(target(r));
            list.retain(|old| kind.path(target(old)) != path);
            list.push(r.clone());
        }
        Ok(())
    }
}

impl FileUpdateFlags {
    pub fn apply(&self, c: &mut ContainerSpec) -> Result<()> {
        Refs {
            kind: Kind::Secret,
            list: &mut c.secrets,
            name: |r: &SecretReference| r.secret_name.as_str(),
            target: |r: &SecretReference| r.target.as_str(),
        }
        .update(&self.secret_rm, &self.secret_add)?;
        Refs {
            kind: Kind::Config,
            list: &mut c.configs,
            name: |r: &ConfigReference| r.config_name.as_str(),
            target: |r: &ConfigReference| r.target.as_str(),
        }
        .update(&self.config_rm, &self.config_add)
    }
}

/// `service inspect --pretty`'s `Secrets:` and `Configs:` blocks, as docker's: each file's
/// target and the name of its source.
pub fn pretty(p: &mut Pretty, c: &ContainerSpec) {
    let secrets = c.secrets.iter().map(|r| (&r.target, &r.secret_name));
    let configs = c.configs.iter().map(|r| (&r.target, &r.config_name));
    for (section, refs) in [
        ("Secrets", secrets.collect::<Vec<_>>()),
        ("Configs", configs.collect()),
    ] {
        if refs.is_empty() {
            continue;
        }
        p.section(1, section);
        for (target, source) in refs {
            p.field(2, "Target", target.clone());
            p.field(3, "Source", source.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretReference {
        parse_secret(s).expect("valid")
    }

    #[test]
    fn rotation_replaces_the_reference_at_the_same_target() {
        let mut c = ContainerSpec {
            secrets: vec![secret("db_pass"), secret("api_key")],
            ..Default::default()
        };
        // Docker's way: rm the old, add the new at the old target.
        let flags = FileUpdateFlags {
            secret_rm: vec!["db_pass".into()],
            secret_add: vec![secret("source=db_pass_v2,target=db_pass")],
            ..Default::default()
        };
        flags.apply(&mut c).expect("update");
        let names: Vec<&str> = c.secrets.iter().map(|r| r.secret_name.as_str()).collect();
        assert_eq!(names, ["api_key", "db_pass_v2"]);
        // Ours too: add alone replaces what is at the target.
        let flags = FileUpdateFlags {
            secret_add: vec![secret("source=db_pass_v3,target=/run/secrets/db_pass")],
            ..Default::default()
        };
        flags.apply(&mut c).expect("update");
        let names: Vec<&str> = c.secrets.iter().map(|r| r.secret_name.as_str()).collect();
        assert_eq!(names, ["api_key", "db_pass_v3"]);
        let flags = FileUpdateFlags {
            secret_rm: vec!["nope".into()],
            ..Default::default()
        };
        let err = flags.apply(&mut c).unwrap_err().to_string();
        assert!(err.contains("uses no secret of that name"), "{err}");

        let mut p = Pretty::default();
        pretty(&mut p, &c);
        let text = p.render();
        assert!(text.starts_with(" Secrets:\n  Target:"), "{text}");
        assert!(text.contains("   Source: db_pass_v3"), "{text}");
    }
}
