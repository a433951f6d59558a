/*
 * run.c -- GPT-2 inference in one C file, with a KV cache you can see and time.
 *
 * What this file is:
 *   - a complete GPT-2 forward pass (any size of the family) over weights that are mmapped, not copied;
 *   - one forward function for a chunk of tokens: the prompt goes through it once (prefill, T rows at once),
 *     then every generated token goes through it alone (decode, T = 1), appending one K and one V row per
 *     layer to the KV cache;
 *   - `--no-cache`, which throws the cache away at every step and recomputes the whole sequence with the
 *     same function, so the saving can be timed and the two paths checked to give identical tokens;
 *   - what is done with a KV cache beyond one run: stored smaller (--kv-type f16 or int8), saved and reused
 *     across runs (--prompt-cache), and shifted to generate past the context (--context-shift);
 *   - GPT-2's exact byte-level BPE tokenizer, a sampler, and a small command line.
 * What it is not: a training loop, a server, or fast on anything but the CPU it runs on.
 *
 * Read it top to bottom: the model file -> the KV cache -> the math as plain loops -> the forward pass ->
 * tokenizer -> sampler -> the prompt cache -> context shift -> generation -> command line. After main() comes
 * a fenced section of tuned kernels, faster twins of the plain loops, which a first reading may skip:
 * `./run --reference` runs the plain ones.
 * Shapes use C = n_embd, T = tokens in a chunk, V = vocab size, NH = heads, hs = C / NH. Needs only libc
 * and libm; OpenMP, when the compiler has it, splits the loops across cores.
 */
#define _GNU_SOURCE // MAP_POPULATE; everything else is POSIX
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) && defined(__AVX__)
#include <immintrin.h> // the tuned kernels' FMA and f16 / int8 conversions
#endif
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
static int omp_get_max_threads(void) { return 1; }
static void omp_set_num_threads(int n) { (void)n; }
#endif

// ----------------------------------------------------------------------------
// errors and small helpers

#define ERR_LEN 512 // every "char *err" below is a buffer of at least this many bytes

