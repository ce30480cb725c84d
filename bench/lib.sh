# Shared by the bench/*.sh scripts, which source it: the preamble every benchmark needs, and
# `run_bench BIN [ARGS…]`, which builds the benchmark binary BIN (of the shoal-tests crate)
# with the `shoal` binary and runs it with ARGS. Release builds, unless BENCH_PROFILE=debug
# (bench/run.sh --quick: a smoke run reusing the test build, whose figures mean nothing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# A non-login shell may not have rustup's directory on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

scripts/install-deps.sh

# Builds `shoal` and the shoal-tests binaries named, in the benchmarks' profile: release, since
# the daemon's speed is part of what is measured. A benchmark finds `shoal` (and any helper
# binary) next to itself.
bench_build() {
  local bins=(--bin shoal)
  for b in "$@"; do
    bins+=(--bin "$b")
  done
  if [[ "${BENCH_PROFILE:-release}" == debug ]]; then
    cargo build -p shoal-cli -p shoal-tests "${bins[@]}"
  else
    cargo build --release -p shoal-cli -p shoal-tests "${bins[@]}"
  fi
}

run_bench() {
  local bin=$1
  shift
  bench_build "$bin"
  exec "target/${BENCH_PROFILE:-release}/$bin" "$@"
}
