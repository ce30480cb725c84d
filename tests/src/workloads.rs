//! Services that tests and benchmarks both run, defined once so that a benchmark measures what
//! a test checks.

use crate::daemon::ShoalHost;

/// Creates (detached) the autoscaled CPU burner `name`: min 1, max 4 replicas, target 50 % of a
/// 0.2 CPU limit, scale-down window `down_window`; each task burns CPU for `burn_seconds` after
/// it starts, then sleeps. A 1 s stop grace keeps scale-downs quick.
pub fn create_cpu_burner(host: &ShoalHost, name: &str, burn_seconds: u64, down_window: &str) {
    let script = format!(
        "end=$(( $(date +%s) + {burn_seconds} )); while [ $(date +%s) -lt $end ]; do :; done; \
         sleep 3600"
    );
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--stop-grace-period",
        "1s",
        "--limit-cpu",
        "0.2",
        "--autoscale-min",
        "1",
        "--autoscale-max",
        "4",
        "--autoscale-cpu",
        "50%",
        "--autoscale-down-window",
        down_window,
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
}