// Formats a one-line error message into err (used by code that must return, not exit: the loaders,
// which the fuzzers call).
static int fail(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

// For main's own errors: one line on stderr, exit status 1.
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// CPU time used so far by all the process's threads (0 if the system cannot tell).
static double cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t read_u32(const unsigned char *p) { // little-endian, any alignment
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// A read-only view of a whole file: mmapped, so the OS pages weights in on demand and shares them
// between processes; nothing is copied.
typedef struct {
    const unsigned char *data;
    size_t size;
} MappedFile;

static int map_file(MappedFile *f, const char *path, const char *what, char *err) {
    f->data = NULL;
    f->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail(err, "cannot open %s '%s': %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return fail(err, "cannot stat %s '%s': %s", what, path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return fail(err, "%s '%s' is a directory, not a file", what, path);
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
        close(fd);
        return fail(err, "%s '%s' is empty or not a regular file", what, path);
    }
    int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
    flags |= MAP_POPULATE; // fault every page in now, so that the first forward pass times compute, not paging
#endif
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, flags, fd, 0);
    close(fd); // the mapping stays valid after close
    if (p == MAP_FAILED) return fail(err, "cannot mmap %s '%s': %s", what, path, strerror(errno));
    f->data = p;
    f->size = (size_t)st.st_size;
    return 0;
}

static void unmap_file(MappedFile *f) {
    if (f->data) munmap((void *)f->data, f->size);
    f->data = NULL;
    f->size = 0;
}

// Reads a whole file (or stdin for "-") into a malloc'd, NUL-terminated buffer.
static int read_file(const char *path, char **out, size_t *len, char *err) {
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!fp) return fail(err, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, fp);
        if (n < cap - 1) break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) free(buf);
        buf = bigger;
        cap *= 2;
    }
    int bad = buf ? ferror(fp) : 0;
    if (fp != stdin) fclose(fp);
    if (!buf) return fail(err, "out of memory reading '%s'", path);
    if (bad) {
        free(buf);
        return fail(err, "cannot read '%s'", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

// ----------------------------------------------------------------------------
// the model file: config and weights
//
// model.bin, version 3, little-endian (written by export_gpt2.py):
//   bytes 0..255   header: char magic[4] = "GPT2"; uint32 version = 3; uint32 n_layer, n_head, n_embd,
//                  n_ctx, vocab_size; float32 layer_norm_epsilon; uint32 weight_type (0 f32, 1 f16, 2 int8);
//                  zeros up to byte 256. (Version 1 is the same without weight_type: all f32. Version 2
//                  differs from 3 only in int8 matrices, which it stored row after row.)
//   then the tensors, each starting at a multiple of 64 bytes (so SIMD loads from the mmap are aligned),
//   zero bytes between them, no padding after the last:
//     wte (V, C)   wpe (n_ctx, C)
//     per layer: ln_1.w (C)  ln_1.b (C)  c_attn.w (3C, C)  c_attn.b (3C)  attn c_proj.w (C, C)  c_proj.b (C)
//                ln_2.w (C)  ln_2.b (C)  c_fc.w (4C, C)    c_fc.b (4C)    mlp c_proj.w (C, 4C)  c_proj.b (C)
//     ln_f.w (C)  ln_f.b (C)
//   Matrices are stored (out, in): Hugging Face's Conv1D keeps (in, out), the exporter transposes them so
//   that each output's weights are one contiguous row, the layout a dot-product kernel streams fastest.
//   The LM head is wte itself (GPT-2 ties them).
//   The five matrices (wte and the four per layer, 99% of the bytes) are stored in weight_type; wpe,
//   biases and LayerNorm stay float32: they are small, and added straight into the residual stream.
//   An int8 matrix is blocks of 32 weights along a row, each with one IEEE half scale: weight = q * scale
//   ("Q8_0"). It is two arrays, each 64-byte aligned: q int8, then the scales, both with the rows in groups
//   of Q8_ROWS = 16 (zero rows pad the last group): for group g and block b, 512 bytes hold 4 weights of
//   each of the 16 rows, then the next 4, and so on, and 16 halves hold the 16 rows' scales. That is the
//   order in which an integer dot-product instruction (AVX-512 VNNI) multiplies 16 rows at once, so the
//   tuned kernel reads each group as one sequential stream; q8_index() is the layout as a formula.

#define MODEL_MAGIC "GPT2"
#define MODEL_VERSION 3
#define MODEL_HEADER_BYTES 256
#define TENSOR_ALIGN 64
#define Q8_BLOCK 32 // int8 weights share one scale per 32 consecutive weights of a row
#define Q8_ROWS 16  // int8 weight rows interleaved in a group (one per int32 lane of a 512-bit vector)

enum { WEIGHT_F32 = 0, WEIGHT_F16 = 1, WEIGHT_Q8 = 2 };
static const char *const WEIGHT_TYPE_NAME[] = {"f32", "f16", "int8"};

typedef struct {
    int n_layer;     // transformer blocks
    int n_head;      // attention heads per block
    int n_embd;      // C, the width of the residual stream
    int n_ctx;       // longest sequence the position table covers
    int vocab_size;  // V
    float ln_eps;    // layer norm epsilon
    int weight_type; // how the matrices are stored: WEIGHT_F32, WEIGHT_F16 or WEIGHT_Q8
} Config;

// A weight matrix (rows, cols) as stored in the file, read in place: no float copy is ever made.
typedef struct {
    int type;               // WEIGHT_F32, WEIGHT_F16 or WEIGHT_Q8
    const void *data;       // (rows, cols) float, IEEE half (uint16_t) or int8_t
    const uint16_t *scales; // int8 only: a half per block of Q8_BLOCK weights
    int cols;               // int8 only: the row length, which the interleaved layout needs
    int q8_rows;            // int8 only: rows interleaved per group, Q8_ROWS in model.bin, 1 (plain rows) in the KV cache
} Matrix;

typedef struct {
    const float *ln1_w, *ln1_b;     // (C)
    Matrix attn_w;                  // (3C, C) rows: q outputs, then k, then v
    const float *attn_b;            // (3C)
    Matrix attn_proj_w;             // (C, C)
    const float *attn_proj_b;       // (C)
    const float *ln2_w, *ln2_b;     // (C)
    Matrix fc_w;                    // (4C, C)
    const float *fc_b;              // (4C)
    Matrix fc_proj_w;               // (C, 4C)
    const float *fc_proj_b;         // (C)
} LayerWeights;

typedef struct {
    Matrix wte;            // (V, C) token embeddings, also the LM head
    const float *wpe;      // (n_ctx, C) position embeddings
    LayerWeights *layers;  // n_layer of them (the only allocation; the weights live in the mmap)
    const float *lnf_w, *lnf_b; // (C)
} Weights;

typedef struct {
    Config config;
    Weights weights;
    MappedFile file;
} Model;

static uint64_t align_up(uint64_t n) { return (n + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN; }

// Walks the tensor list in file order. With data == NULL it only measures: the final offset is the file
// size this config implies, which is how the header is checked against the real size before any pointer
// is handed out.
static const void *take(const unsigned char *data, uint64_t *offset, uint64_t bytes) {
    uint64_t start = align_up(*offset);
    *offset = start + bytes;
    return data ? data + start : NULL;
}

static const float *take_floats(const unsigned char *data, uint64_t *offset, uint64_t n) {
    return take(data, offset, n * sizeof(float));
}

static Matrix take_matrix(const unsigned char *data, uint64_t *offset, uint64_t rows, uint64_t cols, int type) {
    static const int bytes_per_weight[] = {4, 2, 1};
    if (type == WEIGHT_Q8) rows = (rows + Q8_ROWS - 1) / Q8_ROWS * Q8_ROWS; // whole groups
    Matrix m = {type, take(data, offset, rows * cols * bytes_per_weight[type]), NULL, (int)cols, Q8_ROWS};
    if (type == WEIGHT_Q8) m.scales = take(data, offset, rows * (cols / Q8_BLOCK) * sizeof(uint16_t));
    return m;
}

static uint64_t layout_tensors(const Config *c, const unsigned char *data, Weights *w) {
    uint64_t C = (uint64_t)c->n_embd, off = MODEL_HEADER_BYTES;
    int type = c->weight_type;
    Weights none = {0};
    LayerWeights scratch;
    if (!w) w = &none;
    w->wte = take_matrix(data, &off, (uint64_t)c->vocab_size, C, type);
    w->wpe = take_floats(data, &off, (uint64_t)c->n_ctx * C);
    for (int l = 0; l < c->n_layer; l++) {
        LayerWeights *L = w->layers ? &w->layers[l] : &scratch;
        L->ln1_w = take_floats(data, &off, C);
        L->ln1_b = take_floats(data, &off, C);
        L->attn_w = take_matrix(data, &off, 3 * C, C, type);
        L->attn_b = take_floats(data, &off, 3 * C);
        L->attn_proj_w = take_matrix(data, &off, C, C, type);
        L->attn_proj_b = take_floats(data, &off, C);
        L->ln2_w = take_floats(data, &off, C);
        L->ln2_b = take_floats(data, &off, C);
        L->fc_w = take_matrix(data, &off, 4 * C, C, type);
        L->fc_b = take_floats(data, &off, 4 * C);
        L->fc_proj_w = take_matrix(data, &off, C, 4 * C, type);
        L->fc_proj_b = take_floats(data, &off, C);
    }
    w->lnf_w = take_floats(data, &off, C);
    w->lnf_b = take_floats(data, &off, C);
    return off;
}

// Validates a model.bin image of `size` bytes and points m's weights into it. Trusts nothing: every field
// is range-checked before it is multiplied, and the size the config implies must equal the file's.
static int model_parse(Model *m, const unsigned char *data, size_t size, char *err) {
    memset(&m->weights, 0, sizeof m->weights);
    if (size < MODEL_HEADER_BYTES)
        return fail(err, "model file is too small (%zu bytes; the header alone is %d)", size, MODEL_HEADER_BYTES);
    if (memcmp(data, MODEL_MAGIC, 4) != 0)
        return fail(err, "not a model.bin (bad magic; expected \"GPT2\"); HINT: export one with: python3 export_gpt2.py gpt2 model.bin");
    uint32_t version = read_u32(data + 4);
    if (version < 1 || version > MODEL_VERSION)
        return fail(err, "unsupported model.bin version %u (this run reads versions 1 to %d); HINT: re-export with this checkout's export_gpt2.py", version, MODEL_VERSION);
    uint32_t f[5];
    for (int i = 0; i < 5; i++) f[i] = read_u32(data + 8 + 4 * i);
    float eps;
    memcpy(&eps, data + 28, sizeof eps);
    uint32_t type = version == 1 ? WEIGHT_F32 : read_u32(data + 32);
    // Generous bounds: far above GPT-2 XL (48 layers, 25 heads, 1600 wide, 1024 positions, 50257 tokens)
    // yet small enough that every size computed below fits easily in 64 bits.
    if (f[0] < 1 || f[0] > 4096) return fail(err, "bad model header: n_layer = %u (expected 1..4096)", f[0]);
    if (f[1] < 1 || f[1] > 4096) return fail(err, "bad model header: n_head = %u (expected 1..4096)", f[1]);
    if (f[2] < 1 || f[2] > 65536) return fail(err, "bad model header: n_embd = %u (expected 1..65536)", f[2]);
    if (f[2] % f[1] != 0) return fail(err, "bad model header: n_embd %u is not a multiple of n_head %u", f[2], f[1]);
    if (f[3] < 1 || f[3] > 1 << 20) return fail(err, "bad model header: n_ctx = %u (expected 1..1048576)", f[3]);
    if (f[4] < 1 || f[4] > 1 << 24) return fail(err, "bad model header: vocab_size = %u (expected 1..16777216)", f[4]);
    if (!(eps > 0.0f && eps < 1.0f)) return fail(err, "bad model header: layer_norm_epsilon = %g (expected 0 < eps < 1)", (double)eps);
    if (type > WEIGHT_Q8) return fail(err, "bad model header: weight type %u (expected 0 f32, 1 f16 or 2 int8)", type);
    if (type == WEIGHT_Q8 && version == 2)
        return fail(err, "this int8 model.bin is version 2, whose rows are not interleaved; HINT: re-export it with this checkout's export_gpt2.py --dtype int8");
    if (type == WEIGHT_Q8 && f[2] % Q8_BLOCK != 0)
        return fail(err, "bad model header: int8 weights need n_embd to be a multiple of %d, not %u", Q8_BLOCK, f[2]);
    for (int i = version == 1 ? 32 : 36; i < MODEL_HEADER_BYTES; i++)
        if (data[i] != 0) return fail(err, "bad model header: reserved byte %d is not zero (file written by a newer exporter?)", i);
    Config *c = &m->config;
    *c = (Config){(int)f[0], (int)f[1], (int)f[2], (int)f[3], (int)f[4], eps, (int)type};
    uint64_t expected = layout_tensors(c, NULL, NULL);
    if (expected != size)
        return fail(err, "model file size %zu does not match its config (%d layers, %d wide, %d positions, %d tokens, %s weights need %llu bytes)%s",
                    size, c->n_layer, c->n_embd, c->n_ctx, c->vocab_size, WEIGHT_TYPE_NAME[type],
                    (unsigned long long)expected, size < expected ? "; the file is truncated" : "");
    m->weights.layers = calloc((size_t)c->n_layer, sizeof(LayerWeights));
    if (!m->weights.layers) return fail(err, "out of memory for %d layer descriptors", c->n_layer);
    layout_tensors(c, data, &m->weights);
    return 0;
}

static int model_load(Model *m, const char *path, char *err) {
    memset(m, 0, sizeof *m);
    if (access(path, F_OK) != 0)
        return fail(err, "cannot open model '%s': %s (HINT: 'python3 export_gpt2.py gpt2 %s' downloads and converts "
                    "GPT-2; offline, 'make random-model' writes a random-weight one)", path, strerror(errno), path);
    if (map_file(&m->file, path, "model", err) != 0) return -1;
    if (model_parse(m, m->file.data, m->file.size, err) != 0) {
        unmap_file(&m->file);
        return -1;
    }
    return 0;
}

static void model_free(Model *m) {
    free(m->weights.layers);
    m->weights.layers = NULL;
    unmap_file(&m->file);
}

static uint64_t model_param_count(const Config *c) {
    uint64_t C = (uint64_t)c->n_embd;
    return (uint64_t)c->vocab_size * C + (uint64_t)c->n_ctx * C + 2 * C +
           (uint64_t)c->n_layer * (12 * C * C + 13 * C);
}

// ----------------------------------------------------------------------------
// weight types: what an f16 or an int8 weight means
//
// A decode step reads every weight once, so its speed is set by the bytes: f16 halves them, int8 (one
// byte per weight plus a 2-byte scale per 32) nearly quarters them. These functions are the definitions;
// the tuned kernels do the same arithmetic in registers, on the weights as they sit in the mmap.

// IEEE half -> float, exact: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023, bits;
    if (e == 0) return (sign ? -1.0f : 1.0f) * (float)m * 0x1p-24f; // zero and subnormals: m x 2^-24
    if (e == 31) bits = sign | 0x7F800000 | m << 13;                  // infinity and NaN
    else bits = sign | (e + 112) << 23 | m << 13;                     // rebias the exponent, 15 -> 127
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// float -> IEEE half, rounded to nearest even; beyond the half range gives infinity.
static uint16_t f32_to_f16(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    float a = fabsf(f);
    if (isnan(f)) return 0x7E00;
    if (a >= 65520.0f) return sign | 0x7C00; // rounds past the largest half, 65504: infinity
    if (a < 0x1p-14f) return sign | (uint16_t)rintf(a * 0x1p24f); // subnormal (rounds up into 0x400 exactly)
    int e;
    frexpf(a, &e);                                  // a = 0.5..1 x 2^e, so 1..2 x 2^(e-1)
    uint32_t m = (uint32_t)rintf(ldexpf(a, 11 - e)); // 1024..2048: 11 significant bits
    return sign | (uint16_t)(((uint32_t)(e - 1 + 15) << 10) + (m - 1024)); // m = 2048 carries into the exponent
}

// Where int8 weight (row, col) is stored: in group row / G (G = q8_rows), block col / 32, the 4-weight
// word (col % 32) / 4 of each of the group's G rows in turn. With G = 1 this is plain row-major order.
static size_t q8_index(const Matrix *w, size_t row, size_t col) {
    size_t G = (size_t)w->q8_rows, block = row / G * (w->cols / Q8_BLOCK) + col / Q8_BLOCK;
    return block * G * Q8_BLOCK + col % Q8_BLOCK / 4 * 4 * G + row % G * 4 + col % 4;
}

// Where the scale of int8 weight (row, col) is stored: the G rows' scales of a block sit side by side.
static size_t q8_scale_index(const Matrix *w, size_t row, size_t col) {
    size_t G = (size_t)w->q8_rows;
    return (row / G * (w->cols / Q8_BLOCK) + col / Q8_BLOCK) * G + row % G;
}

// Element i (row i / cols, column i % cols) of a matrix in any type, as a float.
static float weight_at(const Matrix *w, size_t i) {
    switch (w->type) {
    case WEIGHT_F16: return f16_to_f32(((const uint16_t *)w->data)[i]);
    case WEIGHT_Q8: {
        size_t row = i / (size_t)w->cols, col = i % (size_t)w->cols;
        return (float)((const int8_t *)w->data)[q8_index(w, row, col)] * f16_to_f32(w->scales[q8_scale_index(w, row, col)]);
    }
    default: return ((const float *)w->data)[i];
    }
}

// Row r of w (n columns) as floats: an embedding lookup reads wte this way.
static void dequantize_row(const Matrix *w, size_t r, int n, float *out) {
    for (int i = 0; i < n; i++) out[i] = weight_at(w, r * (size_t)n + i);
}

// n floats (n a multiple of Q8_BLOCK) -> int8 values and one half-precision scale per block, the way
// export_gpt2.py writes int8 weights: scale = max|x| / 127, q = x / scale rounded to nearest.
static void quantize_q8(const float *x, int n, int8_t *q, uint16_t *scales) {
    for (int b = 0; b < n / Q8_BLOCK; b++) {
        const float *xb = x + b * Q8_BLOCK;
        float amax = 0.0f;
        for (int i = 0; i < Q8_BLOCK; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax; // (fmaxf: a libm call)
        scales[b] = f32_to_f16(amax / 127.0f);
        float d = f16_to_f32(scales[b]);
        for (int i = 0; i < Q8_BLOCK; i++) {
            float v = d > 0.0f ? rintf(xb[i] / d) : 0.0f;
            q[b * Q8_BLOCK + i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
    }
}

// ----------------------------------------------------------------------------
// the KV cache
//
// Attention at position p needs the keys and values of every position 0..p. They depend only on the
// tokens up to their own position, so once computed they never change: keep them, and each new token
// costs one row of K and V per layer instead of recomputing the whole prefix.
//
//   k[layer][head][pos][hs], v[layer][head][pos][hs]    (hs = C / n_head numbers per head)
//   bytes per token = 2 (K and V) x n_layer x (bytes of one row of C numbers: n_head x hs)
//     f32  (the default): 2 x 12 x 768 x 4           = 73,728 bytes = 72 KiB for GPT-2 small,
//          so a full 1024-token context holds 72 MiB (GPT-2 XL: 2 x 48 x 1600 x 4 = 600 KiB/token);
//     f16  (--kv-type f16): 2 x 12 x 768 x 2          = 36,864 bytes;
//     int8 (--kv-type int8): 2 x 12 x (768 + 24 x 2)  = 19,584 bytes: one byte per number, plus a
//          half-precision scale per block of 32 numbers.
// The arrays are reserved for n_ctx positions but the OS only backs the pages written, so memory in use
// grows with len, which is what the summary reports.
//
// Each head's keys are one block of memory, position after position, because a head reads only its own:
// attention walks one head's n_ctx x hs matrix from start to end. (With the heads side by side in each
// position's row, a head read 256 bytes every 3 KB, a pattern the hardware prefetchers do not follow;
// README, "KV cache layout", has what it cost.)
//
// f16 and int8 rows are the weight formats above, so the kernels read the cache the way they read
// weights: a head's keys (or values) in a layer are a Matrix of n_ctx rows of hs numbers, converted to
// float inside the attention loops; no float copy of the cache is ever made. kv_cache_store() rounds
// each new row once, and a recomputed row (--no-cache) is rounded the same way, so cached and uncached
// runs stay identical for every type. int8 uses quantize_q8's blocks of 32 along a head's row, so it
// needs a head size that is a multiple of 32 (64 in every GPT-2); a block, not a whole head, shares a
// scale, so one large number costs precision to 31 others rather than to 63 (README, "KV cache types",
// has the measurement).

typedef struct {
    int n_layer, n_ctx, dim;       // dim = n_embd
    int n_head, head_size;         // dim = n_head x head_size
    int type;                      // WEIGHT_F32, WEIGHT_F16 or WEIGHT_Q8: how a row is stored (--kv-type)
    int len;                       // positions [0, len) hold valid keys and values
    void *k, *v;                   // (n_layer, n_head, n_ctx, head_size) floats, halves or int8
    uint16_t *k_scales, *v_scales; // int8 only: (n_layer, n_head, n_ctx, head_size / Q8_BLOCK) half scales
} KVCache;

static size_t kv_number_bytes(int type) { return type == WEIGHT_F32 ? 4 : type == WEIGHT_F16 ? 2 : 1; }

// Bytes of one stored K (or V) row of one layer, its scales included.
static size_t kv_row_bytes(const KVCache *kv) {
    return (size_t)kv->dim * kv_number_bytes(kv->type) + (kv->type == WEIGHT_Q8 ? (size_t)kv->dim / Q8_BLOCK * 2 : 0);
}

static size_t kv_bytes_per_token(const KVCache *kv) { return 2 * (size_t)kv->n_layer * kv_row_bytes(kv); }
static size_t kv_bytes_used(const KVCache *kv) { return (size_t)kv->len * kv_bytes_per_token(kv); }

// type WEIGHT_Q8 needs the head size to be a multiple of Q8_BLOCK (the caller checks it).
static void kv_cache_init(KVCache *kv, const Config *c, int type) {
    *kv = (KVCache){.n_layer = c->n_layer, .n_ctx = c->n_ctx, .dim = c->n_embd, .n_head = c->n_head,
                    .head_size = c->n_embd / c->n_head, .type = type};
    size_t numbers = (size_t)c->n_layer * c->n_ctx * c->n_embd;
    kv->k = xmalloc(numbers * kv_number_bytes(type), "the KV cache (keys)");
    kv->v = xmalloc(numbers * kv_number_bytes(type), "the KV cache (values)");
    if (type == WEIGHT_Q8) {
        kv->k_scales = xmalloc(numbers / Q8_BLOCK * sizeof(uint16_t), "the KV cache (key scales)");
        kv->v_scales = xmalloc(numbers / Q8_BLOCK * sizeof(uint16_t), "the KV cache (value scales)");
    }
}

static void kv_cache_free(KVCache *kv) {
    free(kv->k);
    free(kv->v);
    free(kv->k_scales);
    free(kv->v_scales);
    kv->k = kv->v = NULL;
    kv->k_scales = kv->v_scales = NULL;
}

// Element (layer, head, pos, 0) of a cache array, counted in numbers.
static size_t kv_first(const KVCache *kv, int layer, int head, int pos) {
    return (((size_t)layer * kv->n_head + head) * kv->n_ctx + pos) * kv->head_size;
}

// One head's keys or values in one layer as a (n_ctx, head_size) matrix: element j * head_size + i is
// number i of position j.
static Matrix kv_matrix(const KVCache *kv, const void *data, const uint16_t *scales, int layer, int head) {
    size_t first = kv_first(kv, layer, head, 0);
    return (Matrix){kv->type, (const char *)data + first * kv_number_bytes(kv->type),
                    scales ? scales + first / Q8_BLOCK : NULL, kv->head_size, 1};
}
static Matrix kv_keys(const KVCache *kv, int layer, int head) { return kv_matrix(kv, kv->k, kv->k_scales, layer, head); }
static Matrix kv_values(const KVCache *kv, int layer, int head) { return kv_matrix(kv, kv->v, kv->v_scales, layer, head); }

// Stores the float row x (dim numbers) at element `first` of a cache array, in the cache's type: the one
// rounding a cached number gets.
static void kv_store_row(int type, void *data, uint16_t *scales, size_t first, const float *x, int dim) {
    if (type == WEIGHT_F32) {
        memcpy((float *)data + first, x, (size_t)dim * sizeof(float));
    } else if (type == WEIGHT_F16) {
        uint16_t *h = (uint16_t *)data + first;
        for (int i = 0; i < dim; i++) h[i] = f32_to_f16(x[i]);
    } else {
        quantize_q8(x, dim, (int8_t *)data + first, scales + first / Q8_BLOCK);
    }
}

// Copies the K and V parts of T rows of qkv (T, 3C) into the cache at positions pos .. pos+T-1: each
// head's part of a row to that head's matrix.
static void kv_cache_store(KVCache *kv, int layer, int pos, int T, const float *qkv) {
    int C = kv->dim, hs = kv->head_size;
#pragma omp parallel for schedule(static) if (T >= 16 && kv->type != WEIGHT_F32) // rounding a long prompt
    for (int t = 0; t < T; t++)
        for (int h = 0; h < kv->n_head; h++) {
            size_t first = kv_first(kv, layer, h, pos + t);
            kv_store_row(kv->type, kv->k, kv->k_scales, first, qkv + (size_t)t * 3 * C + C + h * hs, hs);
            kv_store_row(kv->type, kv->v, kv->v_scales, first, qkv + (size_t)t * 3 * C + 2 * C + h * hs, hs);
        }
}

// ----------------------------------------------------------------------------
// the math, as plain loops
//
// Everything a GPT-2 layer computes, written the simplest way. This is the code to learn from, and it is
// real: `./run --reference` runs the whole engine on it. The default engine runs tuned twins of matmul,
// attention and gelu (the fenced section at the end of the file), which compute the same functions with
// the same results up to float rounding, many times faster; the tests hold the two sets to each other.
//
// One property matters for the KV cache and holds in both sets: an output row is computed by the same
// float operations whatever T is and wherever the row sits in the chunk. So a token's K and V come out
// bit-identical from a 500-token prefill, a 1-token decode step or a --no-cache recomputation, and the
// cached and uncached runs print the same text.

static void matmul_q8(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in, int n_out);

// out (T, n_out) = in (T, n_in) . w (n_out, n_in)^T + bias (n_out); bias may be NULL.
static void matmul(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in, int n_out) {
    if (w->type == WEIGHT_Q8) { // int8 weights are multiplied in integers: matmul_q8() below
        matmul_q8(out, in, w, bias, T, n_in, n_out);
        return;
    }
#pragma omp parallel for collapse(2) schedule(static)
    for (int t = 0; t < T; t++)
        for (int o = 0; o < n_out; o++) {
            const float *x = in + (size_t)t * n_in;
            float sum = 0.0f;
            for (int i = 0; i < n_in; i++) sum += x[i] * weight_at(w, (size_t)o * n_in + i);
            out[(size_t)t * n_out + o] = (bias ? bias[o] : 0.0f) + sum;
        }
}

// Inputs for int8 weights, rounded the way the weights are (quantize_q8's blocks of 32): values in q,
// and each block's scale, as a float, in d. A block never spans two rows (a row's n_in is a multiple of
// 32), so T rows one after another are simply T x n_in numbers.
static void quantize_input(const float *x, int n, int8_t *q, float *d) {
    for (int b = 0; b < n / Q8_BLOCK; b++) {
        uint16_t half;
        quantize_q8(x + b * Q8_BLOCK, Q8_BLOCK, q + b * Q8_BLOCK, &half);
        d[b] = f16_to_f32(half);
    }
}

// Row `row` of int8 weights times a quantized input row. A block's 32 products of two int8 numbers are
// summed exactly in integers; only the block's total meets the two scales, in one fused multiply-add per
// block, blocks in order. Exact integer sums let the tuned twin do 64 multiply-adds per instruction and
// still match this loop bit for bit (any order of the integer adds gives the same total).
static float dot_q8(const int8_t *xq, const float *xd, const Matrix *w, size_t row, int n) {
    size_t word_step = 4 * (size_t)w->q8_rows; // from one 4-weight word of a row's block to its next
    float sum = 0.0f;
    for (int b = 0; b < n / Q8_BLOCK; b++) {
        const int8_t *q = (const int8_t *)w->data + q8_index(w, row, (size_t)b * Q8_BLOCK), *x = xq + b * Q8_BLOCK;
        int32_t isum = 0;
        for (int s = 0; s < Q8_BLOCK / 4; s++)
            for (int j = 0; j < 4; j++) isum += x[4 * s + j] * q[s * word_step + j];
        sum = fmaf((float)isum, xd[b] * f16_to_f32(w->scales[q8_scale_index(w, row, (size_t)b * Q8_BLOCK)]), sum);
    }
    return sum;
}

// matmul() for int8 weights: the inputs are quantized too, per block of 32, and multiplied in integers
// (llama.cpp's Q8_0 x Q8_0). This rounds the activations as well as the weights; README, "Weight types",
// has what it costs in accuracy and buys in speed.
static void matmul_q8(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in, int n_out) {
    int nb = n_in / Q8_BLOCK;
    int8_t *xq = xmalloc((size_t)T * n_in, "quantized input");
    float *xd = xmalloc((size_t)T * nb * sizeof(float), "quantized input");
    quantize_input(in, T * n_in, xq, xd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int t = 0; t < T; t++)
        for (int o = 0; o < n_out; o++)
            out[(size_t)t * n_out + o] = (bias ? bias[o] : 0.0f) + dot_q8(xq + (size_t)t * n_in, xd + (size_t)t * nb, w, o, n_in);
    free(xq);
    free(xd);
}

// out = (in - mean) / sqrt(var + eps) * weight + bias, row by row over T rows of C.
static void layernorm(float *out, const float *in, const float *weight, const float *bias, int T, int C, float eps) {
#pragma omp parallel for schedule(static) if (T >= 16) // a few rows are cheaper than waking a thread
    for (int t = 0; t < T; t++) {
        const float *x = in + (size_t)t * C;
        float *y = out + (size_t)t * C;
        float mean = 0.0f, var = 0.0f;
        for (int i = 0; i < C; i++) mean += x[i];
        mean /= (float)C;
        for (int i = 0; i < C; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= (float)C;
        float rstd = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < C; i++) y[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
    }
}

// GPT-2's GELU, the tanh approximation: 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))), in place.
static void gelu(float *x, size_t n) {
    const float s = 0.7978845608028654f; // sqrt(2/pi)
    for (size_t i = 0; i < n; i++) {
        float u = x[i];
        x[i] = 0.5f * u * (1.0f + tanhf(s * (u + 0.044715f * u * u * u)));
    }
}

// x[0..n) becomes softmax(x): subtracting the max first keeps expf from overflowing.
static void softmax(float *x, int n) {
    float max = x[0], sum = 0.0f;
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

static void add_inplace(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

// Causal self-attention for T new tokens at positions pos .. pos+T-1, over the KV cache.
// qkv (T, 3C) holds the new tokens' queries (its first C columns); the cache already holds the keys and
// values of positions 0 .. pos+T-1 of this layer, the new ones included. out (T, C): heads side by side.
// scores: room for n_ctx floats per thread. The cache's numbers are read in their stored type (f32, f16
// or int8) by weight_at(), one at a time, right where they are used.
static void attention(float *out, const float *qkv, const KVCache *kv, int layer, int T, int pos, int n_head,
                      float *scores) {
    int C = kv->dim, hs = C / n_head;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static)
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_head; h++) {
            const Matrix keys = kv_keys(kv, layer, h), values = kv_values(kv, layer, h); // head h's (n_ctx, hs)
            const float *q = qkv + (size_t)t * 3 * C + h * hs; // this token's query for head h
            float *att = scores + (size_t)omp_get_thread_num() * kv->n_ctx;
            int n_keys = pos + t + 1; // causal: a token sees itself and everything before it, nothing after
            for (int j = 0; j < n_keys; j++) { // how well query t matches each cached key j
                size_t k = (size_t)j * hs; // key j's numbers
                float dot = 0.0f;
                for (int i = 0; i < hs; i++) dot += q[i] * weight_at(&keys, k + i);
                att[j] = dot * scale;
            }
            softmax(att, n_keys); // the attention weights: positive, summing to 1
            float *o = out + (size_t)t * C + h * hs;
            for (int i = 0; i < hs; i++) o[i] = 0.0f;
            for (int j = 0; j < n_keys; j++) { // the weighted sum of the cached values
                size_t v = (size_t)j * hs;
                for (int i = 0; i < hs; i++) o[i] += att[j] * weight_at(&values, v + i);
            }
        }
}

// ----------------------------------------------------------------------------
// the forward pass

// forward() runs on one of two kernel sets with the same contracts: the plain loops above (--reference)
// or their tuned twins at the end of the file (the default).
typedef struct {
    void (*matmul)(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in, int n_out);
    void (*attention)(float *out, const float *qkv, const KVCache *kv, int layer, int T, int pos, int n_head,
                      float *scores);
    void (*gelu)(float *x, size_t n);
} Kernels;

static void matmul_tuned(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in, int n_out);
static void attention_tuned(float *out, const float *qkv, const KVCache *kv, int layer, int T, int pos, int n_head,
                            float *scores);
static void gelu_tuned(float *x, size_t n);
static inline float exp_fast(float x); // within 1.3 ulp of expf, and vectorizable; the sampler uses it too
static int tuned_vector_width(void);   // floats per vector in the tuned kernels: it decides their sums' order

static const Kernels PLAIN_KERNELS = {matmul, attention, gelu};
static const Kernels TUNED_KERNELS = {matmul_tuned, attention_tuned, gelu_tuned};

// Scratch buffers for one chunk of up to n_ctx tokens, allocated once.
typedef struct {
    Kernels k;      // which kernels run
    float *x;       // (n_ctx, C) the residual stream
    float *xn;      // (n_ctx, C) layer-normed input of a sublayer; after forward(), the final hidden states
    float *qkv;     // (n_ctx, 3C)
    float *att;     // (n_ctx, C) attention output, heads concatenated
    float *sub;     // (n_ctx, C) a sublayer's output before it joins the residual stream
    float *hidden;  // (n_ctx, 4C) MLP hidden layer
    float *scores;  // (threads, ATT_ROWS, n_ctx) attention weights
    float *logits;  // (LOGIT_ROWS, V)
} RunState;

#define LOGIT_ROWS 16 // rows of logits computed at once when scoring a text (--ppl)
#define ATT_ROWS 4    // query rows the tuned attention scores at once

static void run_state_init(RunState *s, const Config *c, const Kernels *k) {
    size_t T = (size_t)c->n_ctx, C = (size_t)c->n_embd;
    s->k = *k;
    s->x = xmalloc(T * C * sizeof(float), "activations");
    s->xn = xmalloc(T * C * sizeof(float), "activations");
    s->qkv = xmalloc(T * 3 * C * sizeof(float), "activations");
    s->att = xmalloc(T * C * sizeof(float), "activations");
    s->sub = xmalloc(T * C * sizeof(float), "activations");
    s->hidden = xmalloc(T * 4 * C * sizeof(float), "activations");
    s->scores = xmalloc((size_t)omp_get_max_threads() * ATT_ROWS * T * sizeof(float), "attention scores");
    s->logits = xmalloc((size_t)LOGIT_ROWS * c->vocab_size * sizeof(float), "logits");
}

static void run_state_free(RunState *s) {
    free(s->x);
    free(s->xn);
    free(s->qkv);
    free(s->att);
    free(s->sub);
    free(s->hidden);
    free(s->scores);
    free(s->logits);
}

// Runs tokens[0..T) at positions pos .. pos+T-1 through the model. The cache must hold exactly positions
// 0 .. pos-1; on return it holds 0 .. pos+T-1 and s->xn holds the T final (layer-normed) hidden states.
// Prefill calls this once with the whole prompt, decode with T = 1, --no-cache with pos = 0 every time.
static void forward(const Model *m, RunState *s, KVCache *kv, const int *tokens, int T, int pos) {
    const Config *c = &m->config;
    const Weights *w = &m->weights;
    const Kernels *k = &s->k;
    int C = c->n_embd;
    size_t TC = (size_t)T * C;

    for (int t = 0; t < T; t++) { // the input: token embedding + position embedding
        float *x = s->x + (size_t)t * C;
        const float *p = w->wpe + (size_t)(pos + t) * C;
        dequantize_row(&w->wte, (size_t)tokens[t], C, x);
        for (int i = 0; i < C; i++) x[i] += p[i];
    }
    for (int l = 0; l < c->n_layer; l++) {
        const LayerWeights *L = &w->layers[l];
        // attention sublayer: x += proj(attention(LN1(x)))
        layernorm(s->xn, s->x, L->ln1_w, L->ln1_b, T, C, c->ln_eps);
        k->matmul(s->qkv, s->xn, &L->attn_w, L->attn_b, T, C, 3 * C);
        kv_cache_store(kv, l, pos, T, s->qkv); // the only place the cache grows
        k->attention(s->att, s->qkv, kv, l, T, pos, c->n_head, s->scores);
        k->matmul(s->sub, s->att, &L->attn_proj_w, L->attn_proj_b, T, C, C);
        add_inplace(s->x, s->sub, TC);
        // MLP sublayer: x += proj(gelu(fc(LN2(x))))
        layernorm(s->xn, s->x, L->ln2_w, L->ln2_b, T, C, c->ln_eps);
        k->matmul(s->hidden, s->xn, &L->fc_w, L->fc_b, T, C, 4 * C);
        k->gelu(s->hidden, TC * 4);
        k->matmul(s->sub, s->hidden, &L->fc_proj_w, L->fc_proj_b, T, 4 * C, C);
        add_inplace(s->x, s->sub, TC);
    }
    layernorm(s->xn, s->x, w->lnf_w, w->lnf_b, T, C, c->ln_eps);
    kv->len = pos + T;
}

// s->logits (rows, V) = hidden (rows, C) . wte^T: only for the rows that are sampled or scored.
static void compute_logits(const Model *m, RunState *s, const float *hidden, int rows) {
    s->k.matmul(s->logits, hidden, &m->weights.wte, NULL, rows, m->config.n_embd, m->config.vocab_size);
}

// ----------------------------------------------------------------------------
// GPT-2 tokenizer: byte-level BPE, id-for-id identical to OpenAI's encoder.py and tiktoken's r50k_base.
//
// Encoding text is two steps, exactly as OpenAI does it:
//  1. Pre-tokenize: split the text into pieces with OpenAI's regular expression
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     (case-sensitive; the ' ' is U+0020 only; \p{L} letters, \p{N} numbers, \s Unicode White_Space).
//     We run it by hand (tok_next_piece below) instead of with a regex engine. A piece never crosses into the
//     next one, so BPE works on each piece alone.
//  2. BPE: start from one token per byte of the piece, then repeatedly merge the adjacent pair with the
//     lowest merge rank (ties: leftmost first) until no adjacent pair has a rank. A linked list of nodes
//     and a min-heap of candidate pairs make this O(n log n) for an n-byte piece (bpe_piece below); the
//     pieces can be huge (a megabyte of spaces is one piece), so there is no recursion and no stack array.
// "<|endoftext|>" in the text is ordinary text here; the special id GPT2_EOT is only used by the engine.
//
// Unicode classes. \s is Unicode White_Space (what \s means in OpenAI's `regex` module and in Rust's regex
// used by tiktoken): U+0085 IS space, U+FEFF is NOT (JavaScript's \s has these two backwards), and
// U+001C..U+001F are NOT (Python's str.isspace() says they are). The class tables come from Python's
// unicodedata when tokenizer.bin is built (Python 3.11: Unicode 14.0.0, recorded in the file). Newer
// references use newer Unicode (Debian's python3-regex 2022.10.31: 15.0; npm tiktoken 1.0.22, the WASM
// build of tiktoken's Rust code: 16.0). The only differences are characters unassigned in 14.0 (9272
// letters and 120 numbers by 16.0): "other" here, letters/numbers there. White_Space is the same in all.
//
// Invalid UTF-8 never fails: each byte that is not part of a valid UTF-8 sequence (stray continuation
// byte, truncated sequence, overlong form, UTF-16 surrogate, > U+10FFFF, bytes C0 C1 F5..FF) is a
// character of its own that is neither letter, number nor space. That is what Python gives with
// bytes.decode("utf-8", "surrogateescape") followed by OpenAI's algorithm (escaped bytes are category Cs),
// mapping each escaped byte back to the raw byte. Since BPE works on bytes, decode(encode(x)) == x for
// every byte string x.
//
// tokenizer.bin, version 1 (written by export_gpt2.py --tokenizer). All integers uint32 little-endian; no
// alignment is assumed when reading.
//   offset 0   char[4] magic "GTOK"
//   offset 4   version = 1
//   offset 8   n_vocab (V, at least 256)
//   offset 12  n_merges (M, at most V - 256: each merge makes a new token)
//   offset 16  unicode_version of the class tables: major << 16 | minor << 8 | update (14.0.0 = 0x0E0000)
//   offset 20  n_letter_ranges, offset 24 n_number_ranges, offset 28 n_space_ranges
//   offset 32  n_token_bytes
//   offset 36  token_offset[V + 1]: token i is token_bytes[token_offset[i] .. token_offset[i+1]);
//              token_offset[0] = 0, strictly increasing (no empty token), token_offset[V] = n_token_bytes
//   then       merge[M][3] = (left id, right id, result id); the rank of a merge is its index
//   then       letter ranges, number ranges, space ranges: [n][2] = (first, last) inclusive code points,
//              each list sorted and non-overlapping, last <= 0x10FFFF, the three lists disjoint
//   then       token_bytes[n_token_bytes]: the raw bytes of every token (the byte-level alphabet undone)
//   and the file ends there.
// Checked on load, besides sizes and ranges: every byte value has exactly one single-byte token; a merge's
// result bytes are its left bytes followed by its right bytes; a merge uses only single-byte tokens or
// results of earlier merges, produces a token nothing produced before, and no pair appears twice.
// Those rules are what make the heap-based BPE below give the same result as OpenAI's loop (a pair
// created by a merge always ranks after that merge, so all pairs of one rank are merged left to right
// before anything else happens).

#define GPT2_EOT 50256

enum { TOK_OTHER = 0, TOK_LETTER = 1, TOK_NUMBER = 2, TOK_SPACE = 3 };

typedef struct {
    uint32_t first, last; // inclusive code point range
    unsigned char cls;    // TOK_LETTER, TOK_NUMBER or TOK_SPACE
} TokRange;

typedef struct {
    int vocab_size;
    int n_merges;
    uint32_t unicode_version;          // of the class tables, major << 16 | minor << 8 | update
    const unsigned char *token_bytes;  // points into the caller's file image
    uint32_t *token_offset;            // (vocab_size + 1)
    int byte_token[256];               // id of the single-byte token for each byte value
    uint32_t (*merges)[3];             // (n_merges) left, right, result; index = rank
    uint64_t *pair_key;                // hash table (left << 32 | right) -> rank, open addressing
    int32_t *pair_rank;                // rank, or -1 for an empty slot
    size_t pair_mask;                  // table size - 1 (a power of two)
    TokRange *ranges;                  // all three classes, sorted by first
    size_t n_ranges;
    unsigned char ascii_class[128];    // fast path for ASCII
} Tokenizer;

static size_t tok_pair_slot(uint64_t key, size_t mask) {
    key *= 0x9E3779B97F4A7C15ULL; // Fibonacci hashing: the high bits are well mixed
    return (size_t)(key >> 32) & mask;
}

// Rank of the merge (left, right), or -1 when the pair never merges.
static int32_t tok_pair_rank(const Tokenizer *t, int left, int right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = tok_pair_slot(key, t->pair_mask);; i = (i + 1) & t->pair_mask) {
        if (t->pair_rank[i] < 0) return -1;
        if (t->pair_key[i] == key) return t->pair_rank[i];
    }
}

static void tokenizer_free(Tokenizer *t) {
    free(t->token_offset);
    free(t->merges);
    free(t->pair_key);
    free(t->pair_rank);
    free(t->ranges);
    memset(t, 0, sizeof(*t));
}

// Reads one list of n (first, last) ranges at p into out[], checking order and bounds.
static int tok_read_ranges(const unsigned char *p, uint32_t n, unsigned char cls, const char *name,
                           TokRange *out, char *err) {
    for (uint32_t i = 0; i < n; i++) {
        uint32_t first = read_u32(p + 8 * (size_t)i), last = read_u32(p + 8 * (size_t)i + 4);
        if (first > last || last > 0x10FFFF) return fail(err, "bad %s range %u (U+%X..U+%X)", name, i, first, last);
        if (i > 0 && first <= out[i - 1].last) return fail(err, "%s ranges not sorted at range %u", name, i);
        out[i] = (TokRange){first, last, cls};
    }
    return 0;
}

static int tok_cmp_range(const void *a, const void *b) {
    const TokRange *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

// Where each part of a tokenizer.bin image starts, from its header.
typedef struct {
    uint32_t n_vocab, n_merges, n_range[3], n_bytes;
    uint64_t offsets, merges, ranges, bytes; // byte offsets of the four parts
} TokLayout;

static int tok_read_header(TokLayout *f, const unsigned char *data, size_t size, char *err) {
    if (size < 36) return fail(err, "file too small (%zu bytes)", size);
    if (memcmp(data, "GTOK", 4) != 0) return fail(err, "bad magic (not a tokenizer.bin file)");
    uint32_t version = read_u32(data + 4);
    if (version != 1) return fail(err, "unsupported version %u (expected 1)", version);
    f->n_vocab = read_u32(data + 8);
    f->n_merges = read_u32(data + 12);
    for (int c = 0; c < 3; c++) f->n_range[c] = read_u32(data + 20 + 4 * c);
    f->n_bytes = read_u32(data + 32);
    if (f->n_vocab < 256 || f->n_vocab > (1u << 30)) return fail(err, "bad vocabulary size %u", f->n_vocab);
    if (f->n_merges > f->n_vocab - 256)
        return fail(err, "%u merges for %u tokens (at most %u)", f->n_merges, f->n_vocab, f->n_vocab - 256);
    // Every count is < 2^32, so these sums cannot overflow 64 bits.
    f->offsets = 36;
    f->merges = f->offsets + 4 * ((uint64_t)f->n_vocab + 1);
    f->ranges = f->merges + 12 * (uint64_t)f->n_merges;
    f->bytes = f->ranges + 8 * ((uint64_t)f->n_range[0] + f->n_range[1] + f->n_range[2]);
    if (f->bytes + f->n_bytes != (uint64_t)size)
        return fail(err, "file is %zu bytes but its header describes %llu", size,
                    (unsigned long long)(f->bytes + f->n_bytes));
    return 0;
}

// The vocabulary: token offsets, and the single-byte token of every byte value. made[id] = 1 for those.
static int tok_read_vocab(Tokenizer *t, const unsigned char *data, const TokLayout *f, unsigned char *made, char *err) {
    for (uint32_t i = 0; i <= f->n_vocab; i++) {
        uint32_t o = read_u32(data + f->offsets + 4 * (size_t)i);
        if ((i == 0 && o != 0) || (i > 0 && o <= t->token_offset[i - 1]) || o > f->n_bytes ||
            (i == f->n_vocab && o != f->n_bytes))
            return fail(err, "bad token offset %u for token %u", o, i);
        t->token_offset[i] = o;
    }
    for (int b = 0; b < 256; b++) t->byte_token[b] = -1;
    for (uint32_t i = 0; i < f->n_vocab; i++) {
        if (t->token_offset[i + 1] - t->token_offset[i] != 1) continue;
        unsigned char b = t->token_bytes[t->token_offset[i]];
        if (t->byte_token[b] >= 0) return fail(err, "tokens %d and %u are both byte 0x%02x", t->byte_token[b], i, b);
        t->byte_token[b] = (int)i;
        made[i] = 1;
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_token[b] < 0) return fail(err, "no token for byte 0x%02x", b);
    return 0;
}

// The merges, each checked (see the rules above), and the hash table pair -> rank.
static int tok_read_merges(Tokenizer *t, const unsigned char *data, const TokLayout *f, unsigned char *made, char *err) {
    const uint32_t *off = t->token_offset;
    for (uint32_t r = 0; r < f->n_merges; r++) {
        const unsigned char *p = data + f->merges + 12 * (size_t)r;
        uint32_t left = read_u32(p), right = read_u32(p + 4), result = read_u32(p + 8);
        if (left >= f->n_vocab || right >= f->n_vocab || result >= f->n_vocab)
            return fail(err, "merge %u has an id out of range", r);
        if (!made[left] || !made[right]) return fail(err, "merge %u uses a token no earlier merge produced", r);
        if (made[result]) return fail(err, "merge %u produces token %u a second time", r, result);
        uint32_t ll = off[left + 1] - off[left], rl = off[right + 1] - off[right];
        const unsigned char *res = t->token_bytes + off[result];
        if (off[result + 1] - off[result] != ll + rl || memcmp(res, t->token_bytes + off[left], ll) != 0 ||
            memcmp(res + ll, t->token_bytes + off[right], rl) != 0)
            return fail(err, "merge %u: token %u is not token %u followed by token %u", r, result, left, right);
        made[result] = 1;
        t->merges[r][0] = left;
        t->merges[r][1] = right;
        t->merges[r][2] = result;
        uint64_t key = (uint64_t)left << 32 | right;
        size_t i = tok_pair_slot(key, t->pair_mask);
        while (t->pair_rank[i] >= 0 && t->pair_key[i] != key) i = (i + 1) & t->pair_mask;
        if (t->pair_rank[i] >= 0) return fail(err, "merge %u repeats merge %d", r, t->pair_rank[i]);
        t->pair_key[i] = key;
        t->pair_rank[i] = (int32_t)r;
    }
    return 0;
}

// The Unicode classes: three sorted lists, merged into one for a single binary search.
static int tok_read_classes(Tokenizer *t, const unsigned char *data, const TokLayout *f, char *err) {
    static const char *const class_name[3] = {"letter", "number", "space"};
    const unsigned char *p = data + f->ranges;
    size_t at = 0;
    for (int c = 0; c < 3; c++) {
        if (tok_read_ranges(p, f->n_range[c], (unsigned char)(TOK_LETTER + c), class_name[c], t->ranges + at, err) != 0)
            return -1;
        p += 8 * (size_t)f->n_range[c];
        at += f->n_range[c];
    }
    t->n_ranges = at;
    qsort(t->ranges, at, sizeof(TokRange), tok_cmp_range);
    for (size_t i = 1; i < at; i++)
        if (t->ranges[i].first <= t->ranges[i - 1].last)
            return fail(err, "code point U+%X is in two classes", t->ranges[i].first);
    for (uint32_t c = 0; c < 128; c++) {
        t->ascii_class[c] = TOK_OTHER;
        for (size_t i = 0; i < at && t->ranges[i].first <= c; i++)
            if (c <= t->ranges[i].last) t->ascii_class[c] = t->ranges[i].cls;
    }
    return 0;
}

// Validates a tokenizer.bin image (which must outlive t: token bytes are not copied) and builds the tables.
static int tokenizer_init(Tokenizer *t, const unsigned char *data, size_t size, char *err) {
    memset(t, 0, sizeof *t);
    TokLayout f = {0};
    if (tok_read_header(&f, data, size, err) != 0) return -1;
    t->vocab_size = (int)f.n_vocab;
    t->n_merges = (int)f.n_merges;
    t->unicode_version = read_u32(data + 16);
    t->token_bytes = data + f.bytes;
    size_t table_size = 16; // the pair table is at most half full, so probes stay short
    while (table_size < 2 * (size_t)f.n_merges) table_size *= 2;
    t->pair_mask = table_size - 1;
    size_t n_ranges = (size_t)f.n_range[0] + f.n_range[1] + f.n_range[2];
    t->token_offset = malloc(((size_t)f.n_vocab + 1) * sizeof(uint32_t));
    t->merges = malloc((f.n_merges ? f.n_merges : 1) * sizeof(*t->merges));
    t->pair_key = malloc(table_size * sizeof(uint64_t));
    t->pair_rank = malloc(table_size * sizeof(int32_t));
    t->ranges = malloc((n_ranges ? n_ranges : 1) * sizeof(TokRange));
    unsigned char *made = calloc(f.n_vocab, 1); // made[id] = 1 once BPE can produce token id
    int rc;
    if (!t->token_offset || !t->merges || !t->pair_key || !t->pair_rank || !t->ranges || !made) {
        rc = fail(err, "out of memory");
    } else {
        for (size_t i = 0; i < table_size; i++) t->pair_rank[i] = -1;
        rc = tok_read_vocab(t, data, &f, made, err) || tok_read_merges(t, data, &f, made, err) ||
                     tok_read_classes(t, data, &f, err)
                 ? -1
                 : 0;
    }
    free(made);
    if (rc != 0) tokenizer_free(t);
    return rc;
}

static int tokenizer_vocab_size(const Tokenizer *t) { return t->vocab_size; }

static const unsigned char *tokenizer_token_bytes(const Tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->vocab_size) return NULL;
    *len = t->token_offset[id + 1] - t->token_offset[id];
    return t->token_bytes + t->token_offset[id];
}

// Decodes the character at s[i] (i < n): returns its length in bytes and stores its code point in *cp.
// A byte that does not start a valid UTF-8 sequence is a one-byte character with *cp = -1.
static size_t tok_utf8_next(const unsigned char *s, size_t n, size_t i, int32_t *cp) {
    unsigned c = s[i];
    *cp = -1;
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    // Length from the first byte, and the allowed range of the second byte: the narrower ranges after
    // E0, ED, F0 and F4 rule out overlong forms, UTF-16 surrogates and code points above U+10FFFF.
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 1; // 80..C1 or F5..FF never start a character
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return 1;
    uint32_t v = c & (0xFFu >> (len + 1));
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return 1;
        v = v << 6 | (s[i + k] & 0x3F);
    }
    *cp = (int32_t)v;
    return len;
}

static int tok_class(const Tokenizer *t, int32_t cp) {
    if (cp < 0) return TOK_OTHER; // a byte of invalid UTF-8
    if (cp < 128) return t->ascii_class[cp];
    size_t lo = 0, hi = t->n_ranges; // binary search for the last range with first <= cp
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->ranges[mid].first <= (uint32_t)cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo > 0 && (uint32_t)cp <= t->ranges[lo - 1].last) return t->ranges[lo - 1].cls;
    return TOK_OTHER;
}

// Class of the character at s[i], and its length in *clen.
static int tok_class_at(const Tokenizer *t, const unsigned char *s, size_t n, size_t i, size_t *clen) {
    int32_t cp;
    *clen = tok_utf8_next(s, n, i, &cp);
    return tok_class(t, cp);
}

// End of the run of characters of class cls that starts at s[i].
static size_t tok_run_end(const Tokenizer *t, const unsigned char *s, size_t n, size_t i, int cls) {
    size_t clen;
    while (i < n && tok_class_at(t, s, n, i, &clen) == cls) i += clen;
    return i;
}

// Pre-tokenizer: the end of the piece that starts at s[i], i < n. Tries the regex's alternatives in order.
static size_t tok_next_piece(const Tokenizer *t, const unsigned char *s, size_t n, size_t i) {
    // 's 't 're 've 'm 'll 'd (lowercase only, ASCII apostrophe only)
    if (s[i] == '\'' && n - i >= 2) {
        unsigned char a = s[i + 1], b = n - i >= 3 ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    size_t clen;
    int cls = tok_class_at(t, s, n, i, &clen);
    // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": one optional U+0020, then a run of one class
    if (s[i] == ' ' && i + 1 < n) {
        size_t nlen;
        int next = tok_class_at(t, s, n, i + 1, &nlen);
        if (next != TOK_SPACE) return tok_run_end(t, s, n, i + 1 + nlen, next);
    }
    if (cls != TOK_SPACE) return tok_run_end(t, s, n, i + clen, cls);
    // "\s+(?!\S)": a run of spaces, minus its last character when a non-space follows (that last space
    // then starts the next piece, e.g. goes in front of the next word); "\s+" when the run is one space.
    size_t last = i, j = i + clen;
    while (j < n) {
        size_t len2;
        if (tok_class_at(t, s, n, j, &len2) != TOK_SPACE) break;
        last = j;
        j += len2;
    }
    if (j == n || last == i) return j;
    return last;
}

// Scratch space for BPE on one piece, grown to the longest piece seen: one allocation, four arrays.
typedef struct {
    uint64_t *heap;   // (3 cap) min-heap of candidate merges: rank << 32 | position of the left node
    int32_t *tok;     // (cap) token id of each node; -1 once merged into its left neighbour
    uint32_t *prev;   // (cap) linked list of live nodes (UINT32_MAX = none)
    uint32_t *next;   // (cap) (n = none)
    size_t cap;       // capacity in nodes
} BpeScratch;

static int bpe_reserve(BpeScratch *b, size_t n) {
    if (n <= b->cap) return 0;
    const size_t node_bytes = 3 * sizeof(uint64_t) + sizeof(int32_t) + 2 * sizeof(uint32_t);
    size_t cap = 2 * b->cap > n ? 2 * b->cap : n;
    if (cap >= UINT32_MAX || cap > SIZE_MAX / node_bytes) cap = n;
    // node positions are 32-bit: a single piece of 4 GB or more is reported like out-of-memory
    if (cap >= UINT32_MAX || cap > SIZE_MAX / node_bytes) return -1;
    free(b->heap);
    memset(b, 0, sizeof *b);
    b->heap = malloc(cap * node_bytes);
    if (!b->heap) return -1;
    b->tok = (int32_t *)(b->heap + 3 * cap);
    b->prev = (uint32_t *)(b->tok + cap);
    b->next = b->prev + cap;
    b->cap = cap;
    return 0;
}

static void bpe_heap_push(uint64_t *heap, size_t *size, uint64_t key) {
    size_t i = (*size)++;
    while (i > 0 && heap[(i - 1) / 2] > key) { // sift up
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = key;
}

static uint64_t bpe_heap_pop(uint64_t *heap, size_t *size) {
    uint64_t top = heap[0], key = heap[--*size];
    size_t i = 0, n = *size;
    for (;;) { // sift the last element down from the root
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= key) break;
        heap[i] = heap[c];
        i = c;
    }
    if (n > 0) heap[i] = key;
    return top;
}

// Queues the pair (node a, node b) if it has a merge rank.
static void bpe_push_pair(const Tokenizer *t, BpeScratch *b, size_t *heap_size, uint32_t a, uint32_t bn) {
    int32_t rank = tok_pair_rank(t, b->tok[a], b->tok[bn]);
    if (rank >= 0) bpe_heap_push(b->heap, heap_size, (uint64_t)rank << 32 | a);
}

// BPE on one piece p[0..n); appends the ids to out[*n_out..]. Each step takes the lowest (rank, position)
// candidate from the heap; candidates made stale by earlier merges are recognised and skipped.
static int bpe_piece(const Tokenizer *t, const unsigned char *p, size_t n, BpeScratch *b, int *out,
                     size_t *n_out) {
    if (n == 1) { // most common case: no merging possible
        out[(*n_out)++] = t->byte_token[p[0]];
        return 0;
    }
    if (bpe_reserve(b, n) != 0) return -1;
    uint32_t nn = (uint32_t)n;
    for (uint32_t i = 0; i < nn; i++) {
        b->tok[i] = t->byte_token[p[i]];
        b->prev[i] = i == 0 ? UINT32_MAX : i - 1;
        b->next[i] = i + 1;
    }
    size_t heap_size = 0;
    for (uint32_t i = 0; i + 1 < nn; i++) bpe_push_pair(t, b, &heap_size, i, i + 1);
    while (heap_size > 0) {
        uint64_t key = bpe_heap_pop(b->heap, &heap_size);
        uint32_t rank = (uint32_t)(key >> 32), i = (uint32_t)key;
        if (b->tok[i] < 0) continue; // left node was merged away
        uint32_t j = b->next[i];
        if (j >= nn || (uint32_t)b->tok[i] != t->merges[rank][0] || (uint32_t)b->tok[j] != t->merges[rank][1])
            continue; // the pair changed since it was queued
        b->tok[i] = (int32_t)t->merges[rank][2]; // node i absorbs node j
        b->tok[j] = -1;
        uint32_t k = b->next[j];
        b->next[i] = k;
        if (k < nn) b->prev[k] = i;
        if (b->prev[i] != UINT32_MAX) bpe_push_pair(t, b, &heap_size, b->prev[i], i);
        if (k < nn) bpe_push_pair(t, b, &heap_size, i, k);
    }
    for (uint32_t i = 0; i < nn; i = b->next[i]) out[(*n_out)++] = b->tok[i]; // node 0 is never absorbed
    return 0;
}

static int tokenizer_encode(const Tokenizer *t, const unsigned char *text, size_t len, int **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (len > SIZE_MAX / sizeof(int)) return -1;
    int *out = malloc((len ? len : 1) * sizeof(int)); // every token has at least one byte
    BpeScratch scratch = {0};
    size_t n_out = 0;
    int rc = out ? 0 : -1;
    for (size_t i = 0; i < len && rc == 0;) {
        size_t end = tok_next_piece(t, text, len, i);
        rc = bpe_piece(t, text + i, end - i, &scratch, out, &n_out);
        i = end;
    }
    free(scratch.heap);
    if (rc != 0) {
        free(out);
        return -1;
    }
    *ids = out;
    *n_ids = n_out;
    return 0;
}

// ----------------------------------------------------------------------------
// sampler: temperature, then top-k, then top-p (the order Hugging Face's generate() applies them)

typedef struct {
    float prob;
    int id;
} ProbIndex;

typedef struct {
    float temperature; // 0 = greedy
    float top_p;       // 1 = off
    int top_k;         // 0 = off
    uint64_t rng;      // xorshift64* state, never 0
    ProbIndex *cands;  // (V) scratch
    ProbIndex *spare;  // (V) scratch for sort_by_prob()
    float *probs;      // (V) scratch
} Sampler;

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static void sampler_init(Sampler *s, int V, float temperature, float top_p, int top_k, uint64_t seed) {
    s->temperature = temperature;
    s->top_p = top_p;
    s->top_k = top_k;
    s->rng = splitmix64(seed) | 1; // any seed, including 0, gives a valid non-zero state
    s->cands = xmalloc((size_t)V * sizeof(ProbIndex), "the sampler");
    s->spare = xmalloc((size_t)V * sizeof(ProbIndex), "the sampler");
    s->probs = xmalloc((size_t)V * sizeof(float), "the sampler");
}

static void sampler_free(Sampler *s) {
    free(s->cands);
    free(s->spare);
    free(s->probs);
}

static float random_unit(Sampler *s) { // uniform in [0, 1)
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

// The largest of x[0..n): a reduction of values vectorizes where argmax's index does not (the pragma
// says the order of comparisons does not matter, which for a maximum of finite numbers is true).
static float max_of(const float *x, int n) {
    float m = x[0];
#pragma omp simd reduction(max : m)
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static int argmax(const float *x, int n) { // ties go to the lowest id
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

// A probability's bits, complemented: ascending keys are descending probabilities (for floats >= 0).
static uint32_t prob_key(float p) {
    uint32_t bits;
    memcpy(&bits, &p, sizeof bits);
    return ~bits;
}

// Higher probability first; equal probabilities by id, so the order never depends on qsort's whims.
static int prob_desc(const void *a, const void *b) {
    const ProbIndex *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

// Sorts a[0..n) into prob_desc()'s order in linear time (spare: room for n more). A top-p draw may
// have tens of thousands of candidates (a flat distribution: random weights, a high temperature), and
// qsort was then a large part of a decode step. A probability is a float >= 0, whose bits order like the
// number, so four stable passes, one per byte of the complemented bits, lowest byte first, sort
// largest first; the candidates arrive in id order and stable passes keep equal probabilities so.
static void sort_by_prob(ProbIndex *a, ProbIndex *spare, int n) {
    for (int shift = 0; shift < 32; shift += 8) {
        int start[257] = {0}; // start[b + 1] counts, then start[b] is where byte value b goes
        for (int i = 0; i < n; i++) start[(prob_key(a[i].prob) >> shift & 255) + 1]++;
        for (int b = 0; b < 256; b++) start[b + 1] += start[b];
        for (int i = 0; i < n; i++) spare[start[prob_key(a[i].prob) >> shift & 255]++] = a[i];
        ProbIndex *t = a; // the sorted-so-far array is now spare; after the 4th pass it is a again
        a = spare;
        spare = t;
    }
}

// Restores the heap below a[p] in a[0..k), whose root is the worst of the candidates kept.
static void sift_down(ProbIndex *a, int k, int p) {
    for (;;) {
        int c = 2 * p + 1;
        if (c >= k) return;
        if (c + 1 < k && prob_desc(&a[c + 1], &a[c]) > 0) c++;
        if (prob_desc(&a[c], &a[p]) <= 0) return;
        ProbIndex tmp = a[p];
        a[p] = a[c];
        a[c] = tmp;
        p = c;
    }
}

// Moves the k most probable of a[0..n) to a[0..k), sorted, in O(n log k): a min-heap of the best k so far.
static void select_top_k(ProbIndex *a, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(a, k, i);
    for (int i = k; i < n; i++) {
        if (prob_desc(&a[i], &a[0]) >= 0) continue; // not better than the worst kept
        a[0] = a[i];
        sift_down(a, k, 0);
    }
    qsort(a, (size_t)k, sizeof *a, prob_desc);
}

static int sample(Sampler *s, const float *logits, int V) {
    if (s->temperature == 0.0f) return argmax(logits, V);
    float max = max_of(logits, V);
    for (int i = 0; i < V; i++) s->probs[i] = exp_fast((logits[i] - max) / s->temperature);
    double total = 0.0;
    for (int i = 0; i < V; i++) total += s->probs[i];
    for (int i = 0; i < V; i++) s->probs[i] = (float)(s->probs[i] / total);

    // Candidates. Without top-k, a token below (1 - top_p) / (V - 1) can never be inside the nucleus,
    // so dropping those first leaves a short list to sort (llama2.c's trick) and changes nothing.
    int n = 0;
    float cutoff = (s->top_k == 0 && s->top_p < 1.0f) ? (1.0f - s->top_p) / (float)(V - 1 > 0 ? V - 1 : 1) : 0.0f;
    if (cutoff > 0.0f) {
        for (int i = 0; i < V; i++)
            if (s->probs[i] >= cutoff) s->cands[n++] = (ProbIndex){s->probs[i], i};
    } else { // every token: a loop without a branch, which vectorizes
        for (int i = 0; i < V; i++) s->cands[i] = (ProbIndex){s->probs[i], i};
        n = V;
    }
    if (n == 0) { // every probability under the cutoff (a top-p below 1 / V can do that): keep the likeliest
        int best = argmax(s->probs, V);
        s->cands[n++] = (ProbIndex){s->probs[best], best};
    }
    if (s->top_k > 0 && s->top_k < n) {
        select_top_k(s->cands, n, s->top_k);
        n = s->top_k;
    } else if (s->top_p < 1.0f) {
        sort_by_prob(s->cands, s->spare, n);
    }
    // The mass the kept candidates are measured against: after top-k the distribution is renormalized
    // over the k survivors; otherwise it is the whole distribution (whose sum is 1).
    double mass = 1.0;
    if (s->top_k > 0 && s->top_k < V) {
        mass = 0.0;
        for (int i = 0; i < n; i++) mass += s->cands[i].prob;
    }
    if (s->top_p < 1.0f) { // keep the shortest prefix whose probability reaches top_p
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += s->cands[i].prob;
            if (cum >= s->top_p * mass) {
                n = i + 1;
                break;
            }
        }
    }
    double kept = 0.0;
    for (int i = 0; i < n; i++) kept += s->cands[i].prob;
    double r = (double)random_unit(s) * kept, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += s->cands[i].prob;
        if (r < cum) return s->cands[i].id;
    }
    return s->cands[n - 1].id; // rounding left r at the very end
}

// ----------------------------------------------------------------------------
// the prompt cache: a prompt's keys and values on disk (--prompt-cache FILE)
//
// Keys and values depend only on the tokens up to their position, so the cache of a prompt is also the
// start of the cache of every longer text that begins the same way. --prompt-cache FILE saves the
// prompt's rows after the prefill; a later run loads the rows of the longest common prefix and computes
// only the rest. The rows are bit-identical to the ones a prefill would compute (each row's numbers do
// not depend on the chunk that computed it), so the output is too.
//
// FILE, version 1, little-endian:
//   bytes 0..63   char magic[4] = "GPKV"; uint32 version = 1; uint32 kv_type (0 f32, 1 f16, 2 int8);
//                 uint32 kernels (0: the plain loops of --reference; 8 or 16: the tuned kernels and their
//                 vector width, which decides the order of their sums); uint32 n_layer, n_embd, n_ctx;
//                 uint32 n_tokens; uint64 model fingerprint (model_fingerprint below); zeros up to 64
//   then          int32 tokens[n_tokens]
//   then per layer: K rows (n_tokens, n_embd) and V rows (n_tokens, n_embd) in kv_type, then for int8
//                 the K scales (n_tokens, n_embd / 32) and V scales, IEEE half
//   and the file ends there. Each array is stored exactly as the KV cache holds it in memory, so loading
//   the first R positions is one read per array and layer, straight into the cache: nothing is parsed or
//   converted.

#define PCACHE_MAGIC "GPKV"
#define PCACHE_VERSION 1
#define PCACHE_HEADER_BYTES 64
#define FINGERPRINT_BLOCKS 16 // blocks of 64 bytes hashed per tensor

typedef struct {
    const char *path;     // FILE
    uint64_t fingerprint; // of the model in use
    uint32_t kernels;     // 0 = plain loops, else the tuned kernels' vector width
} PromptCache;

// FNV-1a, 64-bit: tells files apart; it is not meant to resist someone forging a collision.
static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h;
}

// Where each tensor starts in the mapped file, in file order (the order layout_tensors() lays them out).
static int tensor_starts(const Model *m, const unsigned char **out) {
    const Weights *w = &m->weights;
    int n = 0;
#define START(p) if (p) out[n++] = (const unsigned char *)(p)
    START(w->wte.data); START(w->wte.scales); START(w->wpe);
    for (int l = 0; l < m->config.n_layer; l++) {
        const LayerWeights *L = &w->layers[l];
        START(L->ln1_w); START(L->ln1_b); START(L->attn_w.data); START(L->attn_w.scales); START(L->attn_b);
        START(L->attn_proj_w.data); START(L->attn_proj_w.scales); START(L->attn_proj_b); START(L->ln2_w);
        START(L->ln2_b); START(L->fc_w.data); START(L->fc_w.scales); START(L->fc_b); START(L->fc_proj_w.data);
        START(L->fc_proj_w.scales); START(L->fc_proj_b);
    }
    START(w->lnf_w); START(w->lnf_b);
#undef START
    return n;
}

// A model's identity without reading all its weights: the header (config and weight type) and
// FINGERPRINT_BLOCKS blocks of 64 bytes spread evenly over every tensor, about 200 KB for GPT-2 small.
// A different checkpoint changes nearly every weight, so it changes the sampled ones; a single weight
// edited by hand outside the samples would go unnoticed (README, "The prompt cache file").
static uint64_t model_fingerprint(const Model *m) {
    const unsigned char *base = m->file.data, *end = base + m->file.size;
    const unsigned char **start = xmalloc((size_t)(5 + 16 * m->config.n_layer) * sizeof *start, "the fingerprint");
    int n = tensor_starts(m, start);
    uint64_t h = fnv1a(0xCBF29CE484222325ULL, base, MODEL_HEADER_BYTES);
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)((i + 1 < n ? start[i + 1] : end) - start[i]); // the tensor and its padding
        if (len <= FINGERPRINT_BLOCKS * 64) {
            h = fnv1a(h, start[i], len);
            continue;
        }
        for (int b = 0; b < FINGERPRINT_BLOCKS; b++)
            h = fnv1a(h, start[i] + (len - 64) / (FINGERPRINT_BLOCKS - 1) * b, 64);
    }
    free(start);
    return h;
}

static uint64_t read_u64(const unsigned char *p) { return read_u32(p) | (uint64_t)read_u32(p + 4) << 32; }
static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> 8 * i); }

// A layer's arrays in the file: keys, values, then (int8) their scales.
static int pcache_arrays(const KVCache *kv) { return kv->type == WEIGHT_Q8 ? 4 : 2; }

// Bytes of n positions of a layer's array a in the file.
static size_t pcache_array_bytes(const KVCache *kv, int a, int n) {
    return (size_t)n * (a < 2 ? kv->dim * kv_number_bytes(kv->type) : kv->dim / Q8_BLOCK * sizeof(uint16_t));
}

// The file keeps each position's row whole, every head side by side, while the cache keeps each head's
// rows together. This copies positions 0 .. n-1 of a layer's array a between the two: into buf in the
// file's order (to_file), or from buf into the cache.
static void pcache_copy(const KVCache *kv, int layer, int a, int n, char *buf, int to_file) {
    int scales = a >= 2;
    size_t elem = scales ? sizeof(uint16_t) : kv_number_bytes(kv->type);
    size_t per_head = (size_t)kv->head_size / (scales ? Q8_BLOCK : 1) * elem; // one head at one position
    char *base = a == 0 ? kv->k : a == 1 ? kv->v : a == 2 ? (char *)kv->k_scales : (char *)kv->v_scales;
    for (int h = 0; h < kv->n_head; h++) {
        char *cache = base + kv_first(kv, layer, h, 0) / (scales ? Q8_BLOCK : 1) * elem;
        for (int p = 0; p < n; p++) {
            char *file = buf + ((size_t)p * kv->n_head + h) * per_head;
            if (to_file) memcpy(file, cache + p * per_head, per_head);
            else memcpy(cache + p * per_head, file, per_head);
        }
    }
}

static uint64_t pcache_file_size(const KVCache *kv, int n_tokens) {
    return PCACHE_HEADER_BYTES + 4 * (uint64_t)n_tokens + (uint64_t)n_tokens * kv_bytes_per_token(kv);
}

static int read_at(int fd, void *buf, size_t n, off_t off) {
    for (size_t done = 0; done < n;) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, off + (off_t)done);
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t r = write(fd, (const char *)buf + done, n - done);
        if (r < 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

// Before any work: FILE must be absent or a prompt cache (anything else is left alone: an error), and
// its directory writable, since the file is replaced through a temporary file beside it.
static void pcache_check_path(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) die("--prompt-cache '%s' is a directory, not a file", path);
        unsigned char magic[4] = {0};
        int fd = open(path, O_RDONLY);
        if (fd < 0) die("cannot read the prompt cache '%s': %s", path, strerror(errno));
        ssize_t got = read(fd, magic, 4);
        close(fd);
        if (got != 4 || memcmp(magic, PCACHE_MAGIC, 4) != 0)
            die("'%s' is not a prompt cache (it does not start with \"" PCACHE_MAGIC "\"), so --prompt-cache leaves it "
                "alone; HINT: give a new file name, e.g. --prompt-cache prompt.kv", path);
    } else if (errno != ENOENT) {
        die("cannot use the prompt cache '%s': %s", path, strerror(errno));
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    if (access(dir, W_OK | X_OK) != 0)
        die("cannot write the prompt cache '%s': directory '%s': %s", path, dir, strerror(errno));
}

static const char *kernels_name(uint32_t kernels, char *buf) {
    if (kernels == 0) return "plain (--reference)";
    snprintf(buf, 48, "tuned (%u floats per vector)", kernels);
    return buf;
}

// Checks FILE's header against this model, KV type and kernels, and reads its tokens into *tokens.
// Returns their count, or -1 with the reason the cache cannot be used in why (a phrase after the name).
static int pcache_read_tokens(int fd, const Model *m, const KVCache *kv, const PromptCache *pc, int **tokens, char *why) {
    const Config *c = &m->config;
    unsigned char h[PCACHE_HEADER_BYTES];
    struct stat st;
    if (fstat(fd, &st) != 0 || read_at(fd, h, sizeof h, 0) != 0) return fail(why, "is truncated or unreadable");
    uint32_t version = read_u32(h + 4), type = read_u32(h + 8), kernels = read_u32(h + 12), n = read_u32(h + 28);
    char had[48], uses[48];
    if (version != PCACHE_VERSION) return fail(why, "has version %u (this run reads %d)", version, PCACHE_VERSION);
    if (read_u32(h + 16) != (uint32_t)c->n_layer || read_u32(h + 20) != (uint32_t)c->n_embd ||
        read_u32(h + 24) != (uint32_t)c->n_ctx || read_u64(h + 32) != pc->fingerprint)
        return fail(why, "was made with another model");
    if (type != (uint32_t)kv->type)
        return fail(why, "holds %s keys and values, and this run uses --kv-type %s",
                    type <= WEIGHT_Q8 ? WEIGHT_TYPE_NAME[type] : "unknown", WEIGHT_TYPE_NAME[kv->type]);
    if (kernels != pc->kernels)
        return fail(why, "was computed by the %s kernels, and this run uses the %s ones", kernels_name(kernels, had),
                    kernels_name(pc->kernels, uses));
    if (n < 1 || n > (uint32_t)c->n_ctx) return fail(why, "is inconsistent (%u tokens for a %d-position context)", n, c->n_ctx);
    if ((uint64_t)st.st_size != pcache_file_size(kv, (int)n))
        return fail(why, "is truncated or damaged (%lld bytes; %u tokens need %llu)", (long long)st.st_size, n,
                    (unsigned long long)pcache_file_size(kv, (int)n));
    *tokens = xmalloc((size_t)n * sizeof(int), "the prompt cache's tokens");
    if (read_at(fd, *tokens, (size_t)n * sizeof(int), PCACHE_HEADER_BYTES) != 0) return fail(why, "could not be read");
    for (uint32_t i = 0; i < n; i++)
        if ((*tokens)[i] < 0 || (*tokens)[i] >= c->vocab_size)
            return fail(why, "is inconsistent (token %u is %d, outside the vocabulary)", i, (*tokens)[i]);
    return (int)n;
}

// Reads the first `reuse` positions of every layer of a cache file holding n_file positions into kv.
static int pcache_read_rows(int fd, KVCache *kv, int n_file, int reuse) {
    off_t off = PCACHE_HEADER_BYTES + 4 * (off_t)n_file;
    char *buf = xmalloc(pcache_array_bytes(kv, 0, reuse) + 1, "the prompt cache");
    int bad = 0;
    for (int l = 0; l < kv->n_layer && !bad; l++)
        for (int a = 0; a < pcache_arrays(kv) && !bad; a++) {
            bad = read_at(fd, buf, pcache_array_bytes(kv, a, reuse), off) != 0;
            if (!bad) pcache_copy(kv, l, a, reuse, buf, 0);
            off += (off_t)pcache_array_bytes(kv, a, n_file); // the file holds n_file positions of each
        }
    free(buf);
    return bad ? -1 : 0;
}

// Loads into kv the rows of the longest prefix FILE shares with prompt[0..n), at most n - 1 of them (the
// last prompt token always runs, to produce the logits). Returns that count; *same = 1 when FILE holds
// exactly this prompt. A cache that cannot be used gets one warning line and counts as absent.
static int pcache_load(const PromptCache *pc, const Model *m, KVCache *kv, const int *prompt, int n, int *same) {
    *same = 0;
    int fd = open(pc->path, O_RDONLY);
    if (fd < 0) return 0; // no cache yet (pcache_check_path has ruled out the other reasons)
    char why[ERR_LEN];
    int *tokens = NULL, n_file = pcache_read_tokens(fd, m, kv, pc, &tokens, why), reuse = 0;
    if (n_file > 0) {
        while (reuse < n_file && reuse < n - 1 && tokens[reuse] == prompt[reuse]) reuse++;
        *same = n_file == n && memcmp(tokens, prompt, (size_t)n * sizeof(int)) == 0;
        if (pcache_read_rows(fd, kv, n_file, reuse) != 0) n_file = fail(why, "could not be read");
    }
    close(fd);
    free(tokens);
    if (n_file < 0) {
        fprintf(stderr, "warning: prompt cache '%s' %s; computing the prompt from scratch and replacing the file\n",
                pc->path, why);
        *same = 0;
        return 0;
    }
    return reuse;
}

// Writes the cache's first n positions and their tokens to FILE: a temporary file beside it, then a
// rename, so FILE is always either the old cache or the whole new one. Returns the bytes written.
static uint64_t pcache_save(const PromptCache *pc, const KVCache *kv, const int *tokens, int n) {
    unsigned char h[PCACHE_HEADER_BYTES] = PCACHE_MAGIC;
    uint32_t fields[7] = {PCACHE_VERSION, (uint32_t)kv->type, pc->kernels, (uint32_t)kv->n_layer, (uint32_t)kv->dim,
                          (uint32_t)kv->n_ctx, (uint32_t)n};
    for (int i = 0; i < 7; i++) put_u32(h + 4 + 4 * i, fields[i]);
    put_u32(h + 32, (uint32_t)pc->fingerprint);
    put_u32(h + 36, (uint32_t)(pc->fingerprint >> 32));
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", pc->path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    int bad = fd < 0 || write_all(fd, h, sizeof h) != 0 || write_all(fd, tokens, (size_t)n * sizeof(int)) != 0;
    char *buf = xmalloc(pcache_array_bytes(kv, 0, n), "the prompt cache");
    for (int l = 0; !bad && l < kv->n_layer; l++)
        for (int a = 0; a < pcache_arrays(kv) && !bad; a++) {
            pcache_copy(kv, l, a, n, buf, 1);
            bad = write_all(fd, buf, pcache_array_bytes(kv, a, n)) != 0;
        }
    free(buf);
    if (fd >= 0 && close(fd) != 0) bad = 1;
    if (bad || rename(tmp, pc->path) != 0) {
        int e = errno;
        unlink(tmp);
        die("cannot write the prompt cache '%s': %s", pc->path, strerror(e));
    }
    return pcache_file_size(kv, n);
}

// ----------------------------------------------------------------------------
// context shift: generating past n_ctx (--context-shift, --keep K)
//
// A sequence cannot outgrow the position table (n_ctx rows of wpe). With --context-shift, when the next
// token would not fit, the window drops the (len - K) / 2 tokens that follow its first K (--keep K), the
// rule llama.cpp uses, and generation goes on with what remains as its context.
//
// The cached rows cannot simply move down with their tokens. GPT-2 adds a learned embedding of the
// absolute position to each token's input, so every key and value, in every layer, was computed from
// "this token at position p". After the shift the same token sits at another position, and its keys
// and values are different numbers. (Models with rotary position embeddings, like Llama, apply the
// position to the keys as a rotation, which can be undone and redone on cached keys: llama.cpp shifts
// those in place. GPT-2's positions are mixed into everything.) So the remaining window is recomputed,
// in one batched pass from position 0, exactly as a prefill would compute it: cached and --no-cache
// runs still print the same text.

typedef struct {
    int shifts;        // how many times the window was shifted
    long recomputed;   // tokens whose keys and values were recomputed, over all shifts
    double seconds;    // time those recomputing passes took
} ShiftStats;

// Drops the (len - keep) / 2 tokens after the first keep of seq[0..len); returns the new length.
static int shift_window(int *seq, int len, int keep) {
    int discard = (len - keep) / 2;
    memmove(seq + keep, seq + keep + discard, (size_t)(len - keep - discard) * sizeof(int));
    return len - discard;
}

// The summary's line: what going past the context cost.
static void print_shifts(const ShiftStats *s) {
    fprintf(stderr, "context shifts: %d, %ld tokens recomputed in %.3f s\n", s->shifts, s->recomputed, s->seconds);
}

// ----------------------------------------------------------------------------
// generation

typedef struct ThreadTuner ThreadTuner; // in the tuned section: the thread count under load
static ThreadTuner *thread_tuner_new(int max, int fixed);
static int thread_tuner_step(ThreadTuner *t, double seconds, double cpu);
static void thread_tuner_report(const ThreadTuner *t);

typedef struct {
    const Tokenizer *tok; // NULL when output is token ids
    int print_ids;
    int n_tokens;          // how many tokens to generate
    int no_cache;          // recompute the whole sequence at every step
    int ignore_eos;        // keep going past <|endoftext|>
    FILE *timings;         // per-token CSV, or NULL
    FILE *logits_out;      // raw logits of every sampled step, or NULL
    const PromptCache *prompt_cache; // --prompt-cache, or NULL
    int context_shift;     // --context-shift: drop part of the window instead of stopping at n_ctx
    int keep;              // --keep K: the first K tokens are never dropped
    int quiet;
    ThreadTuner *tuner;    // picks the thread count of each decode step (see "threads under load")
} GenOptions;

static void emit_token(const GenOptions *g, int id, int first) {
    if (g->print_ids) {
        printf(first ? "%d" : " %d", id);
    } else {
        size_t len;
        const unsigned char *bytes = tokenizer_token_bytes(g->tok, id, &len);
        if (bytes) fwrite(bytes, 1, len, stdout); // raw bytes: a character split across tokens reassembles
    }
    fflush(stdout); // stream: the user sees each token as it is produced
}

// Runs the sequence's newest tokens through the model so that s->logits predicts what comes next.
// With the cache that is just the tokens not yet cached; without it, all of them, from position 0.
static void advance(const Model *m, RunState *s, KVCache *kv, const int *seq, int len, int no_cache) {
    if (no_cache) kv->len = 0; // forget every K and V: they are recomputed below
    int pos = kv->len;
    forward(m, s, kv, seq + pos, len - pos, pos);
    compute_logits(m, s, s->xn + (size_t)(len - pos - 1) * m->config.n_embd, 1);
}

// The prompt's pass: the rows --prompt-cache can supply are loaded, the rest computed, and the prompt's
// cache saved for the next run. Returns how many prompt tokens were computed.
static int prefill(const Model *m, RunState *s, KVCache *kv, const int *prompt, int n, const GenOptions *g) {
    const PromptCache *pc = g->prompt_cache;
    int same = 0;
    kv->len = pc ? pcache_load(pc, m, kv, prompt, n, &same) : 0;
    int reused = kv->len;
    if (pc && !g->quiet) fprintf(stderr, "prompt cache: reused %d of %d prompt tokens (%s)\n", reused, n, pc->path);
    advance(m, s, kv, prompt, n, g->no_cache);
    if (pc && !same) {
        uint64_t bytes = pcache_save(pc, kv, prompt, n);
        if (!g->quiet) fprintf(stderr, "prompt cache: saved %d tokens, %llu bytes (%s)\n", n, (unsigned long long)bytes, pc->path);
    }
    return n - reused;
}

static void check_logits(const float *logits, int V, int pos) {
    int bad = 0;
    for (int j = 0; j < V; j++) bad |= !isfinite(logits[j]); // no early exit, so the loop vectorizes
    if (bad) die("the model computed a non-finite logit (NaN or infinity) at position %d: its weights are corrupt", pos);
}

typedef enum { STOP_REQUESTED, STOP_CONTEXT, STOP_EOS } StopReason;

static void print_summary(const GenOptions *g, const KVCache *kv, StopReason why, int n_prompt, int n_new,
                          double t_prefill, double t_decode, const ShiftStats *shifts) {
    if (!g->print_ids) fputc('\n', stderr);
    if (why == STOP_EOS)
        fprintf(stderr, "stopped: end of text (<|endoftext|>) after %d of %d requested tokens\n", n_new, g->n_tokens);
    else if (why == STOP_CONTEXT)
        fprintf(stderr, "stopped: context limit (%d tokens) reached after %d of %d requested tokens\n", kv->n_ctx,
                n_new, g->n_tokens);
    else
        fprintf(stderr, "stopped: generated the requested %d tokens\n", n_new);
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", n_prompt, t_prefill,
            t_prefill > 0 ? n_prompt / t_prefill : 0.0);
    fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", n_new, t_decode, t_decode > 0 ? n_new / t_decode : 0.0);
    if (g->context_shift) print_shifts(shifts);
    fprintf(stderr, "kv cache: %d of %d positions, %.1f MiB (%zu bytes/token)\n", kv->len, kv->n_ctx,
            (double)kv_bytes_used(kv) / (1024.0 * 1024.0), kv_bytes_per_token(kv));
    if (g->no_cache) fprintf(stderr, "note: with --no-cache these positions were recomputed from scratch at every step\n");
    thread_tuner_report(g->tuner);
}

// Prefill the prompt, then sample, print and append one token at a time until -n tokens, the end of the
// context (unless --context-shift) or <|endoftext|>. seq has room for n_ctx tokens. Returns how many
// tokens were generated.
static int generate(const Model *m, RunState *s, KVCache *kv, Sampler *sampler, int *seq, int n_prompt,
                    const GenOptions *g) {
    const Config *c = &m->config;
    int room = c->n_ctx - n_prompt;
    int limit = g->n_tokens < room || g->context_shift ? g->n_tokens : room;
    StopReason why = limit == g->n_tokens ? STOP_REQUESTED : STOP_CONTEXT;
    ShiftStats shifts = {0};

    double t0 = now_seconds(), cpu0 = cpu_seconds();
    int n_computed = prefill(m, s, kv, seq, n_prompt, g); // also with -n 0, so it can be timed alone
    double t_prefill = now_seconds() - t0, t_step = now_seconds(), cpu_step = cpu_seconds();
    if (n_prompt <= 4 && !g->no_cache) // a short prompt's pass reads the weights once, like a decode step
        omp_set_num_threads(thread_tuner_step(g->tuner, t_prefill, cpu_step - cpu0));
    int n_new = 0, len = n_prompt; // len: tokens in the window, seq[0..len)
    while (n_new < limit) {
        check_logits(s->logits, c->vocab_size, len - 1);
        if (g->logits_out && fwrite(s->logits, sizeof(float), (size_t)c->vocab_size, g->logits_out) != (size_t)c->vocab_size)
            die("cannot write the --logits file: %s", strerror(errno));
        int next = sample(sampler, s->logits, c->vocab_size);
        if (next == GPT2_EOT && !g->ignore_eos) { // the model ended the document: not printed, not appended
            why = STOP_EOS;
            break;
        }
        int shifted = len == c->n_ctx; // only with --context-shift: otherwise the loop has stopped
        if (shifted) {
            len = shift_window(seq, len, g->keep);
            kv->len = 0; // the rows were computed at the old positions: recompute the window (see above)
        }
        seq[len++] = next;
        emit_token(g, next, n_new == 0);
        n_new++;
        double t_forward = now_seconds();
        advance(m, s, kv, seq, len, g->no_cache); // append its K and V for the next step
        double t = now_seconds(), cpu = cpu_seconds();
        if (shifted) {
            shifts.shifts++;
            shifts.recomputed += len - 1;
            shifts.seconds += t - t_forward;
        } else {
            omp_set_num_threads(thread_tuner_step(g->tuner, t - t_step, cpu - cpu_step)); // fewer if a core is busy
        }
        if (g->timings) fprintf(g->timings, "%d,%d,%.4f,%zu\n", n_new, len - 1, (t - t_step) * 1e3, kv_bytes_used(kv));
        t_step = t;
        cpu_step = cpu;
    }
    double t_decode = now_seconds() - t0 - t_prefill;
    if (g->print_ids) printf("\n");
    fflush(stdout);
    if (!g->quiet) print_summary(g, kv, why, n_computed, n_new, t_prefill, t_decode, &shifts);
    return n_new;
}

// Perplexity of a token sequence under the model: s = [<|endoftext|>] + ids, every id predicted once.
// Chunks are fresh contexts of up to n_ctx tokens that overlap by one token (the last of a chunk is the
// first of the next), so no prediction ever needs a position beyond the table.
static void perplexity(const Model *m, RunState *s, KVCache *kv, const int *ids, int n_ids, FILE *logits_out,
                       double *mean_nll) {
    const Config *c = &m->config;
    if (n_ids < 1) die("nothing to score");
    int n = n_ids + 1, V = c->vocab_size;
    int *seq = xmalloc((size_t)n * sizeof(int), "the --ppl text");
    seq[0] = GPT2_EOT;
    memcpy(seq + 1, ids, (size_t)n_ids * sizeof(int));
    double total = 0.0;
    for (int start = 0; start < n - 1;) {
        int end = start + c->n_ctx < n ? start + c->n_ctx : n, len = end - start;
        kv->len = 0;
        forward(m, s, kv, seq + start, len, 0);
        for (int r = 0; r < len - 1; r += LOGIT_ROWS) {
            int rows = len - 1 - r < LOGIT_ROWS ? len - 1 - r : LOGIT_ROWS;
            compute_logits(m, s, s->xn + (size_t)r * c->n_embd, rows);
            if (logits_out && fwrite(s->logits, sizeof(float), (size_t)rows * V, logits_out) != (size_t)rows * V)
                die("cannot write the --logits file: %s", strerror(errno));
            for (int i = 0; i < rows; i++) { // -log softmax(logits)[target], in double
                const float *lg = s->logits + (size_t)i * V;
                float max = max_of(lg, V);
                double sum = 0.0;
                for (int j = 0; j < V; j++) sum += exp((double)lg[j] - max);
                total += log(sum) + max - lg[seq[start + r + i + 1]];
            }
        }
        start = end - 1;
    }
    free(seq);
    *mean_nll = total / n_ids;
}

// ----------------------------------------------------------------------------
// command line

typedef struct {
    const char *model_path;
    const char *tokenizer_path; // NULL: ./tokenizer.bin, then next to the binary
    const char *prompt;         // -p
    const char *prompt_file;    // -f
    const char *prompt_ids;     // --prompt-ids
    const char *ppl_path;       // --ppl
    const char *timings_path;   // --timings
    const char *logits_path;    // --logits
    const char *prompt_cache;   // --prompt-cache
    int n_tokens;
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    int threads;                // --threads, 0: adapt (OMP_NUM_THREADS or all cores at most)
    int kv_type;                // --kv-type: WEIGHT_F32, WEIGHT_F16 or WEIGHT_Q8
    int keep;                   // --keep K, or -1 when not given
    int seed_given, no_cache, tokenize, print_ids, quiet, ignore_eos, reference, context_shift;
} Options;

static void usage(FILE *out) {
    fprintf(out,
        "Usage: run MODEL.bin [options]\n"
        "       run --tokenize -p TEXT [-z tokenizer.bin]\n"
        "Generates text with GPT-2. stdout gets the prompt and the generated text; everything else goes to stderr.\n"
        "\n"
        "Prompt:\n"
        "  -p TEXT            prompt (default: empty, which starts from <|endoftext|>)\n"
        "  -f FILE            read the prompt from FILE ('-' for stdin), byte for byte: a trailing newline\n"
        "                     (as `echo` adds) is part of the prompt; use printf or echo -n to leave it out\n"
        "  --prompt-ids IDS   prompt as token ids, space- or comma-separated (printed as text, like -p)\n"
        "Generation:\n"
        "  -n N               tokens to generate (default 256; stops earlier at the context limit, unless\n"
        "                     --context-shift, or when the model writes <|endoftext|>, which is not printed)\n"
        "  --context-shift    at the context limit, drop the older half of the text after the first K\n"
        "                     tokens and go on (the rest is recomputed): -n may exceed the context\n"
        "  --keep K           with --context-shift: the first K tokens are always kept (default 0)\n"
        "  --ignore-eos       do not stop at <|endoftext|>: always generate N tokens\n"
        "  -t T               temperature (default 1.0; 0 = greedy)\n"
        "  --top-p P          nucleus sampling: keep the most likely tokens up to mass P (default 0.9; 1 = off)\n"
        "  --top-k K          keep only the K most likely tokens (default 0 = off)\n"
        "  -s SEED            random seed (default: from the clock; printed on stderr)\n"
        "  --no-cache         recompute every key and value of the whole sequence at every step\n"
        "  --kv-type T        store the KV cache's keys and values as f32 (default), f16 or int8\n"
        "  --prompt-cache FILE  reuse the keys and values of the longest prefix the prompt shares with the\n"
        "                     one saved in FILE, compute the rest, then save this prompt's in FILE\n"
        "  --reference        run the plain-loop kernels (the lesson's code) instead of the tuned ones\n"
        "  --threads N        use exactly N threads (default: all cores, or OMP_NUM_THREADS, and fewer\n"
        "                     while decoding if another program keeps a core busy)\n"
        "Other modes and outputs:\n"
        "  --tokenize         print the prompt's token ids on one line and exit (MODEL not needed)\n"
        "  --ppl FILE         print the perplexity of the text in FILE and exit\n"
        "  --print-ids        print generated token ids instead of text\n"
        "  --timings FILE     write a CSV row per generated token: step,position,ms,kv_bytes\n"
        "  --logits FILE      write each sampled step's logits as raw float32 (steps x vocab);\n"
        "                     with --ppl, the logits of every scored position\n"
        "  -z FILE            tokenizer (default: tokenizer.bin here, then next to this program)\n"
        "  -q                 no summary on stderr\n"
        "  -h, --help         this help\n"
        "Example: ./run model.bin -p \"Once upon a time\" -n 64 -t 0.8\n");
}

static long long parse_int(const char *flag, const char *s, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE) die("%s expects an integer, got '%s'", flag, s);
    if (v < lo || v > hi) die("%s must be between %lld and %lld, got %s", flag, lo, hi, s);
    return v;
}

