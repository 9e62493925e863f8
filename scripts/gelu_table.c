// The GELU table of ggml-cpu (ggml_table_gelu_f16), built as llama.cpp's x86 build builds it:
// the expression of ggml/src/ggml-cpu/vec.h (b11312) compiled by GCC with -O3 -mfma, which
// contracts 1 + A*x*x into one fused multiply-add. Prints the SHA-256 input: the 65 536 f16
// results as little-endian u16 in table.bin. tests/model_gemma3.rs pins pagoda's table to it.
//   gcc -O3 -mavx2 -mfma -mf16c scripts/gelu_table.c -o /tmp/gelu_table -lm && /tmp/gelu_table && sha256sum table.bin
//   → 5372503d4d69aabb589feee6b59e80bf08cbcd71ffb6c43a8210622729ad32bf
//   (with -ffp-contract=off: 5f1b2a3be12260a4f9f9e64defae321d729592e300d95c49a830377f72078ace)
#include <stdio.h>
#include <math.h>
#include <immintrin.h>
#include <stdint.h>
static const float GELU_COEF_A     = 0.044715f;
static const float SQRT_2_OVER_PI  = 0.79788456080286535587989211986876f;
inline static float ggml_gelu_f32(float x) {
    return 0.5f*x*(1.0f + tanhf(SQRT_2_OVER_PI*x*(1.0f + GELU_COEF_A*x*x)));
}
int main(){
  FILE*f=fopen("table.bin","wb");
  for (int i=0;i<65536;i++){ uint16_t u=i; float x=_cvtsh_ss(u); uint16_t r=_cvtss_sh(ggml_gelu_f32(x),0); fwrite(&r,2,1,f);}
  fclose(f);
}
