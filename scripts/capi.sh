#!/usr/bin/env bash
# The C API end to end: header up to date, libpagoda.a built, the C examples compiled
# and run (output byte-identical to `pagoda run`), both under AddressSanitizer (valgrind
# where ASan cannot run), then size and speed figures.
#
#   scripts/capi.sh            # check (CI)
#   scripts/capi.sh --update   # rewrite capi/include/pagoda.h from capi/src/lib.rs
#
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

update=0
for arg in "$@"; do
    case "$arg" in
        --update) update=1 ;;
        *) echo "usage: scripts/capi.sh [--update]" >&2; exit 2 ;;
    esac
done

step() { echo; echo "=== capi: $*"; }
out=target/capi
mkdir -p "$out"

step "header (cbindgen)"
if ! command -v cbindgen >/dev/null; then
    cargo install cbindgen --locked
fi
header=capi/include/pagoda.h
(cd capi && cbindgen --quiet --config cbindgen.toml --crate pagoda-capi --output "../$out/pagoda.h" .)
if [[ $update == 1 ]]; then
    cp "$out/pagoda.h" "$header"
    echo "wrote $header"
elif ! diff -u "$header" "$out/pagoda.h"; then
    echo "stale header: run scripts/capi.sh --update" >&2
    exit 1
fi
echo "$header is up to date"

step "build (release): libpagoda.a, libpagoda.so, pagoda CLI"
cargo build --release --locked -p pagoda-capi
cargo build --release --locked -p pagoda-cli
lib=target/release/libpagoda.a
# The system libraries the static library needs, as rustc reports them. `cargo rustc`
# prints nothing when the crate is fresh, so make it stale first (a second's rebuild).
touch capi/src/lib.rs
native=$(cargo rustc --release --locked -p pagoda-capi -- --print native-static-libs 2>&1 |
    sed -n 's/.*native-static-libs: //p' | tail -n 1)
if [[ -z $native ]]; then
    echo "could not read native-static-libs from rustc" >&2
    exit 1
fi
libs="-lpthread -ldl -lm $native"
echo "link: $lib $libs"

cflags=(-std=c11 -Wall -Wextra -Werror -Icapi/include)
step "compile examples/c"
cc -O2 "${cflags[@]}" examples/c/generate.c "$lib" $libs -o "$out/generate"
cc -O1 -g "${cflags[@]}" examples/c/api_test.c "$lib" $libs -o "$out/api_test"

prompt="The capital of France is"
n=32
step "generate.c vs pagoda run (greedy, -n $n)"
model=${PAGODA_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
"$out/generate" "$model" "$prompt" "$n" >"$out/generate.out" 2>"$out/generate.err"
target/release/pagoda run -m "$model" -p "$prompt" -n "$n" --temp 0 \
    >"$out/run.out" 2>"$out/run.err"
if ! cmp "$out/generate.out" "$out/run.out"; then
    diff <(xxd "$out/generate.out") <(xxd "$out/run.out") || true
    echo "generate.c output differs from pagoda run" >&2
    exit 1
fi
echo "identical ($(wc -c <"$out/generate.out") bytes):"
cat "$out/generate.out"

step "api_test.c"
"$out/api_test" "$model"

step "AddressSanitizer (leaks included)"
printf 'int main(void) { return 0; }\n' >"$out/asan-probe.c"
if cc -fsanitize=address "$out/asan-probe.c" -o "$out/asan-probe" 2>/dev/null &&
    ASAN_OPTIONS=detect_leaks=1 "$out/asan-probe"; then
    for prog in generate api_test; do
        cc -O1 -g -fsanitize=address -fno-omit-frame-pointer "${cflags[@]}" \
            "examples/c/$prog.c" "$lib" $libs -o "$out/$prog-asan"
    done
    # Any report (error or leak) makes the program exit non-zero.
    ASAN_OPTIONS=detect_leaks=1 "$out/generate-asan" "$model" "$prompt" 8 >/dev/null
    ASAN_OPTIONS=detect_leaks=1 "$out/api_test-asan" "$model"
    echo "AddressSanitizer: no reports"
else
    echo "AddressSanitizer unavailable here; valgrind instead"
    vg=(valgrind --quiet --error-exitcode=1 --leak-check=full
        --errors-for-leak-kinds=definite,indirect)
    # valgrind does not know AVX-512.
    PAGODA_SIMD=avx2 "${vg[@]}" "$out/generate" "$model" "$prompt" 8 >/dev/null
    PAGODA_SIMD=avx2 "${vg[@]}" "$out/api_test" "$model"
    echo "valgrind: no reports"
fi

step "figures"
cp "$out/generate" "$out/generate-stripped"
strip "$out/generate-stripped"
echo "generate (static libpagoda, stripped): $(stat -c %s "$out/generate-stripped") bytes"
echo "libpagoda.a: $(stat -c %s "$lib") bytes; libpagoda.so: $(stat -c %s target/release/libpagoda.so) bytes"
for i in 1 2 3; do
    "$out/generate" "$model" "$prompt" 128 2>&1 >/dev/null | sed 's/^/C API:      /'
    target/release/pagoda run -m "$model" -p "$prompt" -n 128 --temp 0 2>&1 >/dev/null |
        sed 's/^/pagoda run: /'
done

step "ok"
