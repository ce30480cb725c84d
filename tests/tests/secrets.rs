//! Secrets and configs end to end, on real containers: `secret`/`config create/ls/inspect/rm`,
//! a service's `--secret`/`--config` files (content, target, owner, mode) read from inside its
//! task, the files in memory (a tmpfs, gone with the task), the plaintext nowhere on disk
//! (daemon data dirs, containerd's directories, daemon logs) nor in `inspect`, removal refused
//! while a service uses one, rotation through `service update`, every bad input refused with
//! nothing stored, and on two nodes only the node running the task gets the secret.
//!
//! The tasks print what they read reversed (`rev`), so that their own logs, which are on disk,
//! do not hold the plaintext the tests look for.

use std::fs;
use std::time::Duration;

use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{words, ShoalHost};
use shoal_tests::disk::files_containing;
use shoal_tests::listing::{live_tasks, log_lines};

const CONVERGE: Duration = Duration::from_secs(90);

/// A value found nowhere before the test wrote it.
fn plaintext(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("Pl41n-{tag}-{}-{nanos}", std::process::id())
}

fn reversed(s: &str) -> String {
    s.chars().rev().collect()
}

/// Asserts that neither the host's directory (data dir, daemon log) nor its containerd's
/// directories hold any of `secrets` on disk.
fn assert_nowhere_on_disk(host: &ShoalHost, secrets: &[&str]) {
    for secret in secrets {
        for dir in [host.dir(), host.containerd().dir()] {
            let found = files_containing(dir, secret.as_bytes());
            assert!(found.is_empty(), "the plaintext is on disk in {found:?}");
        }
        assert!(
            !host.daemon_log().contains(secret),
            "the daemon log holds it"
        );
    }
}

/// The tmpfs mount points of tasks' files under the host's directory.
fn task_file_mounts(host: &ShoalHost) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = host.dir().display().to_string();
    info.lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            (fstype == "tmpfs" && point.starts_with(&dir) && point.ends_with("/files"))
                .then(|| point.to_string())
        })
        .collect()
}

/// Writes a content file outside every host's directory (which the tests search).
fn write_file(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let path = dir.path().join(name);
    fs::write(&path, content).expect("write the content file");
    path.display().to_string()
}