static float parse_float(const char *flag, const char *s, double lo, double hi, int lo_open) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v)) die("%s expects a number, got '%s'", flag, s);
    if (v < lo || v > hi || (lo_open && v == lo))
        die("%s must be in %s%g, %g], got %s", flag, lo_open ? "(" : "[", lo, hi, s);
    return (float)v;
}

static uint64_t parse_seed(const char *s) {
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') die("-s expects a non-negative integer, got '%s'", s);
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE) die("-s expects a non-negative integer below 2^64, got '%s'", s);
    return (uint64_t)v;
}

// --kv-type: the same three formats as the weights, by the same names.
static int parse_kv_type(const char *s) {
    for (int t = WEIGHT_F32; t <= WEIGHT_Q8; t++)
        if (strcmp(s, WEIGHT_TYPE_NAME[t]) == 0) return t;
    die("--kv-type expects f32, f16 or int8, got '%s'", s);
    return WEIGHT_F32;
}

static void parse_options(Options *o, int argc, char **argv) {
    *o = (Options){.n_tokens = 256, .temperature = 1.0f, .top_p = 0.9f, .keep = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        int has_value = i + 1 < argc;
        // flags without a value
        if (strcmp(a, "--no-cache") == 0) { o->no_cache = 1; continue; }
        if (strcmp(a, "--tokenize") == 0) { o->tokenize = 1; continue; }
        if (strcmp(a, "--print-ids") == 0) { o->print_ids = 1; continue; }
        if (strcmp(a, "-q") == 0) { o->quiet = 1; continue; }
        if (strcmp(a, "--ignore-eos") == 0) { o->ignore_eos = 1; continue; }
        if (strcmp(a, "--reference") == 0) { o->reference = 1; continue; }
        if (strcmp(a, "--context-shift") == 0) { o->context_shift = 1; continue; }
        if (a[0] != '-' || strcmp(a, "-") == 0) {
            if (o->model_path) die("unexpected argument '%s' (the model is already '%s'); see --help", a, o->model_path);
            o->model_path = a;
            continue;
        }
        // flags with a value
        static const char *valued[] = {"-p", "-f", "--prompt-ids", "-n", "-t", "--top-p", "--top-k", "-s", "-z",
                                       "--ppl", "--timings", "--logits", "--threads", "--kv-type",
                                       "--prompt-cache", "--keep"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) known |= strcmp(a, valued[k]) == 0;
        if (!known) die("unknown option '%s'; see --help", a);
        if (!has_value) die("option %s needs a value; see --help", a);
        const char *v = argv[++i];
        if (strcmp(a, "-p") == 0) o->prompt = v;
        else if (strcmp(a, "-f") == 0) o->prompt_file = v;
        else if (strcmp(a, "--prompt-ids") == 0) o->prompt_ids = v;
        else if (strcmp(a, "-n") == 0) o->n_tokens = (int)parse_int(a, v, 0, INT_MAX);
        else if (strcmp(a, "-t") == 0) o->temperature = parse_float(a, v, 0.0, 100.0, 0);
        else if (strcmp(a, "--top-p") == 0) o->top_p = parse_float(a, v, 0.0, 1.0, 1);
        else if (strcmp(a, "--top-k") == 0) o->top_k = (int)parse_int(a, v, 0, INT_MAX);
        else if (strcmp(a, "-s") == 0) { o->seed = parse_seed(v); o->seed_given = 1; }
        else if (strcmp(a, "-z") == 0) o->tokenizer_path = v;
        else if (strcmp(a, "--ppl") == 0) o->ppl_path = v;
        else if (strcmp(a, "--timings") == 0) o->timings_path = v;
        else if (strcmp(a, "--logits") == 0) o->logits_path = v;
        else if (strcmp(a, "--threads") == 0) o->threads = (int)parse_int(a, v, 1, 1024);
        else if (strcmp(a, "--kv-type") == 0) o->kv_type = parse_kv_type(v);
        else if (strcmp(a, "--prompt-cache") == 0) o->prompt_cache = v;
        else if (strcmp(a, "--keep") == 0) o->keep = (int)parse_int(a, v, 0, INT_MAX);
    }
    if ((o->prompt != NULL) + (o->prompt_file != NULL) + (o->prompt_ids != NULL) > 1)
        die("give the prompt one way only: -p, -f or --prompt-ids");
    if (o->tokenize && o->prompt_ids) die("--tokenize needs a text prompt (-p or -f), not --prompt-ids");
    if (o->prompt_cache && o->no_cache)
        die("--prompt-cache reuses a prompt's keys and values, and --no-cache recomputes them at every step: use one or the other");
    if (o->prompt_cache && o->ppl_path)
        die("--prompt-cache is for generation: --ppl scores the text in fresh contexts, with no prompt to reuse");
    if (o->keep >= 0 && !o->context_shift) die("--keep K only applies with --context-shift; add --context-shift");
    if (o->context_shift && o->ppl_path)
        die("--context-shift is for generation: --ppl already scores a long text in fresh contexts of n_ctx tokens");
    if (!o->model_path && !o->tokenize)
        die("no model given; usage: run MODEL.bin -p \"Once upon a time\" (HINT: python3 export_gpt2.py gpt2 model.bin)");
}

