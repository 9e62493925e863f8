// Greedy ids straight from libllama, the procedure of tests/data/llamacpp/greedy_dev.json:
// each prompt tokenized with llama_tokenize(add_special=true, parse_special=true), decoded
// whole in one llama_decode (n_ctx 2048, n_batch 2048, n_ubatch 512, 1 thread, default KV
// type and flash-attention setting), then N steps of argmax over the last position's logits
// (first maximum, as llama_sampler_init_greedy), each token fed back alone with
// llama_batch_get_one. Generation does not stop at end-of-generation tokens.
//
// Usage: llamacpp_greedy MODEL N_PREDICT [--no-repack] PROMPT_FILE...
// Prints one JSON object per prompt file (one line each) on stdout: prompt_ids,
// generated_ids, argmax_logits, runner_up_ids, runner_up_logits and the pieces as hex bytes
// (special tokens rendered). --no-repack loads the weights without llama.cpp's interleaved
// repacking (llama_model_params.use_extra_bufts = false, as llama-cli's --no-repack).
//
// Build (scripts/gen_preset_refs.sh does this): g++ -O2 -std=c++17 llamacpp_greedy.cpp
//   -I SRC/include -I SRC/ggml/include -L BUILD/bin -lllama -lggml -lggml-base
//   -Wl,-rpath,BUILD/bin -o llamacpp_greedy
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static void quiet(ggml_log_level, const char *, void *) {}

static void print_ids(const char * key, const std::vector<llama_token> & v) {
    printf("\"%s\":[", key);
    for (size_t i = 0; i < v.size(); i++) printf("%s%d", i ? "," : "", v[i]);
    printf("]");
}

static void print_floats(const char * key, const std::vector<float> & v) {
    printf("\"%s\":[", key);
    for (size_t i = 0; i < v.size(); i++) printf("%s%.9g", i ? "," : "", v[i]);
    printf("]");
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL N_PREDICT [--no-repack] PROMPT_FILE...\n", argv[0]);
        return 2;
    }
    const int n_predict = atoi(argv[2]);
    int first = 3;
    llama_model_params mp = llama_model_default_params();
    if (strcmp(argv[3], "--no-repack") == 0) { mp.use_extra_bufts = false; first = 4; }
    if (!getenv("LLAMACPP_GREEDY_VERBOSE")) llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    for (int a = first; a < argc; a++) {
        std::ifstream in(argv[a], std::ios::binary);
        std::stringstream ss; ss << in.rdbuf();
        const std::string text = ss.str();
        std::vector<llama_token> prompt(text.size() + 8);
        const int n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), prompt.data(),
                                     (int32_t) prompt.size(), true, true);
        if (n < 0) { fprintf(stderr, "tokenize failed: %s\n", argv[a]); return 1; }
        prompt.resize(n);

        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 2048; cp.n_batch = 2048; cp.n_ubatch = 512;
        cp.n_threads = 1; cp.n_threads_batch = 1;
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }

        std::vector<llama_token> gen, runner;
        std::vector<float> top, second;
        std::string pieces;
        std::vector<llama_token> batch_tokens = prompt;
        llama_batch batch = llama_batch_get_one(batch_tokens.data(), (int32_t) batch_tokens.size());
        for (int step = 0; step < n_predict; step++) {
            if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "llama_decode failed\n"); return 1; }
            const float * logits = llama_get_logits_ith(ctx, -1);
            int best = 0, next = -1;
            for (int t = 1; t < n_vocab; t++) if (logits[t] > logits[best]) best = t;
            for (int t = 0; t < n_vocab; t++)
                if (t != best && (next < 0 || logits[t] > logits[next])) next = t;
            gen.push_back(best); top.push_back(logits[best]);
            runner.push_back(next); second.push_back(logits[next]);
            char buf[256];
            const int len = llama_token_to_piece(vocab, best, buf, sizeof buf, 0, true);
            if (step) pieces += ",";
            pieces += "\"";
            for (int i = 0; i < len; i++) { char h[4]; snprintf(h, sizeof h, "%02x", (unsigned char) buf[i]); pieces += h; }
            pieces += "\"";
            batch_tokens.assign(1, best);
            batch = llama_batch_get_one(batch_tokens.data(), 1);
        }
        printf("{");
        print_ids("prompt_ids", prompt); printf(",");
        print_ids("generated_ids", gen); printf(",");
        print_floats("argmax_logits", top); printf(",");
        print_ids("runner_up_ids", runner); printf(",");
        print_floats("runner_up_logits", second); printf(",");
        printf("\"pieces_hex\":[%s]}\n", pieces.c_str());
        fflush(stdout);
        llama_free(ctx);
    }
    llama_model_free(model);
    return 0;
}
