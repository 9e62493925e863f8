/*
 * api_test [MODEL]: checks pagoda's C API from C, error paths included: NULL arguments,
 * a missing file, a buffer too small, invalid UTF-8, tokenize/detokenize, a session, a
 * callback that stops, a model loaded with fast numerics. Exits 0 when every check passes; scripts/capi.sh runs it under
 * AddressSanitizer (or valgrind) to catch leaks and bad accesses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pagoda.h"

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s (last error: \"%s\")\n", __FILE__, \
                    __LINE__, #cond, pagoda_last_error());                           \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* Requires status OK, or gives up (the rest depends on it). */
#define REQUIRE_OK(call)                                                                    \
    do {                                                                                    \
        pagoda_status st_ = (call);                                                         \
        if (st_ != PAGODA_OK) {                                                             \
            fprintf(stderr, "%s:%d: %s: status %d: %s\n", __FILE__, __LINE__, #call, (int)st_, \
                    pagoda_last_error());                                                   \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static int contains(const char *haystack, const char *needle) {
    return haystack && strstr(haystack, needle) != NULL;
}

struct collected {
    char text[4096];
    size_t len;
    int pieces;
    int stop_after; /* 0: never stop */
};

static int collect(const char *piece, size_t len, void *user_data) {
    struct collected *c = user_data;
    if (piece[len] != '\0' || c->len + len >= sizeof c->text) {
        return 1;
    }
    memcpy(c->text + c->len, piece, len);
    c->len += len;
    c->text[c->len] = '\0';
    c->pieces++;
    return c->stop_after > 0 && c->pieces >= c->stop_after;
}

int main(int argc, char **argv) {
    const char *env_model = getenv("PAGODA_MODEL");
    const char *path = argc > 1 ? argv[1]
                       : (env_model && *env_model) ? env_model
                                                   : "models/SmolLM2-135M-Instruct.Q4_1.gguf";

    /* --- NULL arguments and bad files, before any model exists. */
    pagoda_model *model = (pagoda_model *)&failures; /* must be overwritten with NULL */
    CHECK(pagoda_model_load(NULL, &model) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(model == NULL);
    CHECK(contains(pagoda_last_error(), "path"));
    CHECK(pagoda_model_load(path, NULL) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(contains(pagoda_last_error(), "out"));
    CHECK(pagoda_model_load("/nonexistent/missing.gguf", &model) == PAGODA_ERR_IO);
    CHECK(model == NULL);
    CHECK(contains(pagoda_last_error(), "missing.gguf"));
    CHECK(pagoda_model_load_from_memory(NULL, 10, &model) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(contains(pagoda_last_error(), "data"));
    static const uint8_t junk[] = "not a gguf file";
    CHECK(pagoda_model_load_from_memory(junk, sizeof junk, &model) == PAGODA_ERR_MODEL);
    CHECK(model == NULL);
    CHECK(pagoda_model_load_from_memory(junk, 0, &model) == PAGODA_ERR_MODEL);
    pagoda_model_free(NULL);
    pagoda_session_free(NULL);
    pagoda_string_free(NULL);

    REQUIRE_OK(pagoda_model_load(path, &model));
    CHECK(strcmp(pagoda_last_error(), "") == 0);

    /* --- tokenize / detokenize. */
    const char *text = "The capital of France is";
    size_t needed = 0;
    CHECK(pagoda_tokenize(model, text, NULL, 0, &needed) == PAGODA_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 2);
    uint32_t small[2];
    size_t len = 0;
    CHECK(pagoda_tokenize(model, text, small, 2, &len) == PAGODA_ERR_BUFFER_TOO_SMALL);
    CHECK(len == needed);
    CHECK(pagoda_tokenize(model, text, NULL, 5, &len) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(len == 0);
    CHECK(pagoda_tokenize(model, "caf\xe9", NULL, 0, &len) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(contains(pagoda_last_error(), "UTF-8"));
    CHECK(pagoda_tokenize(model, NULL, NULL, 0, &len) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(pagoda_tokenize(model, text, NULL, 0, NULL) == PAGODA_ERR_INVALID_ARGUMENT);

    uint32_t *ids = malloc(needed * sizeof *ids);
    REQUIRE_OK(pagoda_tokenize(model, text, ids, needed, &len));
    CHECK(len == needed);
    char *back = NULL;
    REQUIRE_OK(pagoda_detokenize(model, ids, len, &back));
    CHECK(contains(back, text));
    pagoda_string_free(back);
    free(ids);
    uint32_t unknown = 4000000000u;
    back = (char *)&failures;
    CHECK(pagoda_detokenize(model, &unknown, 1, &back) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(back == NULL);
    CHECK(pagoda_detokenize(model, NULL, 1, &back) == PAGODA_ERR_INVALID_ARGUMENT);
    REQUIRE_OK(pagoda_detokenize(model, NULL, 0, &back));
    CHECK(back && back[0] == '\0');
    pagoda_string_free(back);

    /* --- generate: callback text == returned text; stopping early. */
    pagoda_options opts = pagoda_options_default();
    CHECK(opts.max_tokens == -1 && opts.top_k == 40 && opts.n_ctx == 2048);
    opts.temperature = 0.0f;
    opts.max_tokens = 16;
    struct collected all = {{0}, 0, 0, 0};
    char *out = NULL;
    REQUIRE_OK(pagoda_generate(model, text, &opts, collect, &all, &out));
    CHECK(out && strcmp(out, all.text) == 0 && all.len > 0);
    pagoda_stats stats;
    REQUIRE_OK(pagoda_last_stats(&stats));
    CHECK(stats.generated_tokens == 16 && stats.stop == PAGODA_STOP_LENGTH);

    struct collected some = {{0}, 0, 0, 2};
    char *partial = NULL;
    REQUIRE_OK(pagoda_generate(model, text, &opts, collect, &some, &partial));
    CHECK(some.pieces == 2 && strcmp(partial, some.text) == 0);
    CHECK(strncmp(out, partial, strlen(partial)) == 0 && strlen(partial) < strlen(out));
    REQUIRE_OK(pagoda_last_stats(&stats));
    CHECK(stats.stop == PAGODA_STOP_CALLBACK);
    pagoda_string_free(partial);
    pagoda_string_free(out);

    out = (char *)&failures;
    CHECK(pagoda_generate(model, "caf\xe9", &opts, NULL, NULL, &out) ==
          PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL && contains(pagoda_last_error(), "prompt"));
    pagoda_options bad = opts;
    bad.n_ctx = 4;
    CHECK(pagoda_generate(model, text, &bad, NULL, NULL, NULL) == PAGODA_ERR_CONTEXT_FULL);
    bad = opts;
    bad.kv_type = 42;
    CHECK(pagoda_generate(model, text, &bad, NULL, NULL, NULL) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(contains(pagoda_last_error(), "kv_type"));
    bad = opts;
    bad.temperature = 0.8f;
    bad.top_p = 3.0f;
    CHECK(pagoda_generate(model, text, &bad, NULL, NULL, NULL) == PAGODA_ERR_SAMPLER);

    /* --- numerics: a fast model generates (greedy), an unknown mode is refused. */
    pagoda_model *fast = NULL;
    REQUIRE_OK(pagoda_model_load_with_numerics(path, PAGODA_NUMERICS_FAST, &fast));
    char *fast_out = NULL;
    REQUIRE_OK(pagoda_generate(fast, text, &opts, NULL, NULL, &fast_out));
    REQUIRE_OK(pagoda_last_stats(&stats));
    CHECK(fast_out && fast_out[0] != '\0' && stats.generated_tokens == 16);
    pagoda_string_free(fast_out);
    pagoda_model_free(fast);
    fast = (pagoda_model *)&failures;
    CHECK(pagoda_model_load_with_numerics(path, 7, &fast) == PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(fast == NULL && contains(pagoda_last_error(), "numerics"));

    /* --- a session: two turns, one stopped early, outliving its model handle. */
    pagoda_session *session = NULL;
    REQUIRE_OK(pagoda_session_new(model, &opts, &session));
    char *reply = NULL;
    REQUIRE_OK(pagoda_session_chat(session, "My name is Ada.", &opts, NULL, NULL, &reply));
    CHECK(reply && reply[0] != '\0');
    pagoda_string_free(reply);
    pagoda_model_free(model); /* the session keeps the weights alive */
    model = NULL;
    struct collected turn = {{0}, 0, 0, 1};
    REQUIRE_OK(pagoda_session_chat(session, "What is my name?", &opts, collect, &turn, &reply));
    CHECK(turn.pieces == 1 && strcmp(reply, turn.text) == 0);
    pagoda_string_free(reply);
    size_t cached = 0;
    REQUIRE_OK(pagoda_session_len(session, &cached));
    CHECK(cached > 10);
    CHECK(pagoda_session_chat(session, NULL, &opts, NULL, NULL, NULL) ==
          PAGODA_ERR_INVALID_ARGUMENT);
    CHECK(contains(pagoda_last_error(), "user"));
    REQUIRE_OK(pagoda_session_chat(session, "Thanks.", &opts, NULL, NULL, NULL));
    REQUIRE_OK(pagoda_session_reset(session));
    REQUIRE_OK(pagoda_session_len(session, &cached));
    CHECK(cached == 0);
    pagoda_session_free(session);

    if (failures) {
        fprintf(stderr, "api_test: %d check(s) failed\n", failures);
        return 1;
    }
    printf("api_test: all checks passed (pagoda %s)\n", pagoda_version());
    return 0;
}
