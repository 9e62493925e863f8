#!/usr/bin/env bash
# Regenerates tests/data/kquant/llamacpp_dots.json: llama.cpp's own K-quant dot products
# (`ggml_vec_dot_{q2_K,q3_K,q4_K,q5_K,q6_K,iq4_xs}_q8_K`, the non-repacked ones) on fixed
# pseudo-random blocks, as f32 bits, for tests/kernels_kquant.rs.
#
# The harness below links the libggml-cpu.so of the llama.cpp build in target/llamacpp/build
# (b11312, the cmake flags of scripts/bench-vs-llamacpp.sh: -O3 -std=gnu11, AVX2/FMA/F16C/BMI2 and
# AVX-512 F/CD/VL/DQ/BW/VBMI/VNNI/BF16, GCC, so -ffp-contract=fast) and calls, through
# ggml_get_type_traits_cpu, the Q8_K quantizer (`quantize_row_q8_K`, which is
# `quantize_row_q8_K_ref`) and each format's `vec_dot`. Builds the ggml-cpu target first if
# the library is missing. Needs gcc, cmake and what scripts/bench-vs-llamacpp.sh needs.
#
# Usage: scripts/gen-kquant-dots.sh            (writes the JSON; prints its path)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$here/target/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp"
build="$here/target/llamacpp/build"
lib="$build/bin"
if [ ! -e "$lib/libggml-cpu.so" ]; then
  # The sdist comes from scripts/bench-vs-llamacpp.sh (--build-only); the flags are its.
  [ -d "$src" ] || "$here/scripts/bench-vs-llamacpp.sh" --build-only
  avx_vnni=OFF
  grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && avx_vnni=ON
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON \
    -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX_VNNI=$avx_vnni \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$build" --config Release --target ggml-cpu -j "${BUILD_JOBS:-$(nproc)}" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/harness.c" <<'EOF'
// Prints {"activations": [...], "cases": {...}} on stdout; see gen-kquant-dots.sh.
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "ggml.h"
#include "ggml-cpu.h"

#define QK_K 256
#define MAX_NB 6
#define N_ACT 16
#define N_CASE 24

static uint64_t rng = 0x4B51554E54ull;  // "KQUANT"
static uint64_t next(void) {  // xorshift64*
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}
static float unit(void) {  // in [-1, 1), 24 random bits: exact in f32
    return (float)((int32_t)(next() >> 40) - (1 << 23)) / (float)(1 << 23);
}

// An f16 bit pattern by kind: 0 zero, 1 subnormal, 2 small, 3 ordinary, 4 large, else random finite.
static uint16_t f16_bits(int kind) {
    uint16_t sign = (next() & 1) ? 0x8000 : 0;
    uint16_t mant = (uint16_t)(next() & 0x3FF);
    switch (kind) {
    case 0: return 0;
    case 1: return (uint16_t)(mant | 1);                      // positive subnormal
    case 2: return (uint16_t)((3u << 10) | mant);              // ~1e-4
    case 3: return (uint16_t)(((12 + next() % 4) << 10) | mant); // 0.01 .. 0.5
    case 4: return (uint16_t)((29u << 10) | mant);             // ~2e4 .. 6e4
    default: return (uint16_t)(sign | ((1 + next() % 30) << 10) | mant);
    }
}

