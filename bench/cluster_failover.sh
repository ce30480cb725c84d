#!/usr/bin/env bash
# Times how fast a multi-host swarm gets over losing a node, at default settings, on the test
# harness's network namespaces: (A) kill -9 of the leader's daemon until the first write is
# accepted through another manager (10 runs), (B) kill -9 of a worker's daemon and containerd
# until its tasks run elsewhere (5 runs). Prints every run, the median and the max. Needs root
# (network namespaces, containerd). See tests/src/bin/bench-cluster-failover.rs.
#
#   bench/cluster_failover.sh [--leader-runs N] [--worker-runs N]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

scripts/install-deps.sh
# Release builds: the daemons' speed is part of what is measured. The benchmark finds `shoal`
# next to itself in target/release.
cargo build --release -p shoal-cli -p shoal-tests --bin shoal --bin bench-cluster-failover
exec target/release/bench-cluster-failover "$@"