// Parses "12 345,6" into ids, each checked against the vocabulary.
static int *parse_ids(const char *s, int vocab_size, int *n_out) {
    size_t cap = strlen(s) / 2 + 1;
    int *ids = xmalloc(cap * sizeof(int), "the prompt ids");
    int n = 0;
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') { s++; continue; }
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno == ERANGE || (*end && !strchr(" ,\t\n", *end)))
            die("--prompt-ids expects integers separated by spaces or commas, got '%s'", s);
        if (v < 0 || v >= vocab_size) die("prompt token id %ld is outside this model's vocabulary (0..%d)", v, vocab_size - 1);
        ids[n++] = (int)v;
        s = end;
    }
    *n_out = n;
    return ids;
}

// tokenizer.bin: the -z path, else ./tokenizer.bin, else the one next to this executable.
static void load_tokenizer(Tokenizer *t, MappedFile *f, const char *path) {
    char err[ERR_LEN], beside[PATH_MAX + 32];
    if (!path) {
        path = "tokenizer.bin";
        if (access(path, R_OK) != 0) {
            ssize_t n = readlink("/proc/self/exe", beside, PATH_MAX);
            if (n > 0) {
                beside[n] = '\0';
                char *slash = strrchr(beside, '/');
                if (slash) {
                    strcpy(slash + 1, "tokenizer.bin");
                    if (access(beside, R_OK) == 0) path = beside;
                }
            }
        }
    }
    if (map_file(f, path, "tokenizer", err) != 0) die("%s (HINT: run from the project directory, or pass -z path/to/tokenizer.bin)", err);
    if (tokenizer_init(t, f->data, f->size, err) != 0) die("tokenizer '%s': %s", path, err);
}