static void put16(uint8_t * p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

struct fmt { const char * name; enum ggml_type ty; int bytes; int d_off; int dmin_off; int sc_off; int sc_len; };
static const struct fmt FMTS[] = {
    // scales: bytes that hold sub-block scales/mins (set to 0xFF in the "extreme" cases)
    {"Q2_K",   GGML_TYPE_Q2_K,   84,  80,  82,  0,   16},
    {"Q3_K",   GGML_TYPE_Q3_K,   110, 108, -1,  96,  12},
    {"Q4_K",   GGML_TYPE_Q4_K,   144, 0,   2,   4,   12},
    {"Q5_K",   GGML_TYPE_Q5_K,   176, 0,   2,   4,   12},
    {"Q6_K",   GGML_TYPE_Q6_K,   210, 208, -1,  192, 16},
    {"IQ4_XS", GGML_TYPE_IQ4_XS, 136, 0,   -1,  2,   6},
};

static int nb_of(int i) { return 1 + i % 4 + (i % 7 == 6 ? 2 : 0); }

int main(void) {
    ggml_cpu_init();
    static float act[N_ACT][MAX_NB * QK_K];
    static uint8_t q8[N_ACT][MAX_NB * 292];
    const struct ggml_type_traits_cpu * q8k = ggml_get_type_traits_cpu(GGML_TYPE_Q8_K);
    printf("{\n  \"generator\": \"scripts/gen-kquant-dots.sh (llama.cpp b11312 libggml-cpu.so)\",\n");
    printf("  \"activations\": [\n");
    for (int a = 0; a < N_ACT; ++a) {
        int n = nb_of(a) * QK_K;
        // Activation kinds: ordinary, tiny, large, zero, constant, one outlier.
        float scale = a % 6 == 1 ? 1e-3f : a % 6 == 2 ? 1e3f : 1.0f;
        for (int i = 0; i < n; ++i) {
            float v = unit() * scale;
            if (a == 3) v = 0.0f;             // one all-zero row
            if (a % 6 == 4) v = (i & 1) ? 2.5f : -2.5f;
            act[a][i] = v;
        }
        if (a % 6 == 5) act[a][(int)(next() % n)] *= 40.0f;
        q8k->from_float(act[a], q8[a], n);
        printf("    {\"nb\": %d, \"x\": \"", nb_of(a));
        for (int i = 0; i < n; ++i) {
            uint32_t b; memcpy(&b, &act[a][i], 4);
            printf("%08x", b);
        }
        printf("\"}%s\n", a + 1 < N_ACT ? "," : "");
    }
    printf("  ],\n  \"cases\": {\n");
    int nf = (int)(sizeof FMTS / sizeof FMTS[0]);
    for (int f = 0; f < nf; ++f) {
        const struct fmt * F = &FMTS[f];
        const struct ggml_type_traits_cpu * tr = ggml_get_type_traits_cpu(F->ty);
        printf("    \"%s\": [\n", F->name);
        for (int c = 0; c < N_CASE; ++c) {
            int a = c % N_ACT, nb = nb_of(a);
            static uint8_t w[MAX_NB * 210];
            for (int i = 0; i < nb * F->bytes; ++i) w[i] = (uint8_t)next();
            for (int b = 0; b < nb; ++b) {
                uint8_t * blk = w + b * F->bytes;
                int kind = c < 4 ? 3 : (c % 6 == 0 ? 0 : c % 6 == 1 ? 1 : c % 6 == 2 ? 2 : c % 6 == 3 ? 4 : 5);
                put16(blk + F->d_off, f16_bits(b == 0 && c == 5 ? 0 : kind));
                // d = 0 with ordinary mins: the result is the min term alone (its fma order shows).
                int kmin = c % 6 == 0 ? 3 : c % 5 == 4 ? 4 : kind;
                if (F->dmin_off >= 0) put16(blk + F->dmin_off, f16_bits(kmin));
                if (c % 4 == 3) memset(blk + F->sc_off, 0xFF, (size_t)F->sc_len);   // all scales/mins 63 (15)
                if (c % 8 == 7) memset(blk + F->sc_off, 0x00, (size_t)F->sc_len);   // all zero
            }
            float s = 0.0f;
            tr->vec_dot(nb * QK_K, &s, 0, w, 0, q8[a], 0, 1);
            uint32_t bits; memcpy(&bits, &s, 4);
            printf("      {\"act\": %d, \"w\": \"", a);
            for (int i = 0; i < nb * F->bytes; ++i) printf("%02x", w[i]);
            printf("\", \"dot\": \"%08x\"}%s\n", bits, c + 1 < N_CASE ? "," : "");
        }
        printf("    ]%s\n", f + 1 < nf ? "," : "");
    }
    printf("  }\n}\n");
    return 0;
}
EOF
inc="$src/ggml/include"
gcc -O2 -std=gnu11 -I"$inc" "$work/harness.c" -L"$lib" -lggml-cpu -lggml-base \
  -Wl,-rpath,"$lib" -o "$work/harness"
out="$here/tests/data/kquant/llamacpp_dots.json"
mkdir -p "$(dirname "$out")"
"$work/harness" >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
