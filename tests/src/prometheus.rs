//! A real Prometheus server for tests: Debian's `prometheus` on 127.0.0.1, with its own
//! storage and a configuration the test writes, stopped on drop (its log shown if the test
//! failed). The autoscaler's PromQL policies and the shipped scrape configuration are tested
//! against it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{free_loopback_port, wait_until};
use crate::http::http_get;

/// How long a started server may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Prometheus server; see the module documentation.
pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts a server on a free loopback port and waits until it is ready. First
    /// `configure(dir, port)` writes `dir/prometheus.yml` and whatever it refers to (rules,
    /// target files); the storage goes to `dir/data`.
    pub fn start(configure: impl FnOnce(&Path, u16)) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("shoal-prometheus-")
            .tempdir()
            .expect("temp dir");
        let port = free_loopback_port();
        configure(dir.path(), port);
        Prometheus::start_on(port, dir)
    }

    fn start_on(port: u16, dir: tempfile::TempDir) -> Prometheus {
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `prometheus` ({e}): install Debian's prometheus package \
                     (scripts/install-deps.sh)"
                )
            });
        let server = Prometheus {
            child: Some(child),
            port,
            dir,
        };
        assert!(
            wait_until(READY_TIMEOUT, || http_get(port, "/-/ready", None)
                .is_some_and(|(status, _, _)| status.contains(" 200 "))),
            "Prometheus did not become ready; log:\n{}",
            server.log()
        );
        server
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Stops the server, keeping its port and storage for [`Prometheus::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, configuration and storage.
    pub fn restart(mut self) -> Prometheus {
        self.stop();
        let port = self.port;
        let dir = std::mem::replace(
            &mut self.dir,
            tempfile::tempdir().expect("placeholder temp dir"),
        );
        Prometheus::start_on(port, dir)
    }

    /// GET an API path; the decoded JSON answer.
    pub fn api(&self, path: &str) -> Value {
        let (status, _, body) = http_get(self.port, path, None)
            .unwrap_or_else(|| panic!("Prometheus did not answer {path}"));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: {status}: not JSON ({e}): {body}"))
    }

    /// An instant query: (status, error, result vector).
    pub fn query(&self, promql: &str) -> (String, String, Vec<Value>) {
        let v = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        (
            v["status"].as_str().unwrap_or_default().to_string(),
            v["error"].as_str().unwrap_or_default().to_string(),
            v["data"]["result"].as_array().cloned().unwrap_or_default(),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        let log = self.log();
        // A server moved on by `restart` leaves an empty placeholder dir behind.
        if std::thread::panicking() && !log.is_empty() {
            eprintln!("Prometheus log:\n{log}");
        }
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