// A text tokenized with the full GPT-2 vocabulary can still hold ids a smaller test model lacks.
static void check_in_vocab(const int *ids, int n, int vocab_size, const char *what) {
    for (int i = 0; i < n; i++)
        if (ids[i] >= vocab_size) die("%s token %d is outside this model's vocabulary (%d)", what, ids[i], vocab_size);
}

static int *encode_text(const Tokenizer *t, const char *text, size_t len, int *n_out) {
    int *ids;
    size_t n;
    if (tokenizer_encode(t, (const unsigned char *)text, len, &ids, &n) != 0) die("out of memory while tokenizing");
    if (n > INT_MAX) die("text too long (%zu tokens)", n);
    *n_out = (int)n;
    return ids;
}

static FILE *open_output(const char *path, const char *flag) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s file '%s': %s", flag, path, strerror(errno));
    return f;
}

static void close_output(FILE *f, const char *flag) {
    if (!f) return;
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) die("cannot finish writing the %s file: %s", flag, strerror(errno));
}

#ifndef RUN_C_NO_MAIN
// --tokenize: the prompt's ids on one line. Any length: the context limit is only for generation.
static void print_token_ids(const Tokenizer *tok, const char *text, size_t len) {
    int n, *ids = encode_text(tok, text, len, &n);
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
}

