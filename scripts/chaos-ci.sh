#!/usr/bin/env bash
# Bounded chaos runs for CI: seven scenarios of 25 s each against real `arca` processes on
# loopback (about 7 minutes in all on 2 cores with the debug build). Exits
# non-zero when any run reports a violated invariant (exit 1) or cannot run (exit 2, timeout).
#
#   scripts/chaos-ci.sh                       # debug build, fixed seed
#   ARCA_CHAOS_PROFILE=release scripts/chaos-ci.sh
#   ARCA_CHAOS_SEED=7 ARCA_CHAOS_DURATION=40 scripts/chaos-ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arca-target}"
profile="${ARCA_CHAOS_PROFILE:-debug}"
seed="${ARCA_CHAOS_SEED:-20261128}"
duration="${ARCA_CHAOS_DURATION:-25}"
out="${ARCA_CHAOS_OUT:-${TMPDIR:-/tmp}/arca-chaos-ci}"

build_flags=()
if [ "$profile" = release ]; then
    build_flags=(--release)
fi
cargo build "${build_flags[@]}" -p arca-cli --bin arca
cargo build "${build_flags[@]}" -p arca-chaos --bin arca-chaos

rm -rf "$out"
mkdir -p "$out/bin"
# Run private copies: the target directory may be shared, and another checkout building `arca`
# there must not swap the binary under a run (nodes restarted mid-run exec it again).
cp "$CARGO_TARGET_DIR/$profile/arca" "$CARGO_TARGET_DIR/$profile/arca-chaos" "$out/bin/"
bin="$out/bin"
failed=()
run() {
    local scenario=$1 topology=$2
    local dir="$out/$scenario"
    echo "== arca-chaos --scenario $scenario --seed $seed --duration $duration --topology $topology"
    local status=0
    # Bounded: the run itself, healing, convergence (90 s at most) and the read-back.
    timeout 420 "$bin/arca-chaos" --scenario "$scenario" --seed "$seed" \
        --duration "$duration" --topology "$topology" --arca "$bin/arca" --out "$dir" \
        >"$dir.stdout" 2>"$dir.stderr" || status=$?
    cat "$dir.stdout"
    if [ "$status" -ne 0 ]; then
        echo "!! $scenario exited with $status (report in $dir)"
        tail -n 20 "$dir.stderr" || true
        failed+=("$scenario")
    fi
}

run leader-kill 3,1
run region-partition 3,1
run disk-corruption 3,1
run primary-loss-promote 3,1
run upload-retry-kill 3,1
run wiped-node 3,1
run double-failover 1,1,1

if [ "${#failed[@]}" -gt 0 ]; then
    echo "chaos: FAILED: ${failed[*]} (reports under $out)"
    exit 1
fi
echo "chaos: every invariant held in every scenario (reports under $out)"
