//! What the worker's containerd tests share: busybox tasks with random IDs, and a private
//! containerd with the busybox test image loaded, driven by an executor whose log driver is the
//! program the daemon installs (`logdriver::install`).

use std::path::{Path, PathBuf};

use rand::Rng;
use shoal_proto::{ContainerSpec, Task, TaskState};
use shoal_tests::containerd::ContainerdHost;
use shoal_tests::image::{build_busybox_oci_archive, BUSYBOX_IMAGE};
use shoal_worker::containerd::{Containerd, NAMESPACE};
use shoal_worker::executor::ContainerdExecutor;

/// The node the tests' tasks are assigned to.
pub const NODE: &str = "node0123456789";

pub fn random_id() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..25)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// A busybox task running `args`, with a random ID, in slot 2 of service `web` on [`NODE`],
/// desired RUNNING; `f` adjusts its container spec.
pub fn busybox_task(args: &[&str], f: impl FnOnce(&mut ContainerSpec)) -> Task {
    let mut spec = ContainerSpec {
        image: BUSYBOX_IMAGE.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    f(&mut spec);
    Task {
        id: random_id(),
        service_id: "svc0123456789".into(),
        service_name: "web".into(),
        slot: 2,
        node_id: NODE.into(),
        spec: Some(Box::new(spec)),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

/// A private containerd with the busybox image loaded, a temporary directory and the worker
/// data directory in it. Keep the host before the directory in the owning struct, so that it
/// is dropped first.
pub async fn containerd_with_busybox() -> (ContainerdHost, tempfile::TempDir, PathBuf) {
    let host = ContainerdHost::start().expect("starting a private containerd");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    build_busybox_oci_archive(&archive, BUSYBOX_IMAGE).expect("building the busybox image");
    let cd = Containerd::connect(host.socket(), NAMESPACE)
        .await
        .expect("connecting to containerd");
    shoal_worker::image::load_archive(&cd, &archive)
        .await
        .expect("loading the busybox image");
    let data = dir.path().join("worker");
    (host, dir, data)
}

/// An executor on a fresh connection to `host`, with this test binary as the log driver, as a
/// (re)started daemon has.
pub async fn executor(host: &ContainerdHost, data: &Path) -> ContainerdExecutor {
    let cd = Containerd::connect(host.socket(), NAMESPACE)
        .await
        .expect("connecting to containerd");
    let log_driver = shoal_worker::logdriver::install(&data.join("bin")).unwrap();
    ContainerdExecutor::new(cd, data.to_path_buf(), log_driver).unwrap()
}
