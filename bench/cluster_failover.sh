#!/usr/bin/env bash
# Times how fast a multi-host swarm gets over losing a node, at default settings, on the test
# harness's network namespaces: (A) kill -9 of the leader's daemon until the first write is
# accepted through another manager (10 runs), (B) kill -9 of a worker's daemon and containerd
# until its tasks run elsewhere (5 runs). Prints every run, the median and the max. Needs root
# (network namespaces, containerd). See tests/src/bin/bench-cluster-failover.rs.
#
#   bench/cluster_failover.sh [--leader-runs N] [--worker-runs N]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-cluster-failover "$@"
