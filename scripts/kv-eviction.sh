#!/usr/bin/env bash
# Perplexity vs KV memory under each KV eviction policy (docs/kv-eviction.md).
# Usage: scripts/kv-eviction.sh [OUT.jsonl [SECTION...]]  — one JSON object per run, appended
# to OUT (default kv-eviction.jsonl). Sections (default: all, in this order):
#   ctx2048  GPL-3 and the Vim manual at ctx 2048: formats, sink+window, window, h2o
#   pyramid  PyramidKV at 50% and 20%, GPL-3, ctx 2048
#   vim4096  the Vim manual at ctx 4096: full, sink:4,window:1024, window:1024
#   vim8192  one 8192-token chunk of the Vim manual: full, sink:4,window:512, window:512
# Texts: GPL-3 (tests/data/text/GPL-3, = /usr/share/common-licenses/GPL-3 of Debian's
# base-files) and Vim's user manual chapter 41 (/usr/share/vim/vim90/doc/usr_41.txt, Debian
# package vim-runtime 2:9.0.1378-2+deb12u2). Runs one at a time (each takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-kv-eviction.jsonl}
shift || true
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(ctx2048 pyramid vim4096 vim8192)
bin=target/release/pagoda
cargo build --release -p pagoda-cli >&2
run() { # text ctx chunks kv-type policy
  local text=$1 ctx=$2 chunks=$3 t=$4 p=$5
  local r
  r=$($bin perplexity -f "$text" -c "$ctx" --chunks "$chunks" --kv-type "$t" --kv-policy "$p" --json)
  echo "{\"text\":\"$text\",${r#\{}" | tee -a "$out"
}
gpl=tests/data/text/GPL-3
vim=/usr/share/vim/vim90/doc/usr_41.txt
for s in "${sections[@]}"; do
  case $s in
    ctx2048)
      for p in sink:4,window:512 window:512 full; do run $vim 2048 2 f16 $p; done
      for p in sink:4,window:128 sink:4,window:256 sink:4,window:512 sink:4,window:1024 \
               window:256 window:512 window:1024 h2o:50% h2o:20% full; do
        run $gpl 2048 3 f16 $p
      done
      run $gpl 2048 3 f32 full
      run $gpl 2048 3 q8_0 sink:4,window:512
      for p in sink:4,window:256 h2o:50% h2o:20%; do run $vim 2048 2 f16 $p; done
      run $gpl 2048 3 q8_0 full
      ;;
    pyramid)
      for p in pyramid:50% pyramid:20%; do run $gpl 2048 3 f16 $p; done
      ;;
    vim4096)
      # 2 chunks of 4096 (the first 8192 tokens), each scored on its second half.
      for p in full sink:4,window:1024 window:1024; do run $vim 4096 2 f16 $p; done
      ;;
    vim8192)
      # One long chunk: window 512 = 1/16 of the text.
      for p in sink:4,window:512 window:512 full; do run $vim 8192 1 f16 $p; done
      ;;
    *) echo "unknown section '$s' (ctx2048, pyramid, vim4096, vim8192)" >&2; exit 2 ;;
  esac
done
