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

run_bench() {
  local bin=$1
  shift
  # Release builds: the daemon's speed is part of what is measured. The benchmark finds
  # `shoal` next to itself in target/release.
  if [[ "${BENCH_PROFILE:-release}" == debug ]]; then
    cargo build -p shoal-cli -p shoal-tests --bin shoal --bin "$bin"
    exec "target/debug/$bin" "$@"
  fi
  cargo build --release -p shoal-cli -p shoal-tests --bin shoal --bin "$bin"
  exec "target/release/$bin" "$@"
}
