//! A private registry for tests: Debian's docker-registry on a free loopback port with htpasswd
//! (bcrypt) or bearer-token (`token_server`) authentication over TLS, its certificate
//! self-signed for 127.0.0.1 (openssl) and
//! laid out as docker's certificate directory (`CERTS/127.0.0.1:PORT/ca.crt`), storing into a
//! private directory; killed on drop. Images go in with skopeo.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::free_loopback_port;
use crate::image::build_busybox_oci_archive;
use crate::token_server::{TokenServer, ISSUER};

/// The registry's name in its token challenges (`service=`), the tokens' audience.
pub const TOKEN_SERVICE: &str = "shoal-test-registry";

pub struct PrivateRegistry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Docker's certificate directory layout: `certs_dir/ADDR/ca.crt`.
    pub certs_dir: PathBuf,
    pub user: String,
    pub password: String,
    /// The token server, when the registry authenticates with bearer tokens.
    pub tokens: Option<TokenServer>,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateRegistry {
    /// Starts it under `dir` with one user, `user`/`password`, checked with htpasswd.
    pub fn start(dir: &Path, user: &str, password: &str) -> PrivateRegistry {
        Self::launch(dir, user, password, None)
    }

    /// Starts it with bearer-token authentication: a token server knows the user, and the
    /// registry trusts the tokens it signs when `trusted` (else it refuses them all).
    pub fn start_with_tokens(
        dir: &Path,
        user: &str,
        password: &str,
        trusted: bool,
    ) -> PrivateRegistry {
        let tokens = TokenServer::start(dir, user, password, trusted);
        Self::launch(dir, user, password, Some(tokens))
    }

    fn launch(
        dir: &Path,
        user: &str,
        password: &str,
        tokens: Option<TokenServer>,
    ) -> PrivateRegistry {
        let addr = format!("127.0.0.1:{}", free_loopback_port());
        let certs_dir = dir.join("certs.d");
        let ca_dir = certs_dir.join(&addr);
        std::fs::create_dir_all(&ca_dir).expect("create the certificate directory");
        // A CA and a server certificate it signs: TLS clients refuse a CA certificate used as
        // the server's own.
        let (ca, ca_key) = (ca_dir.join("ca.crt"), dir.join("ca.key"));
        let (cert, key, csr) = (
            dir.join("registry.crt"),
            dir.join("registry.key"),
            dir.join("registry.csr"),
        );
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "1", "-subj", "/CN=shoal-test-ca"])
                .args(ec)
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca),
            "openssl req (CA)",
        );
        run(
            Command::new("openssl")
                .args(["req", "-subj", "/CN=127.0.0.1"])
                .args(ec)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
            "openssl req (server)",
        );
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&ca)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
            "openssl x509 (sign)",
        );
        let auth = match &tokens {
            Some(t) => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
                realm = t.realm(),
                bundle = t.cert_bundle.display(),
            ),
            None => htpasswd_auth(dir, user, password),
        };
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    \
                 rootdirectory: {data}\n{auth}http:\n  addr: {addr}\n  tls:\n    \
                 certificate: {cert}\n    key: {key}\n",
                data = dir.join("registry-data").display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("write the registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("create registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup registry.log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let registry = PrivateRegistry {
            child,
            addr,
            certs_dir,
            user: user.to_string(),
            password: password.to_string(),
            tokens,
        };
        wait_listening(&registry.addr, dir);
        registry
    }

    /// Pushes the busybox test image as `ADDR/REPO:TAG` with the registry's credentials;
    /// returns the image name.
    pub fn push_busybox(&self, work: &Path, repo_tag: &str) -> String {
        let archive = work.join("busybox-push.tar");
        build_busybox_oci_archive(&archive, "busybox:latest").expect("build the busybox archive");
        let name = format!("{}/{repo_tag}", self.addr);
        run(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy"])
                .arg(format!("--dest-creds={}:{}", self.user, self.password))
                .arg(format!(
                    "--dest-cert-dir={}",
                    self.certs_dir.join(&self.addr).display()
                ))
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("docker://{name}")),
            "skopeo copy",
        );
        name
    }
}

/// The registry config's `auth:` section for htpasswd with one user, its file under `dir`.
/// Waits (up to 20 s) until a `docker-registry` started with its log at `dir/registry.log`
/// accepts connections on `addr`; panics with that log otherwise.
pub fn wait_listening(addr: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not listen on {addr}: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn htpasswd_auth(dir: &Path, user: &str, password: &str) -> String {
    let htpasswd = dir.join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd (Debian package apache2-utils)");
    assert!(out.status.success(), "htpasswd failed");
    std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
    format!(
        "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
        htpasswd.display()
    )
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