// The --ppl text's tokens, checked against the model before anything runs.
static int *ppl_ids(const Options *o, const Tokenizer *tok, const Config *c, int *n_ids) {
    char err[ERR_LEN], *text;
    size_t len;
    if (read_file(o->ppl_path, &text, &len, err) != 0) die("--ppl: %s", err);
    int *ids = encode_text(tok, text, len, n_ids);
    free(text);
    if (*n_ids == 0) die("--ppl: '%s' has no tokens to score", o->ppl_path);
    if (*n_ids == INT_MAX) die("--ppl: '%s' is too long (%d tokens)", o->ppl_path, *n_ids);
    check_in_vocab(ids, *n_ids, c->vocab_size, "--ppl:");
    if (GPT2_EOT >= c->vocab_size)
        die("--ppl scores the text after <|endoftext|> (%d), which this model's vocabulary (%d) lacks", GPT2_EOT, c->vocab_size);
    if (c->n_ctx < 2) die("--ppl needs a context of at least 2 positions; this model's context is %d", c->n_ctx);
    return ids;
}

// The prompt's tokens: --prompt-ids, or the text encoded; an empty prompt is <|endoftext|>, the start of a
// new document, as GPT-2 was trained.
static int *prompt_ids(const Options *o, const Tokenizer *tok, const Config *c, const char *text, size_t len, int *n_ids) {
    int *ids = o->prompt_ids ? parse_ids(o->prompt_ids, c->vocab_size, n_ids) : encode_text(tok, text, len, n_ids);
    if (*n_ids == 0) {
        if (GPT2_EOT >= c->vocab_size)
            die("the empty prompt starts from <|endoftext|> (%d), which this model's vocabulary (%d) lacks; give a prompt", GPT2_EOT, c->vocab_size);
        ids[(*n_ids)++] = GPT2_EOT; // parse_ids and encode_text always leave room for one
    }
    if (*n_ids > c->n_ctx) die("the prompt is %d tokens long; this model's context is %d tokens", *n_ids, c->n_ctx);
    check_in_vocab(ids, *n_ids, c->vocab_size, "prompt");
    return ids;
}

static void print_model_line(const Model *m, double t_load, int fixed_threads) {
    const Config *c = &m->config;
    int threads = omp_get_max_threads();
    fprintf(stderr, "model: %d layers, %d heads, %d wide, %d positions, %d tokens (%.1fM parameters, %.1f MB mapped in %.2f s), %d thread%s%s\n",
            c->n_layer, c->n_head, c->n_embd, c->n_ctx, c->vocab_size, model_param_count(c) / 1e6, m->file.size / 1e6,
            t_load, threads, threads == 1 ? "" : "s", fixed_threads ? " (--threads)" : threads > 1 ? " (fewer under load)" : "");
}

static void run_perplexity(const Model *m, RunState *s, KVCache *kv, const int *ids, int n_ids, FILE *logits_out,
                           int quiet) {
    double t0 = now_seconds(), nll;
    perplexity(m, s, kv, ids, n_ids, logits_out, &nll);
    if (!isfinite(nll)) die("--ppl: the model computed a non-finite loss (NaN or infinity): its weights are corrupt");
    printf("tokens: %d\nmean nll: %.6f\nperplexity: %.4f\n", n_ids, nll, exp(nll));
    double t = now_seconds() - t0;
    if (!quiet) fprintf(stderr, "scored %d tokens in %.3f s (%.1f tok/s)\n", n_ids, t, n_ids / t);
}

// stdout carries the prompt, then the continuation: the text as given, or the --prompt-ids decoded.
static void print_prompt(const GenOptions *g, const char *text, size_t len, const int *ids, int n_ids, int from_ids) {
    if (g->print_ids) return;
    if (!from_ids) fwrite(text, 1, len, stdout);
    for (int i = 0; from_ids && i < n_ids; i++)
        if (ids[i] != GPT2_EOT) emit_token(g, ids[i], 0); // <|endoftext|> marks a document edge: never printed
    fflush(stdout);
}

static void run_generation(const Model *m, RunState *s, KVCache *kv, const Options *o, const GenOptions *g,
                           const int *ids, int n_ids) {
    const Config *c = &m->config;
    int *seq = xmalloc((size_t)c->n_ctx * sizeof(int), "the token sequence");
    memcpy(seq, ids, (size_t)n_ids * sizeof(int));
    uint64_t seed = o->seed_given ? o->seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    Sampler sampler;
    sampler_init(&sampler, c->vocab_size, o->temperature, o->top_p, o->top_k, seed);
    if (!o->quiet)
        fprintf(stderr, "seed: %llu, temperature %g, top-p %g, top-k %d, %s (%s keys and values)%s\n",
                (unsigned long long)seed, (double)o->temperature, (double)o->top_p, o->top_k,
                o->no_cache ? "no cache" : "kv cache", WEIGHT_TYPE_NAME[o->kv_type], o->reference ? ", reference kernels" : "");
    generate(m, s, kv, &sampler, seq, n_ids, g);
    sampler_free(&sampler);
    free(seq);
}

// The KV-cache options this model cannot honour: int8 blocks that would straddle two heads, a --keep that
// leaves nothing to drop.
static void check_cache_options(const Options *o, const Config *c) {
    if (o->kv_type == WEIGHT_Q8 && (c->n_embd / c->n_head) % Q8_BLOCK != 0)
        die("--kv-type int8 stores each head's keys and values in blocks of %d numbers, so it needs a head size "
            "that is a multiple of %d; this model's is %d (use --kv-type f16)", Q8_BLOCK, Q8_BLOCK, c->n_embd / c->n_head);
    if (o->keep >= c->n_ctx - 1)
        die("--keep %d leaves nothing to drop in this model's %d-position context (at most %d)", o->keep, c->n_ctx,
            c->n_ctx - 2);
}

// Everything after the tokenizer: load the model, check the inputs against it, then score or generate.
static void run_model(const Options *o, const Tokenizer *tok, const char *prompt, size_t prompt_len) {
    char err[ERR_LEN];
    if (o->prompt_cache) pcache_check_path(o->prompt_cache); // before any work
    Model model;
    double t_load = now_seconds();
    if (model_load(&model, o->model_path, err) != 0) die("%s", err);
    t_load = now_seconds() - t_load;
    const Config *c = &model.config;
    if (tok && !o->ppl_path && !o->print_ids && c->vocab_size > tokenizer_vocab_size(tok))
        die("the model's vocabulary (%d) is larger than the tokenizer's (%d); use --print-ids", c->vocab_size,
            tokenizer_vocab_size(tok));
    int n_ids;
    int *ids = o->ppl_path ? ppl_ids(o, tok, c, &n_ids) : prompt_ids(o, tok, c, prompt, prompt_len, &n_ids);
    check_cache_options(o, c);
    PromptCache pc = {o->prompt_cache, o->prompt_cache ? model_fingerprint(&model) : 0,
                      o->reference ? 0 : (uint32_t)tuned_vector_width()};
    GenOptions g = {.tok = tok, .print_ids = o->print_ids, .n_tokens = o->n_tokens, .no_cache = o->no_cache,
                    .ignore_eos = o->ignore_eos, .quiet = o->quiet, .prompt_cache = o->prompt_cache ? &pc : NULL,
                    .context_shift = o->context_shift, .keep = o->keep > 0 ? o->keep : 0};
    if (o->timings_path && !o->ppl_path) {
        g.timings = open_output(o->timings_path, "--timings");
        fprintf(g.timings, "step,position,ms,kv_bytes\n");
    }
    if (o->logits_path) g.logits_out = open_output(o->logits_path, "--logits");

    if (o->threads) omp_set_num_threads(o->threads);
    g.tuner = thread_tuner_new(omp_get_max_threads(), o->threads != 0);
    RunState state;
    run_state_init(&state, c, o->reference ? &PLAIN_KERNELS : &TUNED_KERNELS);
    KVCache kv;
    kv_cache_init(&kv, c, o->kv_type);
    if (!o->quiet) print_model_line(&model, t_load, o->threads != 0);
    if (o->ppl_path) {
        run_perplexity(&model, &state, &kv, ids, n_ids, g.logits_out, o->quiet);
    } else {
        print_prompt(&g, prompt, prompt_len, ids, n_ids, o->prompt_ids != NULL);
        run_generation(&model, &state, &kv, o, &g, ids, n_ids);
        close_output(g.timings, "--timings");
    }
    close_output(g.logits_out, "--logits");
    free(ids);
    free(g.tuner);
    kv_cache_free(&kv);
    run_state_free(&state);
    model_free(&model);
}

int main(int argc, char **argv) {
    Options o;
    parse_options(&o, argc, argv);
    char err[ERR_LEN], *text = NULL; // the -f file's contents
    size_t text_len = 0;
    if (o.prompt_file && read_file(o.prompt_file, &text, &text_len, err) != 0) die("prompt file: %s", err);
    if (o.prompt) text_len = strlen(o.prompt);
    const char *prompt = o.prompt ? o.prompt : text ? text : "";

    Tokenizer tok;
    MappedFile tok_file = {0};
    int need_tokenizer = o.tokenize || o.ppl_path || !o.print_ids || (text_len > 0 && !o.prompt_ids);
    if (need_tokenizer) load_tokenizer(&tok, &tok_file, o.tokenizer_path);
    if (o.tokenize) print_token_ids(&tok, prompt, text_len);
    else run_model(&o, need_tokenizer ? &tok : NULL, prompt, text_len);

    if (fflush(stdout) != 0 || ferror(stdout)) die("cannot write to stdout");
    if (need_tokenizer) {
        tokenizer_free(&tok);
        unmap_file(&tok_file);
    }
    free(text);
    return 0;
}
#endif

