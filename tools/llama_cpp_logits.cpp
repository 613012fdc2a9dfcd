// llama.cpp's logits of a token-id prompt and of a greedy continuation, for comparisons with impnb.
//
//   llama_cpp_logits MODEL.gguf N_NEW ID [ID ...]
//
// Runs the prompt ids in one llama_decode, prints "logits v0 v1 ..." (every vocabulary entry, %.9g) of the last
// prompt position, then N_NEW times: the argmax id ("token ID"), decoded as one token, and its logits line.
// CPU only, one thread, float32 KV cache and no flash attention (float32 attention), batch = context = prompt + N_NEW + 1. Build against a llama.cpp build (no other changes):
//   g++ -std=c++17 -O1 tools/llama_cpp_logits.cpp -I$LLAMA/include -I$LLAMA/ggml/include \
//       -L$LLAMA/build/bin -lllama -lggml -lggml-base -o llama_cpp_logits
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

static void print_logits(llama_context * ctx, int n_vocab, int pos) {
    const float * logits = llama_get_logits_ith(ctx, pos);
    std::printf("logits");
    for (int i = 0; i < n_vocab; ++i) {
        std::printf(" %.9g", logits[i]);
    }
    std::printf("\n");
}

static int argmax(llama_context * ctx, int n_vocab) {
    const float * logits = llama_get_logits_ith(ctx, -1);
    int best = 0;
    for (int i = 1; i < n_vocab; ++i) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s MODEL.gguf N_NEW ID [ID ...]\n", argv[0]);
        return 2;
    }
    const int n_new = std::atoi(argv[2]);
    std::vector<llama_token> ids;
    for (int i = 3; i < argc; ++i) {
        ids.push_back(std::atoi(argv[i]));
    }
    llama_backend_init();
    llama_model_params mparams = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mparams);
    if (model == nullptr) {
        std::fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = (uint32_t) (ids.size() + n_new + 1);
    cparams.n_threads = cparams.n_threads_batch = 1;
    cparams.type_k = cparams.type_v = GGML_TYPE_F32;  // float32 KV cache, as impnb's (the default is F16)
    cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;  // the CPU flash-attention path rounds to F16
    llama_context * ctx = llama_init_from_model(model, cparams);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    if (ctx == nullptr || llama_decode(ctx, llama_batch_get_one(ids.data(), (int32_t) ids.size())) != 0) {
        std::fprintf(stderr, "decoding the prompt failed\n");
        return 1;
    }
    print_logits(ctx, n_vocab, -1);
    for (int step = 0; step < n_new; ++step) {
        llama_token token = argmax(ctx, n_vocab);
        std::printf("token %d\n", token);
        if (llama_decode(ctx, llama_batch_get_one(&token, 1)) != 0) {
            std::fprintf(stderr, "decoding step %d failed\n", step);
            return 1;
        }
        print_logits(ctx, n_vocab, -1);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
