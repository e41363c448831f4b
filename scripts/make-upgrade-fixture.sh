#!/usr/bin/env bash
# Writes the data directory that `node/tests/upgrade.rs` opens: a single node, written by an
# `arca` binary of an earlier release, holding generic files (stored, overwritten, deleted, in a
# mutable and an immutable repository) and an OCI image (blobs, a manifest, two tags, one
# deleted). The test checks that today's binary serves all of it and decodes every change-log
# entry, so the encoding of commands stays backward compatible.
#
#   scripts/make-upgrade-fixture.sh <arca binary> <output .tar.gz>
#
# The committed fixture was written by commit 935e75d (before commands moved into the format
# envelope, `Command::Format`).
set -euo pipefail
arca=$1
out=$2
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
http=127.0.0.1:47170
"$arca" serve --data-dir "$work/data" --http "$http" --grpc 127.0.0.1:47171 >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://$http/readyz" >/dev/null && break; sleep 0.1; done
export ARCA_SERVER=http://$http
"$arca" repo create builds
"$arca" repo create releases --immutable
"$arca" repo create containers --format oci
# Deterministic content: 30 KB and 20 KB of a seeded generator.
python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
def pattern(seed, n):
    out = bytearray()
    x = seed
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out += x.to_bytes(8, "little")
    return bytes(out[:n])
open(f"{work}/a.bin", "wb").write(pattern(1, 30_000))
open(f"{work}/b.bin", "wb").write(pattern(2, 20_000))
open(f"{work}/a2.bin", "wb").write(pattern(1, 30_000)[:25_000] + pattern(3, 6_000))
open(f"{work}/layer.bin", "wb").write(pattern(4, 15_000))
open(f"{work}/config.json", "wb").write(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
PY
"$arca" push "$work/a.bin" builds/app/1.0/app.bin
"$arca" push "$work/a2.bin" builds/app/1.0/app.bin   # overwrite: a new version of the path
"$arca" push "$work/b.bin" builds/app/2.0/gone.bin
"$arca" rm builds/app/2.0/gone.bin
"$arca" push "$work/b.bin" releases/v1/b.bin
upload() { # file -> digest
  local file=$1 digest
  digest=sha256:$(sha256sum "$file" | cut -d' ' -f1)
  curl -sf -XPOST --data-binary @"$file" -H 'Content-Type: application/octet-stream' \
    "http://$http/v2/containers/team/app/blobs/uploads/?digest=$digest" >/dev/null
  echo "$digest"
}
config=$(upload "$work/config.json")
layer=$(upload "$work/layer.bin")
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config","size":$(stat -c%s "$work/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$layer","size":$(stat -c%s "$work/layer.bin")}]}
JSON
for tag in 1.0 latest old; do
  curl -sf -XPUT --data-binary @"$work/manifest.json" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    "http://$http/v2/containers/team/app/manifests/$tag" >/dev/null
done
curl -sf -XDELETE "http://$http/v2/containers/team/app/manifests/old" >/dev/null
kill "$pid"; wait "$pid" || true
tar -C "$work" --exclude="LOG*" --exclude=LOCK -czf "$out" data
echo "wrote $out ($(stat -c%s "$out") bytes)"
