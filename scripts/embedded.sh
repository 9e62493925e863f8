#!/usr/bin/env bash
# pagoda-core on bare metal (embedded/): build the Cortex-M4F program (thumbv7em-none-eabihf,
# no heap, pagoda-core without default features), run it under qemu-system-arm on an
# MPS2-AN386 board with semihosting, then run the same code on the host and require the
# two outputs to be identical line by line (measurement lines "# ..." excepted).
#
# Installs what is missing: the rustup target, qemu-system-arm (Debian), llvm-tools (for
# llvm-size, only if no llvm-size is on PATH). Also checks formatting and clippy (thumb and
# host). Exits non-zero on any failure. Usage: scripts/embedded.sh [--no-lint]
#
# embedded/ is its own cargo workspace with its own Cargo.lock (pinned versions); cargo runs
# without --locked so a new dependency of pagoda-core only adds lock entries instead of
# failing the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../embedded"
lint=1
[ "${1:-}" = "--no-lint" ] && lint=0
target=thumbv7em-none-eabihf
host=$(rustc -vV | sed -n 's/^host: //p')
elf=target/$target/release/pagoda-embedded
qemu_out=target/qemu-output.txt
start=$(date +%s)
step() { echo "=== embedded: $* ($(( $(date +%s) - start ))s)"; }

if ! rustup target list --installed | grep -qx "$target"; then
  step "rustup target add $target"
  rustup target add "$target"
fi
if ! command -v qemu-system-arm >/dev/null; then
  step "apt-get install qemu-system-arm"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends qemu-system-arm
fi

if [ "$lint" = 1 ]; then
  step "fmt and clippy"
  cargo fmt --check
  cargo clippy --target "$target" --lib --bins -- -D warnings
  cargo clippy --target "$host" --all-targets -- -D warnings
fi

step "build for $target (release)"
cargo build --release --target "$target"

step "footprint"
size_tool=""
for t in llvm-size arm-none-eabi-size; do
  if command -v "$t" >/dev/null; then size_tool=$t; break; fi
done
if [ -z "$size_tool" ]; then
  rustup component add llvm-tools >/dev/null 2>&1 || true
  candidate="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-size"
  [ -x "$candidate" ] && size_tool=$candidate
fi
if [ -n "$size_tool" ]; then
  "$size_tool" "$elf"
  "$size_tool" -A "$elf" | grep -E '^(\.vector_table|\.text|\.rodata|\.data|\.bss|\.uninit) '
else
  echo "no llvm-size / arm-none-eabi-size found: footprint not shown"
fi
# No heap: pagoda-core is built without its `alloc` feature, and no allocator is linked.
core_features=$(cargo tree --target "$target" -e normal,features -i pagoda-core)
if grep -q 'feature "alloc"' <<<"$core_features"; then
  echo "FAIL: pagoda-core is built with its alloc feature for $target" >&2
  exit 1
fi
if grep -qa -e __rust_alloc -e __rg_alloc "$elf"; then
  echo "FAIL: an allocator symbol is linked into $elf" >&2
  exit 1
fi
echo "heap: none (pagoda-core without alloc, no allocator symbol in the ELF)"

step "run under qemu-system-arm (mps2-an386, Cortex-M4F, semihosting)"
rm -f "$qemu_out"
status=0
timeout 120 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -serial none -semihosting-config enable=on,target=native -icount shift=0 \
  -kernel "$elf" >"$qemu_out" || status=$?
cat "$qemu_out"
if [ "$status" -ne 0 ]; then
  echo "FAIL: qemu run exited with status $status (124: timeout)" >&2
  exit 1
fi

step "host run of the same code, compared with the qemu output"
PAGODA_EMBEDDED_QEMU_OUTPUT="$PWD/$qemu_out" cargo test --target "$host"

step "done"
