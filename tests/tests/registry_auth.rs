//! Private registries end to end (issue 12): a docker-registry with htpasswd authentication
//! over TLS (its CA given to the daemon as docker's certificate directory), `shoal login`
//! checking and storing credentials in docker's config.json, `--with-registry-auth` sending
//! them with the tasks, and the password nowhere a user or an attacker with the disk would see
//! it: not in `inspect`, not in the daemon's log, not in plaintext under its data directory.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use shoal_tests::daemon::{words, ShoalHost};
use shoal_tests::disk::files_containing;
use shoal_tests::listing::tasks;
use shoal_tests::registry::PrivateRegistry;
use shoal_tests::token_server::Access;

const PASSWORD: &str = "s3cret-Pa55-for-shoal";

/// `shoal ARGS` with a private docker config directory and `stdin` fed in.
fn shoal_with(host: &ShoalHost, config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = host
        .shoal_command(args)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for shoal")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `shoal login` to `registry` as its user with `password` on stdin.
fn login(host: &ShoalHost, config: &Path, registry: &PrivateRegistry, password: &str) -> Output {
    let args = [
        "login",
        "--username",
        &registry.user,
        "--password-stdin",
        &registry.addr,
    ];
    shoal_with(host, config, &args, &format!("{password}\n"))
}

/// A wrong password is refused by the registry, and nothing is stored.
fn assert_bad_login_refused(host: &ShoalHost, config: &Path, registry: &PrivateRegistry) {
    let bad = login(host, config, registry, "wrong-password");
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("incorrect username or password"),
        "{}",
        text(&bad)
    );
    assert!(!config.join("config.json").exists());
}

/// The right one succeeds and is stored in docker's format.
fn assert_login_succeeds(host: &ShoalHost, config: &Path, registry: &PrivateRegistry) {
    let good = login(host, config, registry, &registry.password);
    assert!(good.status.success(), "{}", text(&good));
    assert!(text(&good).contains("Login Succeeded"));
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(config.join("config.json")).expect("config.json"),
    )
    .expect("config.json is JSON");
    assert!(
        stored["auths"][&registry.addr]["auth"].is_string(),
        "docker's format: {stored}"
    );
}

/// Without credentials the pull of `image` is refused, with what to do.
fn assert_anonymous_pull_refused(host: &ShoalHost, config: &Path, image: &str) {
    let create = [
        "service", "create", "-d", "--name", "anon", image, "sleep", "3600",
    ];
    let out = shoal_with(host, config, &create, "");
    assert!(out.status.success(), "{}", text(&out));
    host.wait_for(
        Duration::from_secs(60),
        "the anonymous pull to be refused",
        || {
            tasks(host, "anon")
                .iter()
                .any(|t| t["Error"].as_str().unwrap_or("").contains("shoal login"))
        },
    );
}

/// With them, service `name` of `image` runs.
fn assert_runs_with_registry_auth(host: &ShoalHost, config: &Path, image: &str, name: &str) {
    let create = [
        "service",
        "create",
        "--name",
        name,
        "--with-registry-auth",
        image,
        "sleep",
        "3600",
    ];
    let out = shoal_with(host, config, &create, "");
    assert!(out.status.success(), "{}", text(&out));
    host.wait_for(Duration::from_secs(60), "the service at 1/1", || {
        host.replicas(name).as_deref() == Some("1/1")
    });
}

