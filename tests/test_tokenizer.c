// Tests for the GPT-2 tokenizer (the tokenizer section of run.c).
//
//   make tests/test_tokenizer && tests/test_tokenizer tokenizer.bin tests/tokenizer_fixture.txt
//
// Prints "ok - name" / "not ok - name: why" per assertion and "# ..." comment lines (timings are only
// informational). Exit status 1 if anything failed.
//
// Checks: every fixture case encodes to the expected ids and decodes back to the same bytes; random byte
// strings (valid and invalid UTF-8) round-trip; 1 MB pieces work; tokenizer_init rejects truncated and
// corrupted files with a one-line message and survives random corruption (run once with
// -fsanitize=address,undefined to make "survives" mean "no out-of-bounds access").
#define RUN_C_NO_MAIN
#include "../run.c"

static int tt_failures = 0;

static void tt_result(int ok, const char *name, const char *why) {
    if (ok) printf("ok - %s\n", name);
    else {
        printf("not ok - %s: %s\n", name, why);
        tt_failures++;
    }
}

static double tt_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t tt_rng(uint64_t *s) { // xorshift64*
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

// Reads a whole file into an exact-size malloc'd buffer (so AddressSanitizer sees any overread).
static unsigned char *tt_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    if (!buf) return NULL;
    unsigned char *exact = malloc(n ? n : 1);
    if (exact) memcpy(exact, buf, n);
    free(buf);
    *size = n;
    return exact;
}

// Concatenated bytes of ids; returns 0 if they equal want[0..want_len).
static int tt_decode_equals(const Tokenizer *t, const int *ids, size_t n_ids, const unsigned char *want,
                            size_t want_len) {
    size_t at = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t len;
        const unsigned char *b = tokenizer_token_bytes(t, ids[i], &len);
        if (!b || len > want_len - at || memcmp(b, want + at, len) != 0) return -1;
        at += len;
    }
    return at == want_len ? 0 : -1;
}

// Encodes a copy of text in an exact-size buffer, checks the round trip; returns the ids (caller frees).
static int tt_encode(const Tokenizer *t, const unsigned char *text, size_t len, int **ids, size_t *n_ids,
                     double *ms, char *why, size_t whylen) {
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) {
        snprintf(why, whylen, "out of memory in the test");
        return -1;
    }
    if (len) memcpy(copy, text, len);
    double t0 = tt_now_ms();
    int rc = tokenizer_encode(t, copy, len, ids, n_ids);
    if (ms) *ms = tt_now_ms() - t0;
    if (rc != 0) {
        free(copy);
        snprintf(why, whylen, "tokenizer_encode failed");
        return -1;
    }
    rc = tt_decode_equals(t, *ids, *n_ids, copy, len);
    free(copy);
    if (rc != 0) {
        snprintf(why, whylen, "decode(encode(x)) != x");
        free(*ids);
        *ids = NULL;
        return -1;
    }
    return 0;
}