#[test]
fn secrets_and_configs_reach_tasks_in_memory_only() {
    let mut host = ShoalHost::start_swarm();
    let files = tempfile::tempdir().expect("temp dir");
    let v1 = plaintext("v1");
    let v2 = plaintext("v2");
    let file = write_file(&files, "pw", &v1);
    let id = host.shoal_ok(&["secret", "create", "--label", "team=db", "db_pass", &file]);
    assert_eq!(id.trim().len(), 25, "secret create prints the ID: {id}");
    let conf = write_file(&files, "app.conf", "listen = 8080\n");
    host.shoal_ok(&["config", "create", "app_conf", &conf]);

    let ls = host.shoal_ok(&words("secret ls"));
    let header: Vec<&str> = ls
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"],
        "{ls}"
    );
    assert!(ls.contains(id.trim()) && ls.contains("db_pass"), "{ls}");
    let inspect = host.shoal_ok(&words("secret inspect db_pass"));
    assert!(inspect.contains("\"team\": \"db\""), "{inspect}");
    assert!(
        !inspect.contains("Data") && !inspect.contains(&v1),
        "{inspect}"
    );
    // A config is not secret: inspect shows its data (base64), as docker's.
    let inspect = host.shoal_ok(&words("config inspect app_conf"));
    assert!(
        inspect.contains("\"Data\": \"bGlzdGVuID0gODA4MAo=\""),
        "{inspect}"
    );

    let probe = "rev /run/secrets/db_pass; echo; \
        echo CUSTOM=$(stat -c '%u:%g:%a' /run/secrets/custom); \
        echo DEFAULT=$(stat -c '%u:%g:%a' /run/secrets/db_pass); \
        echo CONF=$(cat /etc/app.conf); \
        echo FS=$(grep ' /run/secrets/db_pass ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1); \
        echo DONE; sleep 3600";
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "files",
        "--secret",
        "db_pass",
        "--secret",
        "source=db_pass,target=custom,uid=1000,gid=1001,mode=0400",
        "--config",
        "source=app_conf,target=/etc/app.conf",
        "busybox",
        "sh",
        "-c",
        probe,
    ]);
    host.wait_for(CONVERGE, "the task to print DONE", || {
        log_lines(&host, "files").iter().any(|l| l == "DONE")
    });
    let lines = log_lines(&host, "files");
    let all = lines.join("\n");
    assert!(lines.contains(&reversed(&v1)), "{all}");
    assert!(lines.contains(&"CUSTOM=1000:1001:400".to_string()), "{all}");
    assert!(lines.contains(&"DEFAULT=0:0:444".to_string()), "{all}");
    assert!(lines.contains(&"CONF=listen = 8080".to_string()), "{all}");
    assert!(lines.contains(&"FS=tmpfs ro".to_string()), "{all}");
    assert_eq!(task_file_mounts(&host).len(), 1, "one task, one tmpfs");

    // Nowhere else: not on any disk, not in the logs, not in inspect.
    assert_nowhere_on_disk(&host, &[&v1]);
    let inspect = host.shoal_ok(&words("service inspect files"));
    assert!(
        inspect.contains("db_pass") && !inspect.contains(&v1),
        "{inspect}"
    );

    // In use: not removed, and the refusal names the service.
    let err = host.shoal_err(&words("secret rm db_pass"));
    assert!(
        err.contains("secret 'db_pass' is in use by the following service: files"),
        "{err}"
    );
    let err = host.shoal_err(&words("config rm app_conf"));
    assert!(
        err.contains("in use by the following service: files"),
        "{err}"
    );

    // A daemon killed and started again adopts the task, whose files are still in memory.
    let task = live_tasks(&host, "files")[0]["ID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    host.kill9();
    host.start_daemon();
    host.wait_for(CONVERGE, "the task to be adopted", || {
        host.replicas("files").as_deref() == Some("1/1")
    });
    let ids: Vec<String> = live_tasks(&host, "files")
        .iter()
        .filter_map(|t| t["ID"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, std::slice::from_ref(&task), "the same task runs on");
    let read = host
        .sh_in_task(&task, "rev /run/secrets/db_pass")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.trim(), reversed(&v1));
    assert_eq!(task_file_mounts(&host).len(), 1);

    // Rotation: a new secret at the old target; the rolling update gives every task the new
    // value, and the old secret can go.
    let file2 = write_file(&files, "pw2", &v2);
    host.shoal_ok(&["secret", "create", "db_pass_v2", &file2]);
    host.shoal_ok(&[
        "service",
        "update",
        "-d",
        "--secret-rm",
        "db_pass",
        "--secret-add",
        "source=db_pass_v2,target=db_pass",
        "--secret-add",
        "source=db_pass_v2,target=custom,uid=1000,gid=1001,mode=0400",
        "files",
    ]);
    host.wait_for(CONVERGE, "the new task to read the new secret", || {
        log_lines(&host, "files").contains(&reversed(&v2))
    });
    host.wait_for(CONVERGE, "the old task's files to go", || {
        task_file_mounts(&host).len() == 1
    });
    assert_eq!(host.shoal_ok(&words("secret rm db_pass")).trim(), "db_pass");
    let ls = host.shoal_ok(&words("secret ls --format {{.Name}}"));
    assert_eq!(ls.trim(), "db_pass_v2");

    // With the service gone, its files go, and so may its secret and config.
    host.shoal_ok(&words("service rm files"));
    host.wait_for(CONVERGE, "the task's files to go", || {
        task_file_mounts(&host).is_empty()
    });
    host.shoal_ok(&words("secret rm db_pass_v2"));
    host.shoal_ok(&words("config rm app_conf"));
    assert_eq!(host.shoal_ok(&words("secret ls -q")).trim(), "");
    assert_nowhere_on_disk(&host, &[&v1, &v2]);
}

