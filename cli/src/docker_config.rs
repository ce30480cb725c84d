//! The user's docker configuration (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), where `shoal login` keeps registry credentials exactly as
//! `docker login` does (`auths.SERVER.auth` = base64 of `user:password`), so either tool's login
//! serves both. Other keys of the file are left as they are.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{Map, Value};
use shoal_proto::RegistryAuth;
use shoal_worker::image::registry::{registry_host, DOCKER_HUB_SERVER};

/// Where the config file is.
pub fn path() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither DOCKER_CONFIG nor HOME is set: cannot find config.json"))?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

fn load() -> Result<(PathBuf, Map<String, Value>)> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((path, Map::new())),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok((path, map)),
        _ => bail!(
            "{} is not a JSON object; fix or remove it and log in again",
            path.display()
        ),
    }
}

/// Written whole to a temporary file readable by the user only, then renamed over the old one.
fn save(path: &std::path::Path, config: &Map<String, Value>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&Value::Object(config.clone()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// The key docker uses for a server: Docker Hub's index URL, else `host[:port]`.
pub fn server_key(server: Option<&str>) -> String {
    match server.map(registry_host) {
        None => DOCKER_HUB_SERVER.to_string(),
        Some(host) if host == "docker.io" => DOCKER_HUB_SERVER.to_string(),
        Some(host) => host,
    }
}

/// Stores the credentials of a successful login.
pub fn store(auth: &RegistryAuth) -> Result<PathBuf> {
    let (path, mut config) = load()?;
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", auth.username, auth.password));
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(auths) = auths.as_object_mut() else {
        bail!(
            "\"auths\" in {} is not an object; fix it and log in again",
            path.display()
        );
    };
    auths.insert(auth.server.clone(), serde_json::json!({ "auth": token }));
    save(&path, &config)?;
    Ok(path)
}

/// Forgets the credentials for `server`; false when there were none.
pub fn remove(server: &str) -> Result<bool> {
    let (path, mut config) = load()?;
    let removed = config
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .is_some_and(|auths| auths.remove(server).is_some());
    if removed {
        save(&path, &config)?;
    }
    Ok(removed)
}

/// The stored credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub).
pub fn lookup(registry: &str) -> Result<Option<RegistryAuth>> {
    let (path, config) = load()?;
    let Some(auths) = config.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    for (server, entry) in auths {
        if registry_host(server) != registry {
            continue;
        }
        let Some(encoded) = entry.get("auth").and_then(Value::as_str) else {
            continue;
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                anyhow!(
                    "the credentials for {server} in {} are not valid base64 of user:password; \
                     log in again",
                    path.display()
                )
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            anyhow!(
                "the credentials for {server} in {} have no ':'",
                path.display()
            )
        })?;
        return Ok(Some(RegistryAuth {
            server: server.clone(),
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys_are_dockers() {
        assert_eq!(server_key(None), DOCKER_HUB_SERVER);
        assert_eq!(server_key(Some("docker.io")), DOCKER_HUB_SERVER);
        assert_eq!(
            server_key(Some("https://198.18.0.1:5000/")),
            "198.18.0.1:5000"
        );
    }
}
