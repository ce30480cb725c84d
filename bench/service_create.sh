#!/usr/bin/env bash
# Times `shoal service create --replicas N` until N/N run (N = 1, 10, 30, 100), against starting
# the same N containers directly through containerd's API and against Docker Swarm on the same
# private containerd; also `service rm` for both orchestrators, and Shoal's per-phase breakdown.
# Needs Debian's docker.io package (dockerd). See tests/src/bin/bench-service-create.rs.
#
#   bench/service_create.sh [--replicas 1,10,30,100] [--runs R] [--quick]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-service-create "$@"