#[test]
fn login_and_with_registry_auth_pull_from_a_private_tls_registry() {
    let work = tempfile::tempdir().expect("temp dir");
    let registry = PrivateRegistry::start(work.path(), "alice", PASSWORD);
    let image = registry.push_busybox(work.path(), "private/busybox:1");
    let certs = registry.certs_dir.display().to_string();
    let host = ShoalHost::start_with(&["--registry-certs-dir", &certs]);
    host.swarm_init();
    let config = work.path().join("docker-config");

    assert_bad_login_refused(&host, &config, &registry);
    assert_login_succeeds(&host, &config, &registry);
    assert_anonymous_pull_refused(&host, &config, &image);
    assert_runs_with_registry_auth(&host, &config, &image, "priv");

    // The password is nowhere to be read.
    let inspect = host.shoal_ok(&["service", "inspect", "priv"]);
    assert!(!inspect.contains(PASSWORD), "{inspect}");
    let ps = host.shoal_ok(&["service", "ps", "--format", "json", "priv"]);
    assert!(!ps.contains(PASSWORD));
    assert!(!host.daemon_log().contains(PASSWORD), "the daemon log");
    let leaks = files_containing(&host.data_dir(), PASSWORD.as_bytes());
    assert!(leaks.is_empty(), "plaintext password in {leaks:?}");

    // An update without the flag keeps the stored credentials (the new task still pulls).
    host.shoal_ok(&words("service update --env-add A=1 priv"));
    assert_eq!(host.replicas("priv").as_deref(), Some("1/1"));

    // Logged out, --with-registry-auth says there is nothing to send.
    let out = shoal_with(&host, &config, &["logout", &registry.addr], "");
    assert!(
        text(&out).contains("Removing login credentials"),
        "{}",
        text(&out)
    );
    let out = shoal_with(
        &host,
        &config,
        &[
            "service",
            "create",
            "--name",
            "again",
            "--with-registry-auth",
            &image,
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no credentials for registry"),
        "{}",
        text(&out)
    );
}

/// Docker Hub's way: the registry answers `WWW-Authenticate: Bearer realm=…`, and clients get a
/// JWT from the token server with the user's credentials. The token server records what it
/// issued, which proves that login and pulls went through it with the user's name.
#[test]
fn login_and_with_registry_auth_pull_with_bearer_tokens() {
    let work = tempfile::tempdir().expect("temp dir");
    let registry = PrivateRegistry::start_with_tokens(work.path(), "alice", PASSWORD, true);
    let tokens = registry.tokens.as_ref().expect("a token server");
    let image = registry.push_busybox(work.path(), "private/busybox:1");
    let certs = registry.certs_dir.display().to_string();
    let host = ShoalHost::start_with(&["--registry-certs-dir", &certs]);
    host.swarm_init();
    let config = work.path().join("docker-config");
    let pulls_by_alice = || {
        let pull =
            |a: &Access| a.name == "private/busybox" && a.actions.iter().any(|x| x == "pull");
        tokens
            .issued()
            .iter()
            .filter(|t| t.account.as_deref() == Some("alice") && t.access.iter().any(pull))
            .count()
    };
    let issued_to_alice = || {
        tokens
            .issued()
            .iter()
            .filter(|t| t.account.as_deref() == Some("alice"))
            .count()
    };

    let (refused, issued) = (tokens.refused(), issued_to_alice());
    assert_bad_login_refused(&host, &config, &registry);
    assert!(
        tokens.refused() > refused,
        "the token server refused the wrong password"
    );
    assert_eq!(issued_to_alice(), issued);
    assert_login_succeeds(&host, &config, &registry);
    assert!(issued_to_alice() > issued, "login got a token for alice");

    let (pulls, anonymous) = (pulls_by_alice(), tokens.issued().len() - issued_to_alice());
    assert_anonymous_pull_refused(&host, &config, &image);
    assert_eq!(pulls_by_alice(), pulls);
    assert!(
        tokens.issued().len() - issued_to_alice() > anonymous,
        "the anonymous pull asked for a token, which granted nothing"
    );
    assert_runs_with_registry_auth(&host, &config, &image, "priv");
    assert!(
        pulls_by_alice() > pulls,
        "the pull used alice's token: {:?}",
        tokens.issued()
    );
}

/// A registry that does not trust its token server's signature refuses every pull, so a login
/// that only asked the token server would lie: `shoal login` presents the token to the registry
/// as `docker login` does, says what to check, and stores nothing.
#[test]
fn login_fails_when_the_registry_refuses_its_token_servers_tokens() {
    let work = tempfile::tempdir().expect("temp dir");
    let registry = PrivateRegistry::start_with_tokens(work.path(), "alice", PASSWORD, false);
    let certs = registry.certs_dir.display().to_string();
    let host = ShoalHost::start_with(&["--registry-certs-dir", &certs]);
    let config = work.path().join("docker-config");
    let out = login(&host, &config, &registry, PASSWORD);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("to the token from its token server")
            && text(&out).contains("check the registry's token configuration"),
        "{}",
        text(&out)
    );
    assert!(!config.join("config.json").exists());
    let tokens = registry.tokens.as_ref().expect("a token server");
    assert!(
        tokens
            .issued()
            .iter()
            .any(|t| t.account.as_deref() == Some("alice")),
        "the token server itself took alice's password"
    );
}
