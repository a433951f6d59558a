// machine.c -- measures the two physical limits the engine is judged against:
//   read bandwidth: GB/s streaming a buffer much larger than the caches, all threads (the decode roofline)
//   FMA peak:       GFLOP/s of independent fused multiply-adds, all threads (the prefill roofline)
// Prints "key value" lines, one per figure (bench/bench.py parses them):
//   threads N          OpenMP threads used (OMP_NUM_THREADS, else every core)
//   read_gbps X        best read bandwidth, GB/s (1e9 bytes): the fastest pass over the buffer
//   read_mean_gbps M   the same passes' bytes over their total time: the bandwidth of the moment, as a
//                      decode run of a second or more gets it (--read-only keeps passing for half a second)
//   fma_gflops Y       FMA throughput at the widest vectors this build has, GFLOP/s (an FMA counts as 2):
//                      16 floats (AVX-512 zmm) when the compiler targets AVX-512F, else 8; run.c's
//                      kernels use the same widest vectors
//   fma8_gflops Y8     the same with 8-float (256-bit) vectors, for comparison
//   fma_width W        floats per vector of fma_gflops (16 or 8)
//   file_read_gbps Z   only with a FILE argument (the model): the same read loop over FILE mmapped read-only
//                      from the page cache, which is how run.c reads its weights (after one untimed pass)
// Best of several repeats, like the rest of the bench.
//
// --split B1,B2,...: what a read loses when it is split the way a decode step reads its weights, one
// parallel read per matrix of B1, B2, ... bytes with the threads meeting at the end of each (a step's
// next matrix needs the last one's output). Pairs of passes over one buffer for about 3 seconds: all
// the bytes in one parallel read, and the same bytes piece by piece (which goes first alternates). A
// pair's passes are milliseconds apart, so both see the same moment of this VM's bandwidth. Prints:
//   split_ratio R      the pairs' median of (split pass GB/s) / (whole pass GB/s)
//   split_pairs N      how many pairs
//
// The FMAs are written as intrinsics (when the target has them), so the figure does not depend on
// -ffp-contract: the Makefile builds everything with -ffp-contract=off, which would otherwise turn
// a*b+c into a multiply and an add and report half the machine.
// Usage: bench/machine [--read-only] [FILE]
//        bench/machine --split B1,B2,...
// Build: cc -O3 -march=native -fopenmp bench/machine.c -o bench/machine
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && (defined(__FMA__) || defined(__AVX512F__))
#include <immintrin.h>
#endif

typedef float vec8 __attribute__((vector_size(32)));
typedef float vec16 __attribute__((vector_size(64)));

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int n_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Macros rather than functions: no vector-typed function arguments (GCC's -Wpsabi without -mavx).
#if defined(__x86_64__) && defined(__FMA__)
#define fma8(a, b, c) ((vec8)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#else
#define fma8(a, b, c) ((a) * (b) + (c)) // fused only if the compiler contracts it
#endif
#if defined(__x86_64__) && defined(__AVX512F__)
#define fma16(a, b, c) ((vec16)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define WIDEST 16
#else
#define WIDEST 8
#endif

// One parallel pass over the first n / 32 * 32 floats of a, 4 vector accumulators per thread: the loads,
// not the adds, are the limit. Returns a sum that keeps the loads alive.
static double read_pass(const float *a, size_t n) {
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t blk = 0; blk < n / 32; blk++) {
        vec8 s0, s1, s2, s3;
        memcpy(&s0, a + blk * 32, 32);
        memcpy(&s1, a + blk * 32 + 8, 32);
        memcpy(&s2, a + blk * 32 + 16, 32);
        memcpy(&s3, a + blk * 32 + 24, 32);
        vec8 s = (s0 + s1) + (s2 + s3);
        total += s[0] + s[7];
    }
    return total;
}

// Reads a buffer pass after pass. Pass 0 is untimed (page faults); then at least `repeats` passes, and
// more until `seconds` have passed. Returns the best pass's GB/s; *mean gets all timed passes' bytes over
// their total time. This VM's bandwidth moves within a second (a pass can take twice as long as the one
// before), so the best pass is the machine at its fastest moment, and the mean what a longer read gets
// on average.
static double read_loop(const float *a, size_t bytes, int repeats, double seconds, double *mean) {
    size_t n = bytes / sizeof(float);
    double best = 1e30, sink = 0, timed = 0;
    int r = 0;
    for (; r <= repeats || timed < seconds; r++) {
        double t0 = now();
        sink += read_pass(a, n);
        double t = now() - t0;
        if (r > 0 && t < best) best = t;
        if (r > 0) timed += t;
    }
    if (sink == 12345.0) printf("#\n"); // keeps the sums alive
    double pass_bytes = (double)(n / 32 * 32 * sizeof(float));
    if (mean) *mean = pass_bytes * (r - 1) / timed / 1e9;
    return pass_bytes / best / 1e9;
}

// A buffer of n floats, first touched by the threads that will read it.
static float *read_buffer(size_t n) {
    float *a = malloc(n * sizeof(float));
    if (!a) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    return a;
}

static double read_bandwidth(size_t bytes, int repeats, double seconds, double *mean) {
    float *a = read_buffer(bytes / sizeof(float));
    double gbps = read_loop(a, bytes, repeats, seconds, mean);
    free(a);
    return gbps;
}

