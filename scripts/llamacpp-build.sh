#!/usr/bin/env bash
# Builds llama.cpp targets from the copy vendored in the PyPI sdist of llama-cpp-python==0.3.36
# (llama.cpp b11312, commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f), cached under
# target/llamacpp/ (sdist in target/llamacpp/llama_cpp_python-0.3.36, build in
# target/llamacpp/build, log in target/llamacpp/cmake.log).
#
# Sourced by scripts/bench-vs-llamacpp.sh and scripts/gen_preset_refs.sh (it defines
# llamacpp_version, llamacpp_cache, llamacpp_src, llamacpp_build_dir, llamacpp_cmake_flags and
# the function `llamacpp_build NAME TARGET...`, NAME prefixing its messages); run directly,
#   scripts/llamacpp-build.sh TARGET...
# builds those targets and prints the bin directory.
#
# Flags: Release, GGML_NATIVE=OFF with the instruction sets spelled out (AVX2, FMA, F16C,
# BMI2, AVX-512 with VNNI/BF16/VBMI), AVX-VNNI only where /proc/cpuinfo lists it, no AMX;
# llama-server without the embedded web UI (nothing is downloaded at build time).
# Needs python3 + pip, a C++ compiler, cmake (pip-installed if missing). BUILD_JOBS: its -j.

llamacpp_here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
llamacpp_version=0.3.36
llamacpp_cache="$llamacpp_here/target/llamacpp"
llamacpp_src="$llamacpp_cache/llama_cpp_python-$llamacpp_version/vendor/llama.cpp"
llamacpp_build_dir="$llamacpp_cache/build"
# Not GGML_NATIVE=ON: on a Xeon with AMX that build segfaults in ggml_backend_amx_mul_mat.
# The same instruction sets but AMX, spelled out; AVX-VNNI (the VEX form) only where
# /proc/cpuinfo lists it: some AVX-512 Xeons have only the EVEX form (SIGILL otherwise).
# The server is configured (for llama-server, scripts/bench-server.sh) without its web UI:
# LLAMA_USE_PREBUILT_UI=OFF, since that option would download prebuilt assets at build time.
llamacpp_avx_vnni=OFF
grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && llamacpp_avx_vnni=ON
llamacpp_cmake_flags="-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON \
-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX_VNNI=$llamacpp_avx_vnni \
-DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF"

# llamacpp_build NAME TARGET...: fetches the sdist if needed, configures, builds the targets.
llamacpp_build() {
  local name=$1
  shift
  mkdir -p "$llamacpp_cache"
  if [ ! -d "$llamacpp_src" ]; then
    echo "$name: fetching the llama-cpp-python==$llamacpp_version sdist from PyPI" >&2
    # --no-binary for this package only: with :all: pip would also build the sdist's
    # build dependencies (cmake among them) from source just to read its metadata.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      --no-binary llama-cpp-python "llama-cpp-python==$llamacpp_version" -d "$llamacpp_cache" >&2
    tar -xzf "$llamacpp_cache/llama_cpp_python-$llamacpp_version.tar.gz" -C "$llamacpp_cache"
  fi
  if ! command -v cmake >/dev/null; then
    echo "$name: cmake missing; pip install cmake" >&2
    python3 -m pip install --quiet --disable-pip-version-check cmake >&2
    export PATH="$HOME/.local/bin:$PATH"
  fi
  echo "$name: building $* (Release, GGML_NATIVE=OFF, AVX-512 VNNI/BF16/VBMI, AVX_VNNI=$llamacpp_avx_vnni, no AMX) in $llamacpp_build_dir" >&2
  # shellcheck disable=SC2086
  cmake -S "$llamacpp_src" -B "$llamacpp_build_dir" $llamacpp_cmake_flags >"$llamacpp_cache/cmake.log" 2>&1
  local t
  for t in "$@"; do
    cmake --build "$llamacpp_build_dir" --config Release --target "$t" -j "${BUILD_JOBS:-$(nproc)}" \
      >>"$llamacpp_cache/cmake.log" 2>&1
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -gt 0 ] || { echo "usage: scripts/llamacpp-build.sh TARGET... (e.g. llama-bench llama-quantize)" >&2; exit 2; }
  llamacpp_build llamacpp-build "$@"
  echo "$llamacpp_build_dir/bin"
fi
