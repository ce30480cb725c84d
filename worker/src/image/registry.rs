//! Talking to private registries as docker does: credentials from `--with-registry-auth` (or
//! checked by `shoal login`), and TLS trust from docker's certificate directory
//! (`/etc/docker/certs.d/HOST:PORT/ca.crt`, `shoal daemon --registry-certs-dir`).
//!
//! A registry is spoken to over HTTPS unless it is on loopback (docker's default insecure
//! registries) and has no CA configured: a CA for it means the operator set it up with TLS.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientProtocol};

use super::error_chain;
use shoal_proto::RegistryAuth;

/// Whether docker would talk plain HTTP to `registry` (`host[:port]`) without configuration:
/// `localhost` and loopback addresses.
pub fn is_insecure_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Docker's certificate directory.
pub const DEFAULT_CERTS_DIR: &str = "/etc/docker/certs.d";
/// How `docker login` names Docker Hub in `config.json`.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";
/// How long a login check may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("login to {registry} failed: unauthorized: incorrect username or password")]
    Unauthorized { registry: String },
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} answered {status} to a login at {url}")]
    Unexpected {
        registry: String,
        status: u16,
        url: String,
    },
    #[error(
        "registry {registry} answered {status} to the token from its token server {realm}; \
         check the registry's token configuration (issuer, service, trusted certificate)"
    )]
    TokenRefused {
        registry: String,
        status: u16,
        realm: String,
    },
    #[error("cannot read the CA certificate {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to reach registries: where their CA certificates are.
#[derive(Debug, Clone)]
pub struct RegistryTls {
    pub certs_dir: PathBuf,
}

impl Default for RegistryTls {
    fn default() -> Self {
        RegistryTls {
            certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
        }
    }
}

impl RegistryTls {
    fn ca_path(&self, registry: &str) -> PathBuf {
        self.certs_dir.join(registry).join("ca.crt")
    }

    /// The registry's CA certificate (PEM), when one is configured.
    pub fn ca(&self, registry: &str) -> Result<Option<Vec<u8>>, LoginError> {
        let path = self.ca_path(registry);
        match std::fs::read(&path) {
            Ok(pem) => Ok(Some(pem)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LoginError::Ca { path, source }),
        }
    }

    /// Plain HTTP only for a loopback registry without a CA of its own.
    pub fn protocol(&self, registry: &str) -> ClientProtocol {
        if is_insecure_registry(registry) && !self.ca_path(registry).exists() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        }
    }

    /// The extra roots oci-client should trust for `registry`.
    pub fn roots(&self, registry: &str) -> Result<Vec<Certificate>, LoginError> {
        Ok(self
            .ca(registry)?
            .map(|data| Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
            .into_iter()
            .collect())
    }
}

