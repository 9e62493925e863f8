#!/usr/bin/env bash
# The NEON kernels, for real: cross-build pagoda-cpu's tests and the kernel tests of the
# root package for aarch64-unknown-linux-gnu and run them under qemu-aarch64 (the runner
# in .cargo/config.toml), with PAGODA_SIMD=neon. None of these tests needs the model.
#
# Installs what is missing: the rustup target, and (Debian) gcc-aarch64-linux-gnu and
# qemu-user. Extra arguments go to every `cargo test`. Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=aarch64-unknown-linux-gnu
start=$(date +%s)
step() { echo "=== test-neon: $* ($(( $(date +%s) - start ))s)"; }

if ! rustup target list --installed | grep -qx "$target"; then
  step "rustup target add $target"
  rustup target add "$target"
fi
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  step "apt-get install ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

export PAGODA_SIMD=neon
# Where qemu finds the aarch64 loader and libc, also for test binaries that re-run
# themselves as child processes (started through binfmt_misc, without the runner's -L).
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
# Property tests: fewer cases than on the host, qemu runs the kernels ~10-50x slower.
export PROPTEST_CASES=${PROPTEST_CASES:-64}

step "build the tests for $target"
cargo test --locked --target "$target" -p pagoda-cpu --no-run "$@"
cargo test --locked --target "$target" -p pagoda --no-run \
  --test kernels_level --test kernels_matmul --test kernels_quantize --test kernels_float \
  --test kernels_formats \
  --test attention_simd "$@"

# NEON must really be the level chosen under qemu, not a silent scalar fallback: the
# level test re-checks PAGODA_SIMD's choice in a child when told what to expect.
step "check that PAGODA_SIMD=neon selects NEON"
PAGODA_SIMD_TEST_EXPECT=neon cargo test --locked --target "$target" -p pagoda \
  --test kernels_level "$@" -- --exact pagoda_simd_forces_a_level_or_falls_back
echo "test-neon: SIMD level under qemu-aarch64: neon"

step "pagoda-cpu tests"
# model::session's tests run a small model through whole conversations: ~7 minutes under
# qemu, and no kernel they reach is left out of the kernel and attention tests below (they
# run natively in the README's test command, at every x86 level in .ci/run).
cargo test --locked --target "$target" -p pagoda-cpu "$@" -- --skip model::session::
step "kernel and attention tests (every available level: scalar and neon)"
# pagoda_simd_forces_a_level_or_falls_back re-executes its own binary as a child; an
# aarch64 child cannot start under qemu-user without binfmt_misc (not available in a
# container), so it runs only in its child form, the NEON check above.
cargo test --locked --target "$target" -p pagoda \
  --test kernels_level --test kernels_matmul --test kernels_quantize --test kernels_float \
  --test kernels_formats \
  --test attention_simd "$@" \
  -- --skip pagoda_simd_forces_a_level_or_falls_back
step "done"