// ============================================================================
// TUNED KERNELS. A first reading may stop here.
//
// The twins of matmul(), attention() and gelu(): the same contracts and the same results up to float
// rounding (tests/test_kernels.c compares each pair), and the same row property (a row's numbers do not
// depend on T). Each trick is here because `make bench` showed what it buys (the README has the figures):
//   - dot_block(): a block of 4 token rows x 4 weight rows, so every weight vector loaded serves 4 tokens
//     and every input vector 4 weights. This reuse is what makes a batched prefill compute-bound rather
//     than memory-bound; in_register() keeps the block's vectors in registers.
//   - matmul_streaming(): a decode step (T = 1) uses each weight once, so its speed is the speed of reading
//     the weights: pieces of rows from a shared counter, each read as four long streams, an order the
//     hardware prefetchers follow.
//   - q8_group(): int8 weights times int8 inputs with VNNI's vpdpbusd, 64 multiply-adds per instruction
//     against 16 for a float FMA; model.bin interleaves 16 weight rows so that each int32 lane is one
//     output and a group of rows is one sequential stream.
//   - exp_fast(): an exp the compiler can vectorize, for GELU, the softmax and the sampler.
//   - attention_tuned(): a job of ATT_ROWS query rows shares every key and value it loads.
// ============================================================================

// A vector of floats as wide as the CPU's widest registers: 16 with AVX-512, else 8 (AVX on x86, two
// NEON registers on ARM). GCC and clang compile arithmetic on it to SIMD instructions: a portable
// stand-in for intrinsics. The Makefile builds for this machine (-march=native), which is what lets
// the compiler use AVX-512 here; `make NATIVE=` builds the portable 8-wide path. `make VEC=8` keeps 8-wide
// vectors on an AVX-512 CPU: on CPUs that run a 512-bit instruction as two 256-bit halves (AMD Zen 4)
// that is the faster choice; the README has the measurement.
#ifndef VEC
#if defined(__AVX512F__)
#define VEC 16
#else
#define VEC 8
#endif
#endif
#if VEC != 8 && !(VEC == 16 && defined(__AVX512F__))
#error "VEC must be 8, or 16 on a CPU with AVX-512"
#endif
typedef float vecf __attribute__((vector_size(VEC * sizeof(float))));
static int tuned_vector_width(void) { return VEC; }

static inline vecf load_floats(const float *p) {
    vecf v;
    memcpy(&v, p, sizeof v); // an unaligned vector load; memcpy keeps it legal C
    return v;
}

// An int8 block's scale as a float (F16C converts in one instruction; f16_to_f32 is the same value).
static inline float q8_scale(const Matrix *w, size_t i) {
#if defined(__F16C__)
    return _cvtsh_ss(w->scales[i / Q8_BLOCK]);
#else
    return f16_to_f32(w->scales[i / Q8_BLOCK]);
#endif
}

// VEC weights of w starting at element i, converted to floats in registers: the stored bytes are all
// that is read from memory. int8 comes back unscaled: the caller multiplies by the block's scale, read
// once per block of 32 (q times a half-precision scale is exact in float, so the products are exactly
// weight_at()'s values).
static inline vecf load_weights(const Matrix *w, size_t i, const int type) {
    vecf v;
    if (type == WEIGHT_F32) return load_floats((const float *)w->data + i);
    if (type == WEIGHT_F16) {
        const uint16_t *h = (const uint16_t *)w->data + i;
#if VEC == 16
        v = (vecf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
#elif defined(__F16C__) && defined(__AVX__)
        v = (vecf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
#else
        for (int j = 0; j < VEC; j++) v[j] = f16_to_f32(h[j]);
#endif
        return v;
    }
    const int8_t *q = (const int8_t *)w->data + i;
#if VEC == 16
    v = (vecf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
#elif defined(__AVX2__)
    v = (vecf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
#else
    for (int j = 0; j < VEC; j++) v[j] = (float)q[j];
#endif
    return v;
}

// a * b + c in every lane. The build turns off the compiler's own fusing of a*b+c (-ffp-contract=off):
// it fused some unrolled copies of a loop and not others, which changed the last bit of a row between a
// 1-token and a many-token pass (tests/test_kernels.c caught it). So the one FMA the engine relies on is
// spelled out here; elsewhere it is a multiply then an add, equally deterministic.
static inline vecf fma_vec(vecf a, vecf b, vecf c) {
#if VEC == 16
    return (vecf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && defined(__x86_64__)
    return (vecf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

// Returns v, pinned in a register. Without the pin GCC folds each load into every FMA that uses it
// (vfmadd231ps from memory), so the 4 x 4 block below issues 20 loads per 16 FMAs instead of 8 and runs
// out of load ports. The empty asm emits no instruction; it only tells the compiler the value must be in
// a register.
static inline vecf in_register(vecf v) {
#if defined(__x86_64__) && defined(__AVX__) // a vecf fits one register only with AVX (AVX-512 for 16 lanes)
    __asm__("" : "+v"(v));
#endif
    return v;
}

// The lanes' sum in a fixed order, so results never depend on a caller: 16 lanes are first folded to 8.
// (Written out: a loop over the lanes compiled to a round trip through memory for every output.)
typedef float vec8 __attribute__((vector_size(8 * sizeof(float))));
static inline float sum8(vec8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
static inline float sum_lanes(vecf v) {
#if VEC == 16
    return sum8(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
#else
    return sum8(v);
#endif
}

// out[t][o * step] = bias[o * step] + dot(x row t, w row o * step) for a block of TB token rows and OB
// weight rows; w's row o * step starts at element w0 + o * step * ldw (step > 1 when decode walks several
// streams of rows at once). Each weight vector loaded is used TB times and each input vector OB times
// from registers: this reuse is what lets a batched prefill run near the FMA peak while a T = 1 decode is
// limited by memory. Called with constant TB, OB and TYPE, so the compiler unrolls it into straight-line
// vector code for each weight type.
static inline __attribute__((always_inline)) void
dot_block(float *out, size_t ldo, const float *x, size_t ldx, const Matrix *w, size_t w0, size_t ldw,
          const float *bias, int n, size_t step, const int TB, const int OB, const int TYPE) {
    vecf acc[4][4];
    float tail[4][4];
    for (int t = 0; t < TB; t++)
        for (int o = 0; o < OB; o++) {
            acc[t][o] = (vecf){0};
            tail[t][o] = 0.0f;
        }
    const int STEP = TYPE == WEIGHT_Q8 ? Q8_BLOCK : VEC; // int8: a whole block, so one scale per row
    int k = 0;
    for (; k + STEP <= n; k += STEP) {
        float scale[4];
        for (int o = 0; o < OB; o++) scale[o] = TYPE == WEIGHT_Q8 ? q8_scale(w, w0 + o * step * ldw + k) : 1.0f;
        for (int v = k; v < k + STEP; v += VEC) {
            vecf xv[4];
            for (int t = 0; t < TB; t++) xv[t] = in_register(load_floats(x + t * ldx + v));
            for (int o = 0; o < OB; o++) {
                vecf wv = load_weights(w, w0 + o * step * ldw + v, TYPE);
                wv = in_register(TYPE == WEIGHT_Q8 ? wv * scale[o] : wv);
                for (int t = 0; t < TB; t++) acc[t][o] = fma_vec(xv[t], wv, acc[t][o]);
            }
        }
    }
    for (; k < n; k++) // the last n % VEC inputs (only tiny test models have any; int8 rows have none)
        for (int t = 0; t < TB; t++)
            for (int o = 0; o < OB; o++) tail[t][o] += x[t * ldx + k] * weight_at(w, w0 + o * step * ldw + k);
    for (int t = 0; t < TB; t++)
        for (int o = 0; o < OB; o++)
            out[t * ldo + o * step] = (bias ? bias[o * step] : 0.0f) + (sum_lanes(acc[t][o]) + tail[t][o]);
}

// The same block for any tb <= 4, ob <= 4 and weight type: dispatches to a constant-shaped copy.
static void dot_block_any(float *out, size_t ldo, const float *x, size_t ldx, const Matrix *w, size_t w0,
                          size_t ldw, const float *bias, int n, size_t step, int tb, int ob) {
#define DOT_TYPES(TB, OB)                                                                                  \
    case (TB) * 8 + (OB):                                                                                  \
        if (w->type == WEIGHT_F32) dot_block(out, ldo, x, ldx, w, w0, ldw, bias, n, step, TB, OB, WEIGHT_F32); \
        else if (w->type == WEIGHT_F16) dot_block(out, ldo, x, ldx, w, w0, ldw, bias, n, step, TB, OB, WEIGHT_F16); \
        else dot_block(out, ldo, x, ldx, w, w0, ldw, bias, n, step, TB, OB, WEIGHT_Q8);                    \
        return;
    switch (tb * 8 + ob) {
        DOT_TYPES(1, 1) DOT_TYPES(1, 2) DOT_TYPES(1, 3) DOT_TYPES(1, 4)
        DOT_TYPES(2, 1) DOT_TYPES(2, 2) DOT_TYPES(2, 3) DOT_TYPES(2, 4)
        DOT_TYPES(3, 1) DOT_TYPES(3, 2) DOT_TYPES(3, 3) DOT_TYPES(3, 4)
        DOT_TYPES(4, 1) DOT_TYPES(4, 2) DOT_TYPES(4, 3) DOT_TYPES(4, 4)
    }
#undef DOT_TYPES
}

// The next piece of n items for the calling thread: [*first, *first + returned count), 0 when none are
// left. Pieces are taken from a shared counter, big ones first (what is left over twice the thread count),
// then smaller and smaller down to min_items, so a thread on a slower core or memory channel takes fewer
// and the threads finish together. (Equal fixed shares left one thread waiting for the other.)
static int take_piece(int *next, int n, int min_items, int *first) {
    int k;
#pragma omp critical(take_piece)
    {
        *first = *next;
        k = (n - *next) / (2 * omp_get_num_threads());
        k = k < min_items ? min_items : k;
        k = k < n - *next ? k : n - *next;
        *next += k;
    }
    return k;
}

// matmul for T <= 4 token rows (a decode step): every weight is used at most 4 times, so the time is the
// time to read the weights once, and the access pattern decides it. A thread walks the four quarters of
// each piece of rows it takes side by side: four long sequential streams that the hardware prefetchers
// follow. (Four adjacent rows at a time, as the batched path below does, restarts the streams every 4
// rows.)
static void matmul_streaming(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in,
                             int n_out) {
    int next = 0;
#pragma omp parallel
    for (int o0, n; (n = take_piece(&next, n_out, 16, &o0)) > 0;) {
        int quarter = n / 4;
        for (int i = 0; i < quarter; i++) { // rows o0 + i, then a quarter, a half, three quarters further on
            int o = o0 + i;
            dot_block_any(out + o, (size_t)n_out, in, (size_t)n_in, w, (size_t)o * n_in, (size_t)n_in,
                          bias ? bias + o : NULL, n_in, (size_t)quarter, T, 4);
        }
        for (int o = o0 + 4 * quarter; o < o0 + n; o++) // the last n % 4 rows
            dot_block_any(out + o, (size_t)n_out, in, (size_t)n_in, w, (size_t)o * n_in, (size_t)n_in,
                          bias ? bias + o : NULL, n_in, 1, T, 1);
    }
}

// The 16 exact integer dot products of one block of a group (q: 512 bytes, 4 weights of each row in turn)
// with 32 inputs x. With AVX2, 16 rows x 4 weights are two registers: vpmaddubsw multiplies unsigned by
// signed bytes, so |w| (vpsignb) meets x with w's sign, and adds pairs into 16 bits (at most 2 x 128 x 127:
// no saturation); vpmaddwd by 1 then adds the pairs of pairs: each 32-bit lane is one row's 4 products.
static inline void q8_block_sums(const int8_t *q, const int8_t *x, int32_t isum[Q8_ROWS]) {
#if defined(__AVX2__)
    __m256i sum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int s = 0; s < Q8_BLOCK / 4; s++) {
        int32_t four;
        memcpy(&four, x + 4 * s, 4);
        __m256i xv = _mm256_set1_epi32(four);
        for (int half = 0; half < 2; half++) { // rows 0-7, then 8-15
            __m256i w = _mm256_loadu_si256((const __m256i *)(q + s * 64 + half * 32));
            __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
            sum[half] = _mm256_add_epi32(sum[half], _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
        }
    }
    _mm256_storeu_si256((__m256i *)isum, sum[0]);
    _mm256_storeu_si256((__m256i *)(isum + 8), sum[1]);
#else
    for (int r = 0; r < Q8_ROWS; r++) isum[r] = 0;
    for (int s = 0; s < Q8_BLOCK / 4; s++)
        for (int r = 0; r < Q8_ROWS; r++)
            for (int j = 0; j < 4; j++) isum[r] += x[4 * s + j] * q[(s * Q8_ROWS + r) * 4 + j];
#endif
}

// matmul_q8()'s twin for CPUs without AVX-512 VNNI: a group of Q8_ROWS rows at a time, like q8_group(),
// its blocks' integer sums from q8_block_sums(), then dot_q8()'s float steps, so the results are the plain
// loops' bit for bit. Compiled everywhere, so the tests check it on every machine.
static void matmul_q8_portable(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in,
                               int n_out) {
    int nb = n_in / Q8_BLOCK, n_groups = (n_out + Q8_ROWS - 1) / Q8_ROWS;
    int8_t *xq = xmalloc((size_t)T * n_in, "quantized input");
    float *xd = xmalloc((size_t)T * nb * sizeof(float), "quantized input");
    quantize_input(in, T * n_in, xq, xd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int g = 0; g < n_groups; g++)
        for (int t = 0; t < T; t++) {
            float acc[Q8_ROWS] = {0};
            for (int b = 0; b < nb; b++) {
                size_t row = (size_t)g * Q8_ROWS, col = (size_t)b * Q8_BLOCK; // the block's first weight
                const int8_t *q = (const int8_t *)w->data + q8_index(w, row, col);
                const int8_t *x = xq + (size_t)t * n_in + col;
                const uint16_t *ws = w->scales + q8_scale_index(w, row, col);
                int32_t isum[Q8_ROWS];
                q8_block_sums(q, x, isum);
                for (int r = 0; r < Q8_ROWS; r++)
                    acc[r] = fmaf((float)isum[r], xd[(size_t)t * nb + b] * f16_to_f32(ws[r]), acc[r]);
            }
            for (int r = 0; r < Q8_ROWS && g * Q8_ROWS + r < n_out; r++) {
                int o = g * Q8_ROWS + r;
                out[(size_t)t * n_out + o] = (bias ? bias[o] : 0.0f) + acc[r];
            }
        }
    free(xq);
    free(xd);
}

// matmul_q8()'s twin, for int8 weights: the same integer algorithm. Its integer sums are exact, and it
// does the float steps (the scales' product, one fused multiply-add per block, blocks in order, then the
// bias) exactly as dot_q8() does, so its output is bit-identical to the plain loops' whatever the T.
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) // whatever VEC is: int32 lanes, not vecf
#define Q8_TOKENS 64  // token rows that share a group's weights as they pass through registers
#define Q8_AHEAD 2048 // bytes q8_group() prefetches ahead of the block it reads: 4 blocks

// Group g of Q8_ROWS weight rows (rows 16g .. 16g + 15), for token rows t0 .. t1 - 1. model.bin stores a
// group's blocks one after another, each already in the order vpdpbusd wants (see the model file's
// layout), so the group is one sequential stream of 16 x n_in bytes that the hardware prefetchers follow.
// Rows past n_out (the padding of a last group) are computed and not stored. xq, xd: the quantized
// inputs; xsum: -128 x each input block's sum.
static void q8_group(float *out, const int8_t *xq, const float *xd, const int32_t *xsum, const Matrix *w,
                     const float *bias, int t0, int t1, int n_in, int n_out, int g) {
    int nb = n_in / Q8_BLOCK, o0 = g * Q8_ROWS;
    const int8_t *blocks = (const int8_t *)w->data + q8_index(w, (size_t)o0, 0);
    const uint16_t *scales = w->scales + q8_scale_index(w, (size_t)o0, 0);
    // The hardware prefetchers follow the stream, but not far enough ahead to keep DRAM busy for one
    // thread: each block also asks for the bytes Q8_AHEAD further on, into L2. (Beyond the matrix's end
    // a prefetch simply fetches unrelated bytes; it never faults.)
    const char *ahead = (const char *)blocks + Q8_AHEAD;
    __m512 acc[Q8_TOKENS];
    for (int t = t0; t < t1; t++) acc[t - t0] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        // Lane r of wt[s] holds weights 4s..4s+3 of row r. One vpdpbusd multiplies 4 weights of each of 16
        // rows by the same 4 inputs (broadcast) and adds them into that row's lane: no horizontal sums, and
        // the 16 lanes are 16 consecutive outputs. vpdpbusd wants one operand unsigned, so the weights get
        // +128 (xor 0x80) and xsum takes 128 x the inputs' sum off.
        __m512i wt[8];
        for (int line = 0; line < 512; line += 64) _mm_prefetch(ahead + (size_t)b * 512 + line, _MM_HINT_T1);
        for (int s = 0; s < 8; s++)
            wt[s] = _mm512_xor_si512(_mm512_loadu_si512(blocks + ((size_t)b * 8 + s) * 64), _mm512_set1_epi8((char)0x80));
        __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + (size_t)b * Q8_ROWS)));
        for (int t = t0; t < t1; t++) {
            const int8_t *x = xq + (size_t)t * n_in + b * Q8_BLOCK;
            // Four independent sums, so a decode step is not one long chain of vpdpbusd latencies
            // (integer sums come out the same in any order).
            __m512i part[4] = {_mm512_set1_epi32(xsum[(size_t)t * nb + b]), _mm512_setzero_si512(),
                               _mm512_setzero_si512(), _mm512_setzero_si512()};
            for (int s = 0; s < 8; s++) {
                int32_t four;
                memcpy(&four, x + 4 * s, 4);
                part[s % 4] = _mm512_dpbusd_epi32(part[s % 4], wt[s], _mm512_set1_epi32(four));
            }
            __m512i isum = _mm512_add_epi32(_mm512_add_epi32(part[0], part[1]), _mm512_add_epi32(part[2], part[3]));
            __m512 scale = _mm512_mul_ps(_mm512_set1_ps(xd[(size_t)t * nb + b]), ws);
            acc[t - t0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t - t0]);
        }
    }
    __mmask16 keep = (__mmask16)(n_out - o0 >= Q8_ROWS ? 0xFFFF : (1u << (n_out - o0)) - 1);
    __m512 b16 = bias ? _mm512_maskz_loadu_ps(keep, bias + o0) : _mm512_setzero_ps();
    for (int t = t0; t < t1; t++)
        _mm512_mask_storeu_ps(out + (size_t)t * n_out + o0, keep, _mm512_add_ps(b16, acc[t - t0]));
}

static void matmul_q8_tuned(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in,
                            int n_out) {
    int nb = n_in / Q8_BLOCK, n_groups = (n_out + Q8_ROWS - 1) / Q8_ROWS, next = 0;
    int8_t *xq = xmalloc((size_t)T * n_in, "quantized input");
    float *xd = xmalloc((size_t)T * nb * sizeof(float), "quantized input");
    int32_t *xsum = xmalloc((size_t)T * nb * sizeof(int32_t), "quantized input");
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int i = 0; i < T * nb; i++) { // block i of the T x n_in inputs: both threads work even when T = 1
            int8_t *q = xq + (size_t)i * Q8_BLOCK;
            quantize_input(in + (size_t)i * Q8_BLOCK, Q8_BLOCK, q, xd + i);
            int32_t sum = 0;
            for (int j = 0; j < Q8_BLOCK; j++) sum += q[j];
            xsum[i] = -128 * sum;
        }
        // Decode: pieces of consecutive groups (long streams), smaller towards the end, as in
        // matmul_streaming(); prefill: dynamic, for a thread slowed by another program.
        if (T <= 4) {
            for (int g0, n; (n = take_piece(&next, n_groups, 1, &g0)) > 0;)
                for (int g = g0; g < g0 + n; g++) q8_group(out, xq, xd, xsum, w, bias, 0, T, n_in, n_out, g);
        } else {
#pragma omp for schedule(dynamic) collapse(2)
            for (int t0 = 0; t0 < T; t0 += Q8_TOKENS)
                for (int g = 0; g < n_groups; g++)
                    q8_group(out, xq, xd, xsum, w, bias, t0, t0 + Q8_TOKENS < T ? t0 + Q8_TOKENS : T, n_in, n_out, g);
        }
    }
    free(xq);
    free(xd);
    free(xsum);
}
#else
// Without AVX-512 VNNI: the portable twin.
static void matmul_q8_tuned(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in,
                            int n_out) {
    matmul_q8_portable(out, in, w, bias, T, n_in, n_out);
}
#endif

// matmul()'s twin. Threads split the output rows, so each streams its own share of the weights. Within a
// thread, a tile of weight rows small enough to stay in L2 is reused by every token row before moving on.
// Both paths compute each output with the same dot_block arithmetic, so a row's result does not depend on T.
static void matmul_tuned(float *out, const float *in, const Matrix *w, const float *bias, int T, int n_in, int n_out) {
    if (w->type == WEIGHT_Q8) {
        matmul_q8_tuned(out, in, w, bias, T, n_in, n_out);
        return;
    }
    if (T <= 4) {
        matmul_streaming(out, in, w, bias, T, n_in, n_out);
        return;
    }
    size_t row_bytes = (size_t)n_in * (w->type == WEIGHT_F32 ? 4 : w->type == WEIGHT_F16 ? 2 : 1);
    int tile = (int)(128 * 1024 / row_bytes); // weight rows per ~128 KiB tile
    tile = tile < 4 ? 4 : tile / 4 * 4;
    int n_tiles = (n_out + tile - 1) / tile;
#pragma omp parallel for schedule(dynamic) // a thread slowed by another program does fewer tiles
    for (int i = 0; i < n_tiles; i++) {
        int o_end = (i + 1) * tile < n_out ? (i + 1) * tile : n_out;
        for (int t = 0; t < T; t += 4) {
            int tb = T - t < 4 ? T - t : 4;
            for (int o = i * tile; o < o_end; o += 4) {
                int ob = o_end - o < 4 ? o_end - o : 4;
                dot_block_any(out + (size_t)t * n_out + o, (size_t)n_out, in + (size_t)t * n_in, (size_t)n_in, w,
                              (size_t)o * n_in, (size_t)n_in, bias ? bias + o : NULL, n_in, 1, tb, ob);
            }
        }
    }
}

// e^x in plain float arithmetic, for the GELU and softmax loops. libm's expf is a call per element, which
// keeps those loops scalar; this is inlined and vectorized, and it performs the same operations in a
// vector lane as in a scalar tail, so a value never depends on where it sat in the batch.
// x = n ln2 + r with |r| <= ln2 / 2, so e^x = 2^n e^r; e^r is its Taylor series to r^7 (the next term is
// below 6e-9 relative) and 2^n is built directly in the float's exponent bits. Measured on every float
// in [-87, 88]: within 1.3 ulp of the exact e^x (tests/test_kernels.c checks 2 ulp).
static inline float exp_fast(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x; // keeps 2^n a normal float (e^-87 is 1.6e-38); NaN stays NaN
    // t = x / ln2 + 1.5 * 2^23. A float that large has no fraction bits, so the addition rounds x / ln2 to
    // the nearest integer n, and n sits in t's low mantissa bits (floorf would keep the loop scalar).
    const float shift = 12582912.0f;
    float t = x * 1.44269504f + shift;
    float n = t - shift;
    float r = (x - n * 0.693359375f) + n * 2.12194440e-4f; // x - n ln2; ln2 split so that n * 0.693359375 is exact
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t bits; // 2^n: exponent field n + 127, mantissa 0. Unsigned, so a NaN input is NaN out, not UB.
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 127) << 23; // t's bits are 0x4B400000 + n: the shift keeps only n + 127 (1 .. 254)
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// gelu()'s twin: 0.5 u (1 + tanh(z)) written as u * sigmoid(2z), the same function with one exp instead of
// a tanh, and that exp is exp_fast, so the loop vectorizes.
static void gelu_tuned(float *x, size_t n) {
    const float s = 0.7978845608028654f; // sqrt(2/pi)
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) {
        float u = x[i];
        float z = s * (u + 0.044715f * u * u * u);
        x[i] = u / (1.0f + exp_fast(-2.0f * z));
    }
}