/// What the daemon answers to requests the CLI would never send, straight over the API socket:
/// the control API checks again, with the CLI's words.
fn api_refusals(host: &ShoalHost) -> Vec<String> {
    use shoal_proto::{
        ContainerSpec, CreateSecretRequest, CreateServiceRequest, SecretReference, SecretSpec,
        ServiceSpec,
    };
    host.with_control(async |mut control| {
        let secret = |name: &str, data: Vec<u8>| CreateSecretRequest {
            spec: Some(SecretSpec {
                name: name.into(),
                data,
                ..Default::default()
            }),
        };
        let service = |r: SecretReference| CreateServiceRequest {
            spec: Some(Box::new(ServiceSpec {
                name: "api".into(),
                replicas: 1,
                container: Some(ContainerSpec {
                    image: "docker.io/library/busybox:latest".into(),
                    secrets: vec![r],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let reference = |name: &str, mode: u32| SecretReference {
            secret_name: name.into(),
            target: name.into(),
            uid: "0".into(),
            gid: "0".into(),
            mode,
            ..Default::default()
        };
        let mut refusals = Vec::new();
        for req in [
            secret("bad name", b"x".to_vec()),
            secret("big", vec![0; 600 * 1024]),
        ] {
            let status = control.create_secret(req).await.expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            refusals.push(status.message().to_string());
        }
        for r in [reference("token", 0o4755), reference("nope", 0o444)] {
            let status = control
                .create_service(service(r))
                .await
                .expect_err("refused");
            refusals.push(status.message().to_string());
        }
        refusals
    })
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let host = ShoalHost::start_swarm();
    let files = tempfile::tempdir().expect("temp dir");
    let good = write_file(&files, "good", "value");
    let empty = write_file(&files, "empty", "");
    let big = write_file(&files, "big", &"x".repeat(600 * 1024));
    let missing = files.path().join("missing").display().to_string();
    for (args, words_expected) in [
        (
            vec!["secret", "create", "s", &missing],
            "error reading content from",
        ),
        (
            vec!["secret", "create", "bad name", &good],
            "invalid secret name \"bad name\"",
        ),
        (vec!["secret", "create", "x-", &good], "invalid secret name"),
        (
            vec!["secret", "create", "s", &empty],
            "larger than 0 and less than 500 KiB",
        ),
        (
            vec!["secret", "create", "s", &big],
            "less than 500 KiB (614400 bytes given)",
        ),
        (
            vec!["config", "create", "c", &big],
            "config data must be larger than 0",
        ),
    ] {
        let err = host.shoal_err(&args);
        assert!(err.contains(words_expected), "{args:?}: {err}");
    }
    assert_eq!(host.shoal_ok(&words("secret ls -q")).trim(), "");
    assert_eq!(host.shoal_ok(&words("config ls -q")).trim(), "");

    // From STDIN; then the name is taken.
    let mut cmd = host.shoal_command(&["secret", "create", "token", "-"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run secret create -");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(b"from-stdin").expect("write stdin");
    }
    let out = child.wait_with_output().expect("secret create -");
    assert!(out.status.success(), "{out:?}");
    let err = host.shoal_err(&["secret", "create", "token", &good]);
    assert!(err.contains("secret token already exists"), "{err}");
    assert_eq!(host.shoal_ok(&words("secret ls -q")).lines().count(), 1);

    // References: unknown names, bad modes and owners, clashing targets.
    for (flag, words_expected) in [
        ("--secret=nope", "secret not found: nope"),
        ("--config=nope", "config not found: nope"),
        ("--secret=source=token,mode=999", "invalid mode \"999\""),
        ("--secret=source=token,mode=4755", "only permission bits"),
        ("--secret=source=token,uid=root", "invalid uid \"root\""),
        ("--secret=source=token,target=../x", "invalid target"),
    ] {
        let err = host.shoal_err(&["service", "create", "-d", "--name", "web", flag, "busybox"]);
        assert!(err.contains(words_expected), "{flag}: {err}");
    }
    let err = host.shoal_err(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--secret",
        "token",
        "--secret",
        "source=token,target=/run/secrets/token",
        "busybox",
    ]);
    assert!(err.contains("both mount at /run/secrets/token"), "{err}");
    let refusals = api_refusals(&host);
    for (refusal, words_expected) in refusals.iter().zip([
        "invalid secret name \"bad name\"",
        "less than 500 KiB (614400 bytes given)",
        "invalid mode 4755 for secret token",
        "secret not found: nope",
    ]) {
        assert!(refusal.contains(words_expected), "{refusal}");
    }
    assert_eq!(host.shoal_ok(&words("secret ls -q")).lines().count(), 1);
    assert!(host.service_ls().is_empty(), "no service was stored");

    // `service update` refuses an unknown secret and leaves the service as it was.
    host.shoal_ok(&words("service create -d --name web --replicas 0 busybox"));
    let err = host.shoal_err(&words("service update -d --secret-add nope web"));
    assert!(err.contains("secret not found: nope"), "{err}");
    let err = host.shoal_err(&words("service update -d --secret-rm token web"));
    assert!(err.contains("uses no secret of that name"), "{err}");
    let inspect = host.shoal_ok(&words("service inspect web"));
    assert!(!inspect.contains("nope"), "{inspect}");
}

#[test]
fn a_secret_goes_only_to_the_node_running_its_task() {
    let cluster = TestCluster::new(2);
    cluster.form(1, 1);
    cluster.load_busybox_everywhere();
    let manager = cluster.host(0);
    let worker = cluster.host(1);
    let value = plaintext("node");
    let files = tempfile::tempdir().expect("temp dir");
    let file = write_file(&files, "pw", &value);
    manager.shoal_ok(&["secret", "create", "pw", &file]);
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "placed",
        "--constraint",
        "node.role==worker",
        "--secret",
        "pw",
        "busybox",
        "sh",
        "-c",
        "rev /run/secrets/pw; echo; echo DONE; sleep 3600",
    ]);
    manager.wait_for(CONVERGE, "the task to read its secret", || {
        log_lines(manager, "placed").contains(&reversed(&value))
    });
    // Its files are on the worker, in memory; the manager has none.
    assert_eq!(task_file_mounts(worker).len(), 1);
    assert!(task_file_mounts(manager).is_empty());
    for host in [manager, worker] {
        assert_nowhere_on_disk(host, &[&value]);
    }
    manager.shoal_ok(&words("service rm placed"));
    manager.wait_for(CONVERGE, "the worker's task files to go", || {
        task_file_mounts(worker).is_empty()
    });
    manager.shoal_ok(&words("secret rm pw"));
}
