#!/usr/bin/env bash
# Times the autoscaler on one private containerd: a CPU-autoscaled service (min 1, max 4,
# target 50% of a 0.2 CPU limit) whose tasks burn CPU for a fixed time after they start.
# Prints the seconds from the start of load to the first new replica running, and from the
# end of load to back at one task, with the windows and periods they depend on.
# See tests/src/bin/bench-autoscale.rs.
#
#   bench/autoscale.sh [--burn SECONDS] [--down-window DURATION]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-autoscale "$@"