// x[0] + ... + x[n-1] in VEC interleaved partial sums: vectorized, and always the same order for a given n.
static float sum_floats(const float *x, int n) {
    vecf acc = {0};
    int i = 0;
    for (; i + VEC <= n; i += VEC) acc += load_floats(x + i);
    float sum = sum_lanes(acc);
    for (; i < n; i++) sum += x[i];
    return sum;
}

// For R rows of attention weights (ldw apart) and the value rows of v (ldv numbers apart, starting at
// number v0; stored in v's type, converted in registers): out row r (ldo apart) = sum over j < n + r of
// weights[r][j] * value row j, the causal shape of R consecutive query rows. Columns go 4 vectors at a
// time (a whole 64-number head with AVX-512, so a decode step reads each value row once; half of it with
// 8-float vectors): each value vector loaded serves all R rows from registers, and each column is summed
// over j in order, so a row's result does not depend on R or on how the columns were grouped. (An int8
// vector lies inside one block of 32, since the caller's v0 and ldv are multiples of 32 for int8.)
#define WSUM_VECS 4
static inline __attribute__((always_inline)) void
weighted_sum_block(float *out, size_t ldo, const float *weights, size_t ldw, const Matrix *v, size_t v0, size_t ldv,
                   int n, int dim, const int R, const int TYPE) {
    int i = 0;
    for (; i + WSUM_VECS * VEC <= dim; i += WSUM_VECS * VEC) {
        vecf acc[ATT_ROWS][WSUM_VECS];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < WSUM_VECS; c++) acc[r][c] = (vecf){0};
        for (int j = 0; j < n + R - 1; j++) {
            size_t vj = v0 + j * ldv + i;
            vecf vv[WSUM_VECS];
            for (int c = 0; c < WSUM_VECS; c++) {
                vv[c] = load_weights(v, vj + VEC * c, TYPE); // int8: unscaled, so times its block's scale
                vv[c] = in_register(TYPE == WEIGHT_Q8 ? vv[c] * q8_scale(v, vj + VEC * c) : vv[c]);
            }
            for (int r = 0; r < R; r++) {
                if (j >= n + r) continue; // past row r's last key
                vecf wj = (vecf){0} + weights[r * ldw + j];
                for (int c = 0; c < WSUM_VECS; c++) acc[r][c] = fma_vec(wj, vv[c], acc[r][c]);
            }
        }
        for (int r = 0; r < R; r++) memcpy(out + r * ldo + i, acc[r], sizeof acc[r]);
    }
    for (; i < dim; i++) // the last columns of a head that is no multiple of 4 vectors (tiny test models)
        for (int r = 0; r < R; r++) {
            float a = 0.0f;
            for (int j = 0; j < n + r; j++) a = a + weights[r * ldw + j] * weight_at(v, v0 + j * ldv + i);
            out[r * ldo + i] = a;
        }
}

// The same for any R <= ATT_ROWS and any stored type: dispatches to a constant-shaped copy.
static void weighted_sum(float *out, size_t ldo, const float *weights, size_t ldw, const Matrix *v, size_t v0,
                         size_t ldv, int n, int dim, int rows) {
#define WSUM_TYPES(R)                                                                                          \
    case R:                                                                                                    \
        if (v->type == WEIGHT_F32) weighted_sum_block(out, ldo, weights, ldw, v, v0, ldv, n, dim, R, WEIGHT_F32); \
        else if (v->type == WEIGHT_F16) weighted_sum_block(out, ldo, weights, ldw, v, v0, ldv, n, dim, R, WEIGHT_F16); \
        else weighted_sum_block(out, ldo, weights, ldw, v, v0, ldv, n, dim, R, WEIGHT_Q8);                    \
        return;
    switch (rows) {
        WSUM_TYPES(1) WSUM_TYPES(2) WSUM_TYPES(3) WSUM_TYPES(4)
    }
#undef WSUM_TYPES
}

// The score loop asks for the keys and values of the positions 8 ahead: a head's matrix is one sequential
// stream, but a short one, that the hardware prefetchers pick up late. Both go into L2 (locality 2): asked
// into L1, the keys' prefetches waited for L1's few outstanding misses and held up the loop.
static inline void prefetch_slice(const Matrix *m, size_t first, int n) {
    size_t bytes = kv_number_bytes(m->type);
    const char *p = (const char *)m->data + first * bytes;
    for (size_t line = 0; line < n * bytes; line += 64) __builtin_prefetch(p + line, 0, 2);
}

// attention()'s twin. A job is up to ATT_ROWS consecutive rows of one head, with ATT_ROWS rows of scores per
// thread. Jobs are handed out one at a time: later rows see more keys, and a thread slowed by another
// program simply takes fewer jobs. Keys and values are loaded in the cache's type (f32, f16 or int8) and
// converted in registers, like weights: an int8 cache is a quarter of the bytes to read.
static void attention_tuned(float *out, const float *qkv, const KVCache *kv, int layer, int T, int pos, int n_head,
                            float *scores_all) {
    int C = kv->dim, hs = C / n_head, n_ctx = kv->n_ctx;
    int row_blocks = (T + ATT_ROWS - 1) / ATT_ROWS;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(dynamic, 1)
    for (int job = 0; job < row_blocks * n_head; job++) {
        int t0 = job / n_head * ATT_ROWS, h = job % n_head;
        const Matrix keys = kv_keys(kv, layer, h), values = kv_values(kv, layer, h); // read like weight rows
        int rows = T - t0 < ATT_ROWS ? T - t0 : ATT_ROWS;
        float *scores = scores_all + (size_t)omp_get_thread_num() * ATT_ROWS * n_ctx;
        // scores[r][j] = q_r . k_j for every key the block's last row sees; an earlier row ignores the
        // few keys past its own position (the causal mask).
        int n_keys_max = pos + t0 + rows;
        for (int j = 0; j < n_keys_max; j += 4) {
            int nk = n_keys_max - j < 4 ? n_keys_max - j : 4;
            int ahead = n_keys_max - (j + 8) < 4 ? n_keys_max - (j + 8) : 4; // see prefetch_slice()
            if (ahead > 0) {
                prefetch_slice(&keys, (size_t)(j + 8) * hs, ahead * hs);
                prefetch_slice(&values, (size_t)(j + 8) * hs, ahead * hs);
            }
            dot_block_any(scores + j, (size_t)n_ctx, qkv + (size_t)t0 * 3 * C + h * hs, (size_t)3 * C, &keys,
                          (size_t)j * hs, (size_t)hs, NULL, hs, 1, rows, nk);
        }
        for (int r = 0; r < rows; r++) {
            float *s = scores + (size_t)r * n_ctx;
            int n_keys = pos + t0 + r + 1; // this token sees itself and everything before it
            float max = -INFINITY;
            for (int j = 0; j < n_keys; j++) {
                s[j] *= scale;
                if (s[j] > max) max = s[j];
            }
            for (int j = 0; j < n_keys; j++) s[j] = exp_fast(s[j] - max);
            float sum = sum_floats(s, n_keys);
            for (int j = 0; j < n_keys; j++) s[j] /= sum; // softmax: the attention weights
        }
        weighted_sum(out + (size_t)t0 * C + h * hs, (size_t)C, scores, (size_t)n_ctx, &values, 0, (size_t)hs,
                     pos + t0 + 1, hs, rows);
    }
}


// ----------------------------------------------------------------------------
// threads under load
//
// When another program keeps a core busy, one of our threads shares that core and runs only part of the
// time, and every parallel region ends in a barrier that waits for it. A decode step is dozens of short
// regions, so it can take several times longer than with one thread fewer. (Prefill's regions are long
// and dynamically scheduled, so there the fast thread takes over the slow one's share.) Decode therefore
// watches its own steps and moves the thread count one at a time:
//   - when its threads waited for a core in two steps in a row (together they got TUNER_LOST of one
//     thread's time less CPU than threads x the step's time: only other programs take it), it tries one
//     thread fewer for two steps and keeps that count if the faster of them was clearly faster than the
//     current count's recent median (the first pays for the change: a thread let go keeps spinning on its
//     core for a while, and the one that stays may be sharing the busy core until the OS moves it). The
//     median, not the steps that set the trial off: on a VM the host can take both threads' CPU for a
//     step or two, and one thread beats those steps without being faster. A slow step alone
//     is not the signal: memory can be what was slow (a VM's read bandwidth can halve for seconds), and
//     one thread fewer does not help then; nor is the first step alone, which also maps the weights in;
//   - below the most it may use, it tries one thread more now and then, since load comes and goes.
// A trial that loses makes the next one of its kind wait twice as long (fewer threads: from 2 steps more
// of starving, so that load which stays is answered within a few steps). Fewer threads that won on the
// run's first few steps may have won against a disturbance of the start, which the median cannot yet
// outvote: the count in use then tries one thread more again after only TUNER_RECHECK steps.
// Output never depends on the thread count: every kernel computes a row the same way whoever runs it.
// thread_tuner_step() sees nothing but step times and CPU times, so the tests drive it with made-up ones.

#define TUNER_GAIN 0.9      // a trial count is kept if its faster step took at most this x the current count's median
#define TUNER_TRIAL_STEPS 2 // steps a trial runs
#define TUNER_LOST 0.4      // threads x a step's time - its CPU time above this x its time: they waited
#define TUNER_FIRST_WAIT 32 // steps before retrying a direction that lost, doubled after each loss
#define TUNER_DOWN_FIRST_WAIT 2 // ... but only 2 more starved ones for fewer threads: load that stays wins soon
#define TUNER_MAX_WAIT 512
#define TUNER_RECENT 8      // step times kept at the current count
#define TUNER_RECHECK 4     // steps before trying one thread more after fewer won on fewer than TUNER_RECENT steps

struct ThreadTuner {
    int max, n;                   // the most threads we may use, and the count in use
    int fixed;                    // --threads: never change
    int trial;                    // 0, or the count the steps now running try
    int trial_left;               // steps of the trial still to run after this one
    double trial_best;            // the trial's fastest step so far
    double recent[TUNER_RECENT];  // the latest step times at count n (a ring), recent_n of them valid
    int recent_n, recent_next;
    int starved_in_a_row;         // steps in a row whose threads waited for cores
    int down_wait, up_wait;       // steps before a trial of n - 1 (when starved), of n + 1
    int down_backoff, up_backoff; // the wait after a losing trial of that kind
    int changes, steps, steps_below_max;
};

static void thread_tuner_init(ThreadTuner *t, int max, int fixed) {
    *t = (ThreadTuner){.max = max, .n = max, .fixed = fixed, .down_backoff = TUNER_DOWN_FIRST_WAIT,
                       .up_wait = TUNER_FIRST_WAIT, .up_backoff = TUNER_FIRST_WAIT};
}

static int doubled(int wait) { return wait * 2 < TUNER_MAX_WAIT ? wait * 2 : TUNER_MAX_WAIT; }

static void tuner_remember(ThreadTuner *t, double seconds) {
    t->recent[t->recent_next] = seconds;
    t->recent_next = (t->recent_next + 1) % TUNER_RECENT;
    t->recent_n += t->recent_n < TUNER_RECENT;
}

// The median of the recent step times at the current count (the upper one of an even count).
static double tuner_recent_median(const ThreadTuner *t) {
    double v[TUNER_RECENT];
    int n = t->recent_n;
    memcpy(v, t->recent, sizeof v);
    for (int i = 1; i < n; i++) // insertion sort of at most 8
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return v[n / 2];
}

// Judges the trial's fastest step against what the current count does: the median of its recent steps,
// so that two disturbed steps (which set the trial off) do not decide alone. Load that stays keeps
// setting trials off, and wins once it fills half of the recent steps.
static void tuner_judge_trial(ThreadTuner *t, double seconds) {
    int down = t->trial < t->n;
    if (seconds <= TUNER_GAIN * tuner_recent_median(t)) { // the trial won: move to its count
        int early = down && t->recent_n < TUNER_RECENT;
        t->n = t->trial;
        t->recent_n = t->recent_next = 0;
        tuner_remember(t, seconds);
        t->changes++;
        t->up_backoff = TUNER_FIRST_WAIT;
        t->up_wait = early ? TUNER_RECHECK : TUNER_FIRST_WAIT;
        t->down_backoff = TUNER_DOWN_FIRST_WAIT;
        t->down_wait = 0;
    } else {
        if (down) {
            t->down_wait = t->down_backoff;
            t->down_backoff = doubled(t->down_backoff);
        } else {
            t->up_backoff = doubled(t->up_backoff);
            t->up_wait = t->up_backoff;
        }
    }
    t->trial = 0;
    t->starved_in_a_row = 0;
}

// Called after each decode step with the time it took and the CPU time all threads used in it; returns
// the thread count for the next step.
static int thread_tuner_step(ThreadTuner *t, double seconds, double cpu) {
    int threads = t->trial ? t->trial : t->n;
    int starved = threads * seconds - cpu > TUNER_LOST * seconds; // a thread waited for a core
    t->steps_below_max += threads < t->max;
    if (t->fixed || t->max == 1) return t->n;
    t->steps++;
    if (t->trial) {
        t->trial_best = seconds < t->trial_best ? seconds : t->trial_best;
        if (t->trial_left-- > 0) return t->trial;
        tuner_judge_trial(t, t->trial_best);
        return t->n;
    }
    tuner_remember(t, seconds);
    t->starved_in_a_row = starved ? t->starved_in_a_row + 1 : 0;
    t->down_wait -= t->down_wait > 0;
    t->up_wait -= t->up_wait > 0;
    if (t->n > 1 && t->starved_in_a_row >= 2 && t->down_wait == 0) t->trial = t->n - 1;
    else if (t->n < t->max && t->up_wait == 0) t->trial = t->n + 1;
    if (!t->trial) return t->n;
    t->trial_left = TUNER_TRIAL_STEPS - 1;
    t->trial_best = INFINITY;
    return t->trial;
}

static ThreadTuner *thread_tuner_new(int max, int fixed) {
    ThreadTuner *t = xmalloc(sizeof *t, "the thread tuner");
    thread_tuner_init(t, max, fixed);
    return t;
}

// One line for the summary, only when the count changed.
static void thread_tuner_report(const ThreadTuner *t) {
    if (t->changes == 0) return;
    fprintf(stderr, "threads: %d at the start, %d at the end; %d change%s, %d of %d steps on fewer than %d\n",
            t->max, t->n, t->changes, t->changes == 1 ? "" : "s", t->steps_below_max, t->steps, t->max);
}
