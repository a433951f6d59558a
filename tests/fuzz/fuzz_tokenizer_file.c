// libFuzzer target: arbitrary bytes as a tokenizer.bin image -> tokenizer_init. It must accept or reject
// without reading outside the image (an exact-size heap copy, so ASan sees one byte too far); a rejection
// comes with a one-line message. An accepted tokenizer must encode a few fixed strings into ids of its
// vocabulary that decode back to the same bytes.
// Build and run: tests/fuzz/run_fuzz.sh
#define RUN_C_NO_MAIN
#include "../../run.c"
#include "one_line_error.h"

static const char *const samples[] = {
    "",
    "Hello world, it's the 2nd time we've met.",
    "  leading and trailing spaces   \n\n\t x",
    "th the  then 12 123 1234 'll 's",
    "Caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xce\x91\xce\xb2 \xf0\x9f\x98\x80 \xc2\xa0\xc2\x85",
    "\xff\xfe\x80 \xc3 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    Tokenizer t;
    char err[ERR_LEN];
    memset(err, 'x', sizeof err);
    err[0] = '\0';
    if (tokenizer_init(&t, buf, size, err) != 0) {
        require_one_line_error(err, sizeof err);
        free(buf);
        return 0;
    }
    unsigned char every_byte[256]; // each byte value once: every one needs its single-byte token
    for (int b = 0; b < 256; b++) every_byte[b] = (unsigned char)(255 - b);
    size_t n_samples = sizeof samples / sizeof *samples;
    for (size_t s = 0; s <= n_samples; s++) {
        const unsigned char *text = s < n_samples ? (const unsigned char *)samples[s] : every_byte;
        size_t len = s < n_samples ? strlen(samples[s]) : sizeof every_byte, n, at = 0;
        int *ids;
        if (tokenizer_encode(&t, text, len, &ids, &n) != 0) {
            fprintf(stderr, "tokenizer_encode failed\n");
            abort();
        }
        for (size_t i = 0; i < n; i++) {
            size_t tl = 0;
            const unsigned char *bytes = tokenizer_token_bytes(&t, ids[i], &tl);
            if (!bytes || tl == 0 || tl > len - at || memcmp(bytes, text + at, tl) != 0) {
                fprintf(stderr, "sample %zu: decode(encode(x)) != x at token %zu (id %d)\n", s, i, ids[i]);
                abort();
            }
            at += tl;
        }
        if (at != len) {
            fprintf(stderr, "sample %zu: decode(encode(x)) is %zu bytes, x is %zu\n", s, at, len);
            abort();
        }
        free(ids);
    }
    tokenizer_free(&t);
    free(buf);
    return 0;
}
