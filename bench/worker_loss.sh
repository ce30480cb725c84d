#!/usr/bin/env bash
# Times how fast a swarm reschedules a lost worker's tasks, on the test harness's network
# namespaces (1 manager + 2 workers, a 6-replica service): kill -9 of the worker's daemon while
# its host stays up (the session's connection closes: target < 5 s), and a cut link (the host
# goes silent: down after three 5 s heartbeats, target < 16 s); 5 runs each by default. Prints
# every run, the median and the max. Needs root. See tests/src/bin/bench-cluster-failover.rs.
#
#   bench/worker_loss.sh [--worker-runs N]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-cluster-failover --leader-runs 0 "$@"
