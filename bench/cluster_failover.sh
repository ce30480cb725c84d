#!/usr/bin/env bash
# Times how fast a multi-host swarm gets over losing a node, at default settings, on the test
# harness's network namespaces: (A) kill -9 of the leader's daemon until the first write is
# accepted through another manager (10 runs), (B) a worker lost, by kill -9 of its daemon (host
# up) and by a cut link (host silent), until its tasks run elsewhere (5 runs each). Prints every
# run, the median and the max. Needs root (network namespaces, containerd). See
# tests/src/bin/bench-cluster-failover.rs; bench/worker_loss.sh runs (B) alone.
#
#   bench/cluster_failover.sh [--leader-runs N] [--worker-runs N]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-cluster-failover "$@"