static int tt_hex(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// ---------------------------------------------------------------------------------------------------------
// fixture: lines "HEX<TAB>ids[<TAB>marker]", '#' comments, "# group: NAME"

static void tt_fixture(const Tokenizer *t, const char *path) {
    size_t size;
    unsigned char *data = tt_read_file(path, &size);
    if (!data) {
        tt_result(0, "read tokenizer fixture", "cannot read the file");
        return;
    }
    char group[64] = "";
    size_t n_cases = 0, n_marked = 0;
    unsigned char *text = malloc(size / 2 + 1);
    int *want = malloc((size / 2 + 1) * sizeof(int));
    if (!text || !want) {
        tt_result(0, "read tokenizer fixture", "out of memory");
        free(text);
        free(want);
        free(data);
        return;
    }
    size_t line_no = 0;
    for (size_t pos = 0; pos < size;) {
        size_t end = pos;
        while (end < size && data[end] != '\n') end++;
        line_no++;
        const char *line = (const char *)data + pos;
        size_t line_len = end - pos;
        pos = end + 1;
        if (line_len == 0) continue;
        if (line[0] == '#') {
            if (line_len > 9 && memcmp(line, "# group: ", 9) == 0) {
                size_t g = line_len - 9 < sizeof(group) - 1 ? line_len - 9 : sizeof(group) - 1;
                memcpy(group, line + 9, g);
                group[g] = '\0';
            }
            continue;
        }
        char name[160], why[200];
        snprintf(name, sizeof name, "tokenizer fixture line %zu [%s]", line_no, group);
        // column 1: hex bytes
        size_t i = 0, text_len = 0;
        int bad = 0;
        while (i < line_len && line[i] != '\t') {
            int hi = tt_hex(line[i]), lo = i + 1 < line_len ? tt_hex(line[i + 1]) : -1;
            if (hi < 0 || lo < 0) {
                bad = 1;
                break;
            }
            text[text_len++] = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        // column 2: ids; column 3: optional marker
        size_t n_want = 0;
        if (!bad && i < line_len) i++;
        while (!bad && i < line_len && line[i] != '\t') {
            if (line[i] == ' ') {
                i++;
                continue;
            }
            long v = 0;
            int digits = 0;
            while (i < line_len && line[i] >= '0' && line[i] <= '9' && digits < 9) v = v * 10 + (line[i++] - '0'), digits++;
            if (digits == 0 || (i < line_len && line[i] != ' ' && line[i] != '\t')) bad = 1;
            else want[n_want++] = (int)v;
        }
        if (!bad && i < line_len) n_marked++;
        n_cases++;
        if (bad) {
            tt_result(0, name, "malformed fixture line");
            continue;
        }
        int *ids = NULL;
        size_t n_ids = 0;
        double ms;
        if (tt_encode(t, text, text_len, &ids, &n_ids, &ms, why, sizeof why) != 0) {
            tt_result(0, name, why);
            continue;
        }
        if (n_ids != n_want || memcmp(ids, want, n_ids * sizeof(int)) != 0) {
            size_t k = 0;
            while (k < n_ids && k < n_want && ids[k] == want[k]) k++;
            snprintf(why, sizeof why, "got %zu ids, want %zu; first difference at index %zu (got %d, want %d)",
                     n_ids, n_want, k, k < n_ids ? ids[k] : -1, k < n_want ? want[k] : -1);
            tt_result(0, name, why);
        } else {
            tt_result(1, name, "");
        }
        if (text_len >= 10000)
            printf("# time: fixture line %zu [%s]: %zu bytes -> %zu ids in %.2f ms\n", line_no, group, text_len,
                   n_ids, ms);
        free(ids);
    }
    printf("# fixture: %zu cases (%zu with a marker column)\n", n_cases, n_marked);
    tt_result(n_cases >= 200, "tokenizer fixture has at least 200 cases", "too few cases");
    free(text);
    free(want);
    free(data);
}

// ---------------------------------------------------------------------------------------------------------
// round trips of random and huge inputs

static void tt_random_roundtrips(const Tokenizer *t) {
    static const char *const pieces[] = {" ", "  ", "\t", "\n", "\r\n", "\xc2\xa0", "\xc2\x85", "\xef\xbb\xbf",
                                         "\xe3\x80\x80", "a", "The", " the", "'s", "'LL", "'", "7", "42",
                                         "\xd9\xa3", "\xc3\xa9", "e\xcc\x81", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                                         "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "!", "...", "<|endoftext|>"};
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    unsigned char buf[512];
    char why[200] = "";
    int ok = 1;
    for (int iter = 0; iter < 3000 && ok; iter++) {
        size_t len = 0;
        int parts = (int)(tt_rng(&s) % 40);
        for (int p = 0; p < parts; p++) {
            uint64_t r = tt_rng(&s);
            if (r % 4 == 0) { // a random byte: often invalid UTF-8
                buf[len++] = (unsigned char)(r >> 8);
            } else {
                const char *piece = pieces[(r >> 8) % (sizeof(pieces) / sizeof(pieces[0]))];
                size_t pl = strlen(piece);
                memcpy(buf + len, piece, pl);
                len += pl;
            }
        }
        int *ids;
        size_t n_ids;
        if (tt_encode(t, buf, len, &ids, &n_ids, NULL, why, sizeof why) != 0) ok = 0;
        else free(ids);
    }
    tt_result(ok, "tokenizer: 3000 random byte strings (valid and invalid UTF-8) round-trip", why);
}

static void tt_huge(const Tokenizer *t, const char *name, const char *unit, size_t total) {
    size_t ul = strlen(unit), n = 0;
    unsigned char *text = malloc(total + 8);
    char label[160], why[200] = "";
    snprintf(label, sizeof label, "tokenizer: %s round-trips", name);
    if (!text) {
        tt_result(0, label, "out of memory in the test");
        return;
    }
    while (n + ul <= total) memcpy(text + n, unit, ul), n += ul;
    int *ids;
    size_t n_ids;
    double ms;
    int rc = tt_encode(t, text, n, &ids, &n_ids, &ms, why, sizeof why);
    tt_result(rc == 0, label, why);
    if (rc == 0) {
        printf("# time: %s: %zu bytes -> %zu ids in %.2f ms\n", name, n, n_ids, ms);
        free(ids);
    }
    free(text);
}

// ---------------------------------------------------------------------------------------------------------
// tokenizer_init on bad files

static uint32_t tt_get(const unsigned char *p, size_t off) { return read_u32(p + off); }

static void tt_put(unsigned char *p, size_t off, uint32_t v) {
    p[off] = (unsigned char)v, p[off + 1] = (unsigned char)(v >> 8);
    p[off + 2] = (unsigned char)(v >> 16), p[off + 3] = (unsigned char)(v >> 24);
}

// Expects init to fail on data[0..size) with a one-line message.
static void tt_expect_reject(const char *what, const unsigned char *data, size_t size) {
    unsigned char *copy = malloc(size ? size : 1);
    char name[160], err[ERR_LEN], why[ERR_LEN + 64];
    snprintf(name, sizeof name, "tokenizer_init rejects %s", what);
    if (!copy) {
        tt_result(0, name, "out of memory in the test");
        return;
    }
    if (size) memcpy(copy, data, size);
    memset(err, 'x', sizeof err);
    Tokenizer t;
    int rc = tokenizer_init(&t, copy, size, err);
    if (rc == 0) {
        tokenizer_free(&t);
        tt_result(0, name, "accepted");
    } else if (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0' || strchr(err, '\n')) {
        tt_result(0, name, "the error message is not one non-empty line");
    } else {
        snprintf(why, sizeof why, "%s", err);
        tt_result(1, name, "");
        printf("#   %s\n", why);
    }
    free(copy);
}

// A tiny hand-made tokenizer.bin: the 256 byte tokens, then the extra tokens, merges and ranges given.
static unsigned char *tt_make_file(const char *const *extra, int n_extra, const uint32_t (*merges)[3], int n_merges,
                                   size_t *size) {
    uint32_t v = 256 + (uint32_t)n_extra, nbytes = 256;
    for (int i = 0; i < n_extra; i++) nbytes += (uint32_t)strlen(extra[i]);
    static const uint32_t ranges[4][2] = {{'A', 'Z'}, {'a', 'z'}, {'0', '9'}, {' ', ' '}}; // 2 L, 1 N, 1 S
    *size = 36 + 4 * ((size_t)v + 1) + 12 * (size_t)n_merges + 8 * 4 + nbytes;
    unsigned char *p = calloc(*size, 1);
    if (!p) return NULL;
    memcpy(p, "GTOK", 4);
    uint32_t hdr[8] = {1, v, (uint32_t)n_merges, 0x0E0000, 2, 1, 1, nbytes};
    for (int i = 0; i < 8; i++) tt_put(p, 4 + 4 * (size_t)i, hdr[i]);
    size_t off = 36, blob = *size - nbytes;
    uint32_t o = 0;
    for (uint32_t i = 0; i <= v; i++) {
        tt_put(p, off + 4 * (size_t)i, o);
        if (i < 256) p[blob + o++] = (unsigned char)i;
        else if (i < v) {
            size_t l = strlen(extra[i - 256]);
            memcpy(p + blob + o, extra[i - 256], l);
            o += (uint32_t)l;
        }
    }
    off += 4 * ((size_t)v + 1);
    for (int m = 0; m < n_merges; m++)
        for (int k = 0; k < 3; k++) tt_put(p, off + 12 * (size_t)m + 4 * (size_t)k, merges[m][k]);
    off += 12 * (size_t)n_merges;
    for (int r = 0; r < 4; r++) tt_put(p, off + 8 * (size_t)r, ranges[r][0]), tt_put(p, off + 8 * (size_t)r + 4, ranges[r][1]);
    return p;
}

static void tt_handmade(void) {
    // a valid minimal file: "ab" = a + b, "abc" = ab + c
    static const char *const extra[] = {"ab", "abc", "ab"};
    static const uint32_t ok_merges[][3] = {{'a', 'b', 256}, {256, 'c', 257}};
    size_t size;
    unsigned char *p = tt_make_file(extra, 2, ok_merges, 2, &size);
    Tokenizer t;
    char err[ERR_LEN];
    int ok = 0;
    if (p && tokenizer_init(&t, p, size, err) == 0) {
        int *ids;
        size_t n;
        const unsigned char text[] = "xabc abcab";
        if (tokenizer_encode(&t, text, sizeof text - 1, &ids, &n) == 0) {
            // pieces "xabc" " abcab": x abc | ' ' abc ab
            static const int want[] = {'x', 257, ' ', 257, 256};
            ok = n == 5 && memcmp(ids, want, sizeof want) == 0;
            free(ids);
        }
        tokenizer_free(&t);
    }
    tt_result(ok, "tokenizer_init accepts a minimal hand-made file and encodes with it", "wrong result");
    free(p);

    struct {
        const char *what;
        int n_extra;
        uint32_t merges[2][3];
        int n_merges;
    } bad[] = {
        {"a merge whose result is not left+right", 2, {{'a', 'b', 256}, {256, 'd', 257}}, 2},
        {"a merge that uses a token made by a later merge", 2, {{256, 'c', 257}, {'a', 'b', 256}}, 2},
        {"two merges of the same pair", 3, {{'a', 'b', 256}, {'a', 'b', 258}}, 2},
        {"two merges producing the same token", 3, {{'a', 'b', 256}, {'a', 'b', 256}}, 2},
        {"a merge producing a single-byte token", 2, {{'a', 'b', 'a'}, {0, 0, 0}}, 1},
        {"a merge with an id out of range", 2, {{'a', 'b', 999}, {0, 0, 0}}, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = tt_make_file(extra, bad[i].n_extra, (const uint32_t(*)[3])bad[i].merges, bad[i].n_merges, &size);
        if (p) tt_expect_reject(bad[i].what, p, size);
        free(p);
    }
    // more merges than V - 256 allows
    static const uint32_t three[][3] = {{'a', 'b', 256}, {256, 'c', 257}, {'a', 'a', 258}};
    p = tt_make_file(extra, 2, three, 3, &size);
    if (p) tt_expect_reject("more merges than new tokens", p, size);
    free(p);
}

static void tt_corruptions(const unsigned char *good, size_t size) {
    unsigned char *p = malloc(size), *bigger = malloc(size + 1);
    if (!p || !bigger) {
        free(p);
        free(bigger);
        tt_result(0, "tokenizer_init corruption tests", "out of memory");
        return;
    }
    uint32_t v = tt_get(good, 8), m = tt_get(good, 12), nl = tt_get(good, 20), nn = tt_get(good, 24);
    uint32_t ns = tt_get(good, 28);
    size_t off_offsets = 36, off_merges = off_offsets + 4 * ((size_t)v + 1), off_ranges = off_merges + 12 * (size_t)m;
    size_t off_numbers = off_ranges + 8 * (size_t)nl, off_spaces = off_numbers + 8 * (size_t)nn;
    size_t off_bytes = off_spaces + 8 * (size_t)ns;

    tt_expect_reject("an empty file", good, 0);
    tt_expect_reject("a 35-byte file", good, 35);
    tt_expect_reject("a file truncated by one byte", good, size - 1);
    tt_expect_reject("a file truncated to half", good, size / 2);
    memcpy(bigger, good, size);
    bigger[size] = 0;
    tt_expect_reject("a file with one extra byte", bigger, size + 1);
    free(bigger);
#define TT_CORRUPT(what, stmt)                                                                                     \
    do {                                                                                                           \
        memcpy(p, good, size);                                                                                     \
        stmt;                                                                                                      \
        tt_expect_reject(what, p, size);                                                                           \
    } while (0)
    TT_CORRUPT("a bad magic", p[0] = 'X');
    TT_CORRUPT("version 2", tt_put(p, 4, 2));
    TT_CORRUPT("a vocabulary size one too large", tt_put(p, 8, v + 1));
    TT_CORRUPT("a vocabulary size of 2^31", tt_put(p, 8, 0x80000000u));
    TT_CORRUPT("more merges than tokens", tt_put(p, 12, v));
    TT_CORRUPT("a huge range count", tt_put(p, 20, 0xFFFFFFFFu));
    TT_CORRUPT("an empty token (offsets not increasing)", tt_put(p, off_offsets + 4 * 100, tt_get(p, off_offsets + 4 * 99)));
    TT_CORRUPT("a token offset past the end", tt_put(p, off_offsets + 4 * 5000, 0xFFFFFF00u));
    TT_CORRUPT("a merge id out of range", tt_put(p, off_merges, v));
    TT_CORRUPT("a merge result that is not left+right", tt_put(p, off_merges + 8, tt_get(p, off_merges + 12 + 8)));
    TT_CORRUPT("two tokens with the same single byte", p[off_bytes] = p[off_bytes + 1]);
    memcpy(p, good, size); // swap the first two letter ranges
    memcpy(p + off_ranges, good + off_ranges + 8, 8);
    memcpy(p + off_ranges + 8, good + off_ranges, 8);
    tt_expect_reject("letter ranges out of order", p, size);
    TT_CORRUPT("a range beyond U+10FFFF", tt_put(p, off_bytes - 4, 0x110000));
    TT_CORRUPT("a range with first > last", tt_put(p, off_spaces, tt_get(p, off_spaces + 4) + 1));
    TT_CORRUPT("a letter that is also a number", tt_put(p, off_numbers + 4, 'A'));
    { // the first merge whose operand is merge 0's result, swapped with merge 0
        uint32_t r0 = tt_get(good, off_merges + 8), k = 1;
        while (k < m && tt_get(good, off_merges + 12 * (size_t)k) != r0 && tt_get(good, off_merges + 12 * (size_t)k + 4) != r0) k++;
        if (k < m) {
            memcpy(p, good, size);
            memcpy(p + off_merges, good + off_merges + 12 * (size_t)k, 12);
            memcpy(p + off_merges + 12 * (size_t)k, good + off_merges, 12);
            tt_expect_reject("merges out of order (a merge before the one making its operand)", p, size);
        }
    }
#undef TT_CORRUPT

    // every truncation of the first 4 KB and a spread of longer ones must fail, and never crash
    int all = 1;
    for (size_t n = 0; n < size; n = n < 4096 ? n + 1 : n + 4093) {
        Tokenizer t;
        char err[ERR_LEN];
        unsigned char *exact = malloc(n ? n : 1);
        if (!exact) break;
        memcpy(exact, good, n);
        if (tokenizer_init(&t, exact, n, err) == 0) {
            all = 0;
            tokenizer_free(&t);
        }
        free(exact);
    }
    tt_result(all, "tokenizer_init rejects every truncated copy tried", "a truncated file was accepted");

    // random byte corruption in the structured part: init must either reject or give a working tokenizer
    uint64_t s = 12345;
    int accepted = 0, rounds = 300, ok = 1;
    for (int r = 0; r < rounds; r++) {
        memcpy(p, good, size);
        int flips = 1 + (int)(tt_rng(&s) % 3);
        for (int f = 0; f < flips; f++) {
            uint64_t x = tt_rng(&s);
            size_t at = (size_t)(x % (off_bytes + 2000 < size ? off_bytes + 2000 : size)); // header .. token bytes
            p[at] ^= (unsigned char)(1u << ((x >> 40) % 8));
        }
        Tokenizer t;
        char err[ERR_LEN];
        if (tokenizer_init(&t, p, size, err) == 0) {
            accepted++;
            int *ids;
            size_t n;
            const unsigned char text[] = "Hello, world! \xc3\xa9t\xc3\xa9 123 \xf0\x9f\x98\x80 \xff";
            if (tokenizer_encode(&t, text, sizeof text - 1, &ids, &n) != 0 || tt_decode_equals(&t, ids, n, text, sizeof text - 1) != 0)
                ok = 0;
            if (ok) free(ids);
            tokenizer_free(&t);
        }
    }
    printf("# %d of %d randomly corrupted files were still consistent and accepted\n", accepted, rounds);
    tt_result(ok, "tokenizer_init survives random corruption (accepted files still round-trip)", "round trip failed");
    free(p);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s tokenizer.bin tests/tokenizer_fixture.txt\n", argv[0]);
        return 2;
    }
    size_t size;
    unsigned char *data = tt_read_file(argv[1], &size);
    if (!data) {
        printf("not ok - read %s: cannot read the file\n", argv[1]);
        return 1;
    }
    Tokenizer t;
    char err[ERR_LEN];
    if (tokenizer_init(&t, data, size, err) != 0) {
        printf("not ok - tokenizer_init accepts %s: %s\n", argv[1], err);
        free(data);
        return 1;
    }
    tt_result(1, "tokenizer_init accepts tokenizer.bin", "");
    {
        size_t len = 0;
        const unsigned char *eot = tokenizer_token_bytes(&t, GPT2_EOT, &len);
        const unsigned char *bang = tokenizer_token_bytes(&t, 0, &len);
        int ok = tokenizer_vocab_size(&t) == 50257 && bang && len == 1 && bang[0] == '!';
        eot = tokenizer_token_bytes(&t, GPT2_EOT, &len);
        ok = ok && eot && len == 13 && memcmp(eot, "<|endoftext|>", 13) == 0;
        ok = ok && !tokenizer_token_bytes(&t, -1, &len) && !tokenizer_token_bytes(&t, 50257, &len);
        tt_result(ok, "tokenizer vocab size, token bytes of 0 and GPT2_EOT, NULL out of range", "wrong value");
        int *ids = (int *)&ok;
        size_t n = 99;
        ok = tokenizer_encode(&t, (const unsigned char *)"", 0, &ids, &n) == 0 && n == 0;
        if (ids != (int *)&ok) free(ids);
        tt_result(ok, "tokenizer: the empty string gives no ids", "wrong result");
    }
    tt_fixture(&t, argv[2]);
    tt_random_roundtrips(&t);
    tt_huge(&t, "1 MB of spaces", " ", 1 << 20);
    tt_huge(&t, "1 MB of one letter", "a", 1 << 20);
    tt_huge(&t, "1 MB of varied letters", "qwertyuiopasdfghjklzxcvbnm", 1 << 20);
    tt_huge(&t, "1 MB of digits", "31415926535", 1 << 20);
    tt_huge(&t, "1 MB of invalid UTF-8", "\xff\x80", 1 << 20);
    tt_huge(&t, "1 MB of emoji", "\xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", 1 << 20);
    tt_huge(&t, "1 MB of prose", "The quick brown fox jumps over the lazy dog. ", 1 << 20);
    tokenizer_free(&t);
    tt_handmade();
    tt_corruptions(data, size);
    free(data);
    return tt_failures ? 1 : 0;
}
