#!/usr/bin/env bash
# Memory with N tasks (default 100): Shoal's daemon and its per-task log drivers against
# dockerd in swarm mode running the same tasks on the same private containerd; idle figures
# and binary sizes too. Needs Debian's docker.io package (dockerd).
# See tests/src/bin/bench-footprint.rs.
#
#   bench/footprint.sh [--tasks N] [--quick]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-footprint "$@"
