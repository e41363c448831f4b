#!/usr/bin/env bash
# Runs the whole test suite: unit, property, storage-suite, integration, real-binary and
# real-client tests. Extra arguments go to the test runner (a filter, for example).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arca-target}"
cd "$root"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
