// libFuzzer target: arbitrary bytes as text -> tokenizer_encode with the real tokenizer.bin (loaded once).
// Checks: every id is a token of the vocabulary, no more ids than bytes, and decode(encode(x)) == x for
// every byte string (invalid UTF-8 is encoded byte by byte, so the round trip holds for all inputs).
// The tokenizer path is compiled in (-DTOKENIZER_PATH=...) or taken from $TOKENIZER_BIN.
// Build and run: tests/fuzz/run_fuzz.sh
#define RUN_C_NO_MAIN
#include "../../run.c"

#ifndef TOKENIZER_PATH
#define TOKENIZER_PATH "tokenizer.bin"
#endif

static Tokenizer g_tok;
static MappedFile g_file;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("TOKENIZER_BIN") ? getenv("TOKENIZER_BIN") : TOKENIZER_PATH;
    char err[ERR_LEN];
    if (map_file(&g_file, path, "tokenizer", err) != 0 || tokenizer_init(&g_tok, g_file.data, g_file.size, err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int *ids;
    size_t n;
    if (tokenizer_encode(&g_tok, data, size, &ids, &n) != 0) {
        fprintf(stderr, "tokenizer_encode failed on %zu bytes\n", size);
        abort();
    }
    if (n > size || (size > 0 && n == 0)) {
        fprintf(stderr, "%zu ids for %zu bytes\n", n, size);
        abort();
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        if (ids[i] < 0 || ids[i] >= tokenizer_vocab_size(&g_tok)) {
            fprintf(stderr, "id %d at %zu is outside the vocabulary\n", ids[i], i);
            abort();
        }
        const unsigned char *bytes = tokenizer_token_bytes(&g_tok, ids[i], &len);
        if (!bytes || len == 0 || len > size - at || memcmp(bytes, data + at, len) != 0) {
            fprintf(stderr, "decode(encode(x)) != x at token %zu (id %d), byte %zu\n", i, ids[i], at);
            abort();
        }
        at += len;
    }
    if (at != size) {
        fprintf(stderr, "decode(encode(x)) is %zu bytes, x is %zu\n", at, size);
        abort();
    }
    free(ids);
    return 0;
}
