// libFuzzer target: arbitrary bytes as a model.bin image -> model_parse.
// A rejected image must come with a one-line error message. An accepted one must have every tensor inside
// the image, 64-byte aligned, in file order without overlap, and exactly as large as the config says;
// then (for small configs) one short generation runs on it, so the kernels and the sampler see arbitrary
// shapes and arbitrary weights (NaN, infinities, denormals) under ASan and UBSan.
// Build and run: tests/fuzz/run_fuzz.sh
#define RUN_C_NO_MAIN
#include "../../run.c"
#include "one_line_error.h"

static const unsigned char *g_base;
static size_t g_size;
static uint64_t g_next; // end of the previous tensor: tensors must come in file order

static void check_bytes(const void *p, uint64_t n_bytes, const char *name) {
    const unsigned char *b = (const unsigned char *)p;
    if (!p || b < g_base || b > g_base + g_size) {
        fprintf(stderr, "tensor %s starts outside the image\n", name);
        abort();
    }
    uint64_t start = (uint64_t)(b - g_base), end = start + n_bytes;
    if (end > g_size || start % TENSOR_ALIGN != 0 || start < g_next || start < MODEL_HEADER_BYTES) {
        fprintf(stderr, "tensor %s at [%llu, %llu) of a %zu-byte image (previous ended at %llu)\n", name,
                (unsigned long long)start, (unsigned long long)end, g_size, (unsigned long long)g_next);
        abort();
    }
    g_next = end;
}

static void check_tensor(const float *p, uint64_t n_floats, const char *name) { check_bytes(p, n_floats * 4, name); }

// A matrix of the model's weight type: its values, then (int8) its scales, one per block of 32; int8 rows
// come in whole groups of Q8_ROWS.
static void check_matrix(const Matrix *m, int type, uint64_t rows, uint64_t cols, const char *name) {
    static const uint64_t bytes_per_weight[] = {4, 2, 1};
    if (type == WEIGHT_Q8) rows = (rows + Q8_ROWS - 1) / Q8_ROWS * Q8_ROWS;
    if (m->type != type || (type == WEIGHT_Q8) != (m->scales != NULL)) {
        fprintf(stderr, "matrix %s has type %d, the header says %d\n", name, m->type, type);
        abort();
    }
    check_bytes(m->data, rows * cols * bytes_per_weight[type], name);
    if (type == WEIGHT_Q8) check_bytes(m->scales, rows * (cols / Q8_BLOCK) * 2, name);
}

static void check_model(const Model *m) {
    const Config *c = &m->config;
    const Weights *w = &m->weights;
    uint64_t C = (uint64_t)c->n_embd;
    int t = c->weight_type;
    if (c->n_layer < 1 || c->n_head < 1 || c->n_embd < 1 || c->n_ctx < 1 || c->vocab_size < 1 ||
        c->n_embd % c->n_head != 0 || !(c->ln_eps > 0.0f && c->ln_eps < 1.0f) || t < WEIGHT_F32 || t > WEIGHT_Q8 ||
        (t == WEIGHT_Q8 && c->n_embd % Q8_BLOCK != 0)) {
        fprintf(stderr, "accepted a bad config\n");
        abort();
    }
    g_next = MODEL_HEADER_BYTES;
    check_matrix(&w->wte, t, (uint64_t)c->vocab_size, C, "wte");
    check_tensor(w->wpe, (uint64_t)c->n_ctx * C, "wpe");
    for (int l = 0; l < c->n_layer; l++) {
        const LayerWeights *L = &w->layers[l];
        check_tensor(L->ln1_w, C, "ln_1.w");
        check_tensor(L->ln1_b, C, "ln_1.b");
        check_matrix(&L->attn_w, t, 3 * C, C, "attn.w");
        check_tensor(L->attn_b, 3 * C, "attn.b");
        check_matrix(&L->attn_proj_w, t, C, C, "attn_proj.w");
        check_tensor(L->attn_proj_b, C, "attn_proj.b");
        check_tensor(L->ln2_w, C, "ln_2.w");
        check_tensor(L->ln2_b, C, "ln_2.b");
        check_matrix(&L->fc_w, t, 4 * C, C, "fc.w");
        check_tensor(L->fc_b, 4 * C, "fc.b");
        check_matrix(&L->fc_proj_w, t, C, 4 * C, "fc_proj.w");
        check_tensor(L->fc_proj_b, C, "fc_proj.b");
    }
    check_tensor(w->lnf_w, C, "ln_f.w");
    check_tensor(w->lnf_b, C, "ln_f.b");
    if (g_next != g_size) {
        fprintf(stderr, "accepted a %zu-byte image whose last tensor ends at %llu\n", g_size, (unsigned long long)g_next);
        abort();
    }
}

// A few tokens through the engine: prefill, cached decode and the sampler, with settings drawn from the
// image's bytes so different inputs try greedy, top-k and top-p, and both kernel sets.
static void run_small(const Model *m, const unsigned char *data, size_t size) {
    const Config *c = &m->config;
    if ((uint64_t)c->n_ctx * c->n_embd > 4096 || c->vocab_size > 4096) return;
    unsigned char k = data[size - 1];
    RunState s;
    KVCache kv;
    Sampler sm;
    run_state_init(&s, c, (k & 16) ? &PLAIN_KERNELS : &TUNED_KERNELS);
    kv_cache_init(&kv, c, WEIGHT_F32);
    float temperature = (k & 3) == 0 ? 0.0f : (float)(k & 3) * 0.5f;
    float top_p = (k & 4) ? 1.0f : 0.9f;
    int top_k = (k & 8) ? (k >> 4) : 0;
    sampler_init(&sm, c->vocab_size, temperature, top_p, top_k, k);
    int seq[8];
    int n = c->n_ctx < 8 ? c->n_ctx : 8;
    seq[0] = (int)(k % (unsigned)c->vocab_size);
    kv.len = 0;
    forward(m, &s, &kv, seq, 1, 0);
    for (int i = 1; i < n; i++) {
        compute_logits(m, &s, s.xn, 1);
        int next = sample(&sm, s.logits, c->vocab_size);
        if (next < 0 || next >= c->vocab_size) {
            fprintf(stderr, "sampled id %d outside 0..%d\n", next, c->vocab_size - 1);
            abort();
        }
        seq[i] = next;
        forward(m, &s, &kv, seq + i, 1, i);
    }
    sampler_free(&sm);
    kv_cache_free(&kv);
    run_state_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // The engine reads the weights through float pointers into an mmap (page-aligned); give it an
    // equally aligned copy of exactly `size` bytes so ASan sees any read past the end.
    unsigned char *buf = aligned_alloc(64, size ? (size + 63) / 64 * 64 : 64);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    Model m;
    memset(&m, 0, sizeof m);
    char err[ERR_LEN];
    memset(err, 'x', sizeof err);
    err[0] = '\0';
    g_base = buf;
    g_size = size;
    if (model_parse(&m, buf, size, err) == 0) {
        check_model(&m);
        run_small(&m, buf, size);
        free(m.weights.layers);
    } else {
        require_one_line_error(err, sizeof err);
    }
    free(buf);
    return 0;
}