// The same loop over a file mapped like run.c maps model.bin (read-only, private, not populated).
static double file_read_bandwidth(const char *path, int repeats) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 4096) {
        fprintf(stderr, "error: cannot open '%s'\n", path);
        exit(1);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, "error: cannot mmap '%s'\n", path);
        exit(1);
    }
    double gbps = read_loop(p, (size_t)st.st_size, repeats, 0, NULL);
    munmap(p, (size_t)st.st_size);
    return gbps;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// --split: see the top of the file. Pieces are rounded down to whole 128-byte blocks (read_pass's unit),
// and the whole pass reads exactly the bytes the pieces do.
#define MAX_PIECES 4096
#define SPLIT_PAIRS 2000
static void split_read(const char *spec) {
    static size_t floats[MAX_PIECES];
    static double ratios[SPLIT_PAIRS];
    int n_pieces = 0;
    size_t total = 0;
    for (const char *p = spec; *p;) {
        char *end;
        long long bytes = strtoll(p, &end, 10);
        if (end == p || bytes < 128 || n_pieces == MAX_PIECES || (*end && (*end != ',' || !end[1]))) {
            fprintf(stderr, "error: --split wants up to %d comma-separated sizes of at least 128 bytes\n", MAX_PIECES);
            exit(1);
        }
        floats[n_pieces] = (size_t)bytes / 128 * 32;
        total += floats[n_pieces++];
        p = *end ? end + 1 : end;
    }
    float *a = read_buffer(total);
    double sink = read_pass(a, total), start = now(); // an untimed pass: page faults
    int pairs = 0;
    while (pairs < SPLIT_PAIRS && (pairs < 5 || now() - start < 3.0)) {
        double t[2]; // [0] one read, [1] piece by piece; which goes first alternates
        for (int k = 0; k < 2; k++) {
            int split = k ^ (pairs & 1);
            double t0 = now();
            size_t off = 0;
            if (split)
                for (int i = 0; i < n_pieces; off += floats[i++]) sink += read_pass(a + off, floats[i]);
            else
                sink += read_pass(a, total);
            t[split] = now() - t0;
        }
        ratios[pairs++] = t[0] / t[1]; // the same bytes: the time ratio is the bandwidth ratio
    }
    if (sink == 12345.0) printf("#\n");
    qsort(ratios, (size_t)pairs, sizeof(double), cmp_double);
    printf("split_ratio %.3f\nsplit_pairs %d\n", pairs % 2 ? ratios[pairs / 2] : (ratios[pairs / 2 - 1] + ratios[pairs / 2]) / 2, pairs);
    free(a);
}

// 12 independent FMA chains per thread hide the FMA latency (4 cycles x 2 pipes needs >= 8).
#define CHAINS 12
#define FMA_LOOP(VEC, FMA, W)                                                                  \
    do {                                                                                       \
        VEC acc[CHAINS], m, b;                                                                 \
        for (int l = 0; l < (W); l++) {                                                        \
            m[l] = 1.0000001f;                                                                 \
            b[l] = 1e-7f;                                                                      \
        }                                                                                      \
        for (int j = 0; j < CHAINS; j++) acc[j] = m * (float)j;                                \
        for (long i = 0; i < iters; i++)                                                       \
            for (int j = 0; j < CHAINS; j++) acc[j] = FMA(acc[j], m, b);                       \
        for (int j = 0; j < CHAINS; j++) sink += acc[j][0];                                    \
    } while (0)

// GFLOP/s of `width`-float FMAs on every thread; 0 if this build has no such vectors.
static double fma_peak(int width, long iters, int repeats) {
#if !(defined(__x86_64__) && defined(__AVX512F__))
    if (width == 16) return 0;
#endif
    double best = 1e30;
    float sink = 0;
    for (int r = 0; r < repeats; r++) {
        double t0 = now();
#pragma omp parallel reduction(+ : sink)
        {
            if (width == 8) FMA_LOOP(vec8, fma8, 8);
#if defined(__x86_64__) && defined(__AVX512F__)
            else FMA_LOOP(vec16, fma16, 16);
#endif
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    if (sink == 12345.0f) printf("#\n");
    return 2.0 * width * CHAINS * (double)iters * n_threads() / best / 1e9;
}

int main(int argc, char **argv) {
    // --read-only: the bandwidth figures alone, the buffer read for half a second (about a second in
    // all): the bench takes one right before and right after a decode run.
    if (argc == 3 && strcmp(argv[1], "--split") == 0) {
        split_read(argv[2]);
        return 0;
    }
    int read_only = argc > 1 && strcmp(argv[1], "--read-only") == 0;
    if (read_only) argc--, argv++;
    int repeats = read_only ? 2 : 5;
    printf("threads %d\n", n_threads());
    double mean;
    printf("read_gbps %.2f\n", read_bandwidth((size_t)1 << 30, repeats, read_only ? 0.5 : 0, &mean));
    printf("read_mean_gbps %.2f\n", mean);
    fflush(stdout);
    if (argc > 1) {
        printf("file_read_gbps %.2f\n", file_read_bandwidth(argv[1], repeats));
        fflush(stdout);
    }
    if (read_only) return 0;
    // The peak is the widest width's, not the faster of the two: a noisy sample must not report an
    // 8-wide peak on an AVX-512 machine (on Zen 4 both widths reach the same FLOP/s).
    double f8 = fma_peak(8, 50000000, 5), widest = WIDEST == 16 ? fma_peak(16, 25000000, 5) : f8;
    printf("fma_gflops %.2f\n", widest);
    printf("fma8_gflops %.2f\n", f8);
    printf("fma_width %d\n", WIDEST);
    return 0;
}
