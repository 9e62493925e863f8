#!/usr/bin/env bash
# Perplexity vs KV memory under each KV eviction policy (docs/kv-eviction.md).
# Usage: scripts/kv-eviction.sh [OUT.jsonl]   — one JSON object per run, appended to OUT.
# Texts: GPL-3 (tests/data/text/GPL-3, = /usr/share/common-licenses/GPL-3 of Debian's
# base-files) and Vim's user manual chapter 41 (/usr/share/vim/vim90/doc/usr_41.txt, Debian
# package vim-runtime 2:9.0.1378-2+deb12u2), at ctx 2048, then the Vim text at ctx 8192.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-kv-eviction.jsonl}
bin=target/release/pagoda
cargo build --release -p pagoda-cli >&2
run() { # text chunks kv-type policy
  local text=$1 chunks=$2 t=$3 p=$4
  local r
  r=$($bin perplexity -f "$text" -c 2048 --chunks "$chunks" --kv-type "$t" --kv-policy "$p" --json)
  echo "{\"text\":\"$text\",${r#\{}" | tee -a "$out"
}
gpl=tests/data/text/GPL-3
vim=/usr/share/vim/vim90/doc/usr_41.txt
for p in sink:4,window:512 window:512 full; do run $vim 2 f16 $p; done
for p in sink:4,window:128 sink:4,window:256 sink:4,window:512 sink:4,window:1024 \
         window:256 window:512 window:1024 h2o:50% h2o:20% full; do
  run $gpl 3 f16 $p
done
run $gpl 3 f32 full
run $gpl 3 q8_0 sink:4,window:512
for p in sink:4,window:256 h2o:50% h2o:20%; do run $vim 2 f16 $p; done
run $gpl 3 q8_0 full
# One long chunk: 8192 tokens of the Vim manual, window 512 = 1/16 of the text.
run8k() { local p=$1 r
  r=$($bin perplexity -f $vim -c 8192 --chunks 1 --kv-type f16 --kv-policy "$p" --json)
  echo "{\"text\":\"$vim\",${r#\{}" | tee -a "$out"
}
for p in sink:4,window:512 window:512 full; do run8k $p; done
