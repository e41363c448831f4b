#!/usr/bin/env bash
# Arca against CNCF distribution 2.8 (Debian's docker-registry, filesystem storage) on this
# machine, in one run: installs the peer if missing, builds release binaries, measures the
# machine's limits, then runs the same OCI workloads against both servers in alternation and
# prints a table of Arca/peer ratios. Extra arguments go to `arca-bench compare` (for example
# `--quick`, `--rounds 3`, `--json-out result.json`, `--dir /path/on/the/disk/to/test`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arca-target}"

if [ ! -x /usr/bin/docker-registry ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends docker-registry
fi

cd "$root"
cargo build --release -p arca-cli -p arca-benches --bin arca --bin arca-bench
"$CARGO_TARGET_DIR/release/arca-bench" compare \
  --arca "$CARGO_TARGET_DIR/release/arca" --registry /usr/bin/docker-registry "$@"
