#!/usr/bin/env bash
# Times `shoal service create --replicas 30` until 30/30 run, against starting the same 30
# containers directly through containerd's API, on one private containerd; prints both times,
# their ratio and the daemon's memory. See tests/src/bin/bench-service-create.rs.
#
#   bench/service_create.sh [--replicas N]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-service-create "$@"