/// `host[:port]` of a server as docker's config names it (`https://index.docker.io/v1/`,
/// `https://198.18.0.1:5000`, `198.18.0.1:5000`).
pub fn registry_host(server: &str) -> String {
    if server == DOCKER_HUB_SERVER || server.is_empty() {
        return "docker.io".to_string();
    }
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// The credentials to pull from `registry` with: `auth` when it is for that registry.
pub fn credentials_for(
    auth: Option<&RegistryAuth>,
    registry: &str,
) -> oci_client::secrets::RegistryAuth {
    match auth {
        Some(a) if registry_host(&a.server) == registry && !a.username.is_empty() => {
            oci_client::secrets::RegistryAuth::Basic(a.username.clone(), a.password.clone())
        }
        _ => oci_client::secrets::RegistryAuth::Anonymous,
    }
}

/// The value of a `key="value"` parameter of a `WWW-Authenticate` challenge.
fn challenge_param(header: &str, key: &str) -> Option<String> {
    let start = header.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &header[start..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Checks `auth` against its registry as `docker login` does: the registry's `/v2/` says how
/// it authenticates; basic credentials are tried there, bearer ones at the token realm.
pub async fn login(auth: &RegistryAuth, tls: &RegistryTls) -> Result<(), LoginError> {
    let registry = registry_host(&auth.server);
    let host = if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry.as_str()
    };
    let unreachable = |e: reqwest::Error| LoginError::Unreachable {
        registry: registry.clone(),
        reason: error_chain(&e),
    };
    let mut builder = reqwest::Client::builder().timeout(LOGIN_TIMEOUT);
    if let Some(pem) = tls.ca(&registry)? {
        let cert = reqwest::Certificate::from_pem(&pem).map_err(unreachable)?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().map_err(unreachable)?;
    let scheme = match tls.protocol(&registry) {
        ClientProtocol::Http => "http",
        _ => "https",
    };
    let base = format!("{scheme}://{host}/v2/");
    let first = client.get(&base).send().await.map_err(unreachable)?;
    if first.status().is_success() {
        return Ok(());
    }
    let challenge = first
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let realm = match challenge_param(&challenge, "realm") {
        Some(realm) if challenge.to_ascii_lowercase().starts_with("bearer") => realm,
        _ => {
            let answer = client
                .get(&base)
                .basic_auth(&auth.username, Some(&auth.password))
                .send()
                .await
                .map_err(unreachable)?;
            return check_answer(answer.status().as_u16(), &registry, &base);
        }
    };
    let mut url = reqwest::Url::parse(&realm).map_err(|e| LoginError::Unreachable {
        registry: registry.clone(),
        reason: format!("its token realm {realm:?} is not a URL: {e}"),
    })?;
    if let Some(service) = challenge_param(&challenge, "service") {
        url.query_pairs_mut().append_pair("service", &service);
    }
    url.query_pairs_mut().append_pair("account", &auth.username);
    let answer = client
        .get(url.as_str())
        .basic_auth(&auth.username, Some(&auth.password))
        .send()
        .await
        .map_err(unreachable)?;
    check_answer(answer.status().as_u16(), &registry, url.as_str())?;
    // The token server knowing the user is not enough: the registry must take its token
    // (a token server it does not trust, or for another service, fails every pull).
    let body = answer.bytes().await.map_err(unreachable)?;
    let token = bearer_token(&body).ok_or_else(|| LoginError::Unreachable {
        registry: registry.clone(),
        reason: format!("its token server {realm} answered without a token"),
    })?;
    let answer = client
        .get(&base)
        .bearer_auth(token)
        .send()
        .await
        .map_err(unreachable)?;
    match answer.status().as_u16() {
        200..=299 => Ok(()),
        status => Err(LoginError::TokenRefused {
            registry,
            status,
            realm,
        }),
    }
}

/// A login answer's status as a result.
fn check_answer(status: u16, registry: &str, url: &str) -> Result<(), LoginError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(LoginError::Unauthorized {
            registry: registry.to_string(),
        }),
        status => Err(LoginError::Unexpected {
            registry: registry.to_string(),
            status,
            url: url.to_string(),
        }),
    }
}

/// The token in a token server's answer: `token`, or OAuth's `access_token`.
fn bearer_token(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["token", "access_token"]
        .iter()
        .find_map(|k| answer[*k].as_str().filter(|t| !t.is_empty()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_insecure_registry(r), "{r}");
        }
        for r in [
            "docker.io",
            "registry.example.com:5000",
            "10.0.0.1:5000",
            "[fe80::1]:1",
        ] {
            assert!(!is_insecure_registry(r), "{r}");
        }
    }

    #[test]
    fn servers_as_docker_names_them() {
        assert_eq!(registry_host(DOCKER_HUB_SERVER), "docker.io");
        assert_eq!(registry_host("https://198.18.0.1:5000"), "198.18.0.1:5000");
        assert_eq!(registry_host("198.18.0.1:5000/v2/"), "198.18.0.1:5000");
        let auth = RegistryAuth {
            server: "198.18.0.1:5000".into(),
            username: "u".into(),
            password: "p".into(),
        };
        assert!(matches!(
            credentials_for(Some(&auth), "198.18.0.1:5000"),
            oci_client::secrets::RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            credentials_for(Some(&auth), "docker.io"),
            oci_client::secrets::RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn challenges_are_read() {
        let c = r#"Bearer realm="https://auth.example/token",service="registry.example""#;
        assert_eq!(
            challenge_param(c, "realm").as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(
            challenge_param(c, "service").as_deref(),
            Some("registry.example")
        );
        assert_eq!(challenge_param(c, "scope"), None);
    }

    #[test]
    fn tokens_are_read_from_token_server_answers() {
        assert_eq!(
            bearer_token(br#"{"token":"a","expires_in":300}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            bearer_token(br#"{"access_token":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(
            bearer_token(br#"{"token":"","access_token":"c"}"#).as_deref(),
            Some("c")
        );
        assert_eq!(bearer_token(br#"{"expires_in":300}"#), None);
        assert_eq!(bearer_token(b"<html>"), None);
    }

    #[test]
    fn loopback_without_a_ca_is_plain_http() {
        let dir = tempfile::tempdir().unwrap();
        let tls = RegistryTls {
            certs_dir: dir.path().to_path_buf(),
        };
        assert!(matches!(
            tls.protocol("127.0.0.1:5000"),
            ClientProtocol::Http
        ));
        std::fs::create_dir_all(dir.path().join("127.0.0.1:5000")).unwrap();
        std::fs::write(dir.path().join("127.0.0.1:5000/ca.crt"), "x").unwrap();
        assert!(matches!(
            tls.protocol("127.0.0.1:5000"),
            ClientProtocol::Https
        ));
        assert!(matches!(
            tls.protocol("198.18.0.1:5000"),
            ClientProtocol::Https
        ));
    }
}
