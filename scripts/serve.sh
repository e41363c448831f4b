#!/usr/bin/env bash
# Builds Arca (release) and runs `arca serve` with the given arguments. With no arguments this
# is a single-node region: data in ./arca-data, HTTP on 127.0.0.1:7070.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arca-target}"
cargo build --release --manifest-path "$root/Cargo.toml" -p arca-cli
exec "$CARGO_TARGET_DIR/release/arca" serve "$@"
