// Token ids straight from libllama for exact byte strings (no shell quoting, no trailing-newline
// handling: each input file holds one string's bytes verbatim).
//
// Usage: llamacpp_tokenize MODEL FILE...
// Loads only the vocabulary (llama_model_params.vocab_only) and prints, per file, one JSON
// object (one line) on stdout:
//   ids                  llama_tokenize(add_special=false, parse_special=true)
//   ids_with_bos         llama_tokenize(add_special=true,  parse_special=true)  (BOS if the model's
//                        add_bos_token says so, EOS if add_eos_token)
//   ids_no_parse_special llama_tokenize(add_special=false, parse_special=false)
//   pieces_hex           llama_token_to_piece(id, lstrip 0, special=true) of each id of `ids`
//   detokenized_hex      llama_detokenize(ids, remove_special=false, unparse_special=true)
// (byte strings as lowercase hex).
//
// Build (scripts/gen_gemma3_refs.sh does this): g++ -O2 -std=c++17 llamacpp_tokenize.cpp
//   -I SRC/include -I SRC/ggml/include -L BUILD/bin -lllama -lggml -lggml-base
//   -Wl,-rpath,BUILD/bin -o llamacpp_tokenize
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static void quiet(ggml_log_level, const char *, void *) {}

static std::string hex(const char * p, size_t n) {
    std::string s;
    char h[4];
    for (size_t i = 0; i < n; i++) { snprintf(h, sizeof h, "%02x", (unsigned char) p[i]); s += h; }
    return s;
}

static std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text,
                                         bool add_special, bool parse_special) {
    std::vector<llama_token> ids(text.size() + 8);
    int n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                           add_special, parse_special);
    if (n < 0) {
        ids.resize(-n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                           add_special, parse_special);
        if (n < 0) { fprintf(stderr, "llama_tokenize failed\n"); exit(1); }
    }
    ids.resize(n);
    return ids;
}

static void print_ids(const char * key, const std::vector<llama_token> & v) {
    printf("\"%s\":[", key);
    for (size_t i = 0; i < v.size(); i++) printf("%s%d", i ? "," : "", v[i]);
    printf("]");
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL FILE...\n", argv[0]);
        return 2;
    }
    if (!getenv("LLAMACPP_TOKENIZE_VERBOSE")) llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    for (int a = 2; a < argc; a++) {
        std::ifstream in(argv[a], std::ios::binary);
        if (!in) { fprintf(stderr, "cannot read %s\n", argv[a]); return 1; }
        std::stringstream ss; ss << in.rdbuf();
        const std::string text = ss.str();
        const auto ids = tokenize(vocab, text, false, true);
        const auto with_bos = tokenize(vocab, text, true, true);
        const auto no_special = tokenize(vocab, text, false, false);

        std::string pieces;
        for (size_t i = 0; i < ids.size(); i++) {
            std::vector<char> buf(256);
            int len = llama_token_to_piece(vocab, ids[i], buf.data(), (int32_t) buf.size(), 0, true);
            if (len < 0) {
                buf.resize(-len);
                len = llama_token_to_piece(vocab, ids[i], buf.data(), (int32_t) buf.size(), 0, true);
            }
            pieces += (i ? ",\"" : "\"") + hex(buf.data(), len) + "\"";
        }
        std::vector<char> out(text.size() * 4 + 64);
        int n = llama_detokenize(vocab, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(),
                                 false, true);
        if (n < 0) {
            out.resize(-n);
            n = llama_detokenize(vocab, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(),
                                 false, true);
        }
        if (n < 0) { fprintf(stderr, "llama_detokenize failed\n"); return 1; }

        printf("{\"text_hex\":\"%s\",", hex(text.data(), text.size()).c_str());
        print_ids("ids", ids); printf(",");
        print_ids("ids_with_bos", with_bos); printf(",");
        print_ids("ids_no_parse_special", no_special); printf(",");
        printf("\"pieces_hex\":[%s],", pieces.c_str());
        printf("\"detokenized_hex\":\"%s\"}\n", hex(out.data(), n).c_str());
        fflush(stdout);
    }
    llama_model_free(model);
    return 0;
}
