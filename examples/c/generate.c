/*
 * generate [MODEL] [PROMPT] [N]: greedy generation through pagoda's C API.
 *
 * Streams the text of N tokens (default 32) after PROMPT (default "The capital of France
 * is") to stdout, then a newline, exactly as `pagoda run -p PROMPT -n N --temp 0` prints
 * it; timing goes to stderr. MODEL defaults to $PAGODA_MODEL, else
 * models/SmolLM2-135M-Instruct.Q4_1.gguf.
 *
 * Build (scripts/capi.sh does this):
 *   cc -O2 -Icapi/include examples/c/generate.c target/release/libpagoda.a \
 *      -lpthread -ldl -lm -o generate
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pagoda.h"

struct progress {
    size_t pieces;
    double first_piece; /* seconds since start, at the first piece */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int on_piece(const char *piece, size_t len, void *user_data) {
    struct progress *p = user_data;
    if (p->pieces++ == 0) {
        p->first_piece = now();
    }
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0; /* keep going */
}

static int fail(const char *what, pagoda_status status) {
    fprintf(stderr, "error: %s: %s (status %d)\n", what, pagoda_last_error(), (int)status);
    return 1;
}

int main(int argc, char **argv) {
    const char *env_model = getenv("PAGODA_MODEL");
    const char *path = argc > 1 ? argv[1]
                       : (env_model && *env_model) ? env_model
                                                   : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    const char *prompt = argc > 2 ? argv[2] : "The capital of France is";
    int n = argc > 3 ? atoi(argv[3]) : 32;

    double t0 = now();
    pagoda_model *model = NULL;
    pagoda_status st = pagoda_model_load(path, &model);
    if (st != PAGODA_OK) {
        return fail("load", st);
    }
    double t_loaded = now();

    pagoda_options opts = pagoda_options_default();
    opts.temperature = 0.0f; /* greedy */
    opts.max_tokens = n;

    struct progress progress = {0, 0.0};
    char *text = NULL;
    double t1 = now();
    st = pagoda_generate(model, prompt, &opts, on_piece, &progress, &text);
    double t2 = now();
    if (st != PAGODA_OK) {
        pagoda_model_free(model);
        return fail("generate", st);
    }
    putchar('\n');
    fflush(stdout);

    pagoda_stats stats;
    st = pagoda_last_stats(&stats);
    if (st != PAGODA_OK) {
        pagoda_string_free(text);
        pagoda_model_free(model);
        return fail("stats", st);
    }
    /* As `pagoda run`: tokens after the first over the time after the first (the prompt
     * pass computes the first token's logits). */
    double gen_s = progress.pieces > 0 ? t2 - progress.first_piece : 0.0;
    double tps = gen_s > 0.0 && stats.generated_tokens > 1
                     ? (double)(stats.generated_tokens - 1) / gen_s
                     : 0.0;
    fprintf(stderr,
            "pagoda %s (C API) | load %.2f s | total %.3f s | generated %zu tokens "
            "(%zu bytes), %.1f t/s\n",
            pagoda_version(), t_loaded - t0, t2 - t1, stats.generated_tokens,
            text ? strlen(text) : (size_t)0, tps);

    pagoda_string_free(text);
    pagoda_model_free(model);
    return 0;
}
