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
// The FMAs are written as intrinsics (when the target has them), so the figure does not depend on
// -ffp-contract: the Makefile builds everything with -ffp-contract=off, which would otherwise turn
// a*b+c into a multiply and an add and report half the machine.
// Usage: bench/machine [--read-only] [FILE]
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

// Sums a buffer with 4 vector accumulators per thread: the loads, not the adds, are the limit.
// Pass 0 is untimed (page faults); then at least `repeats` passes, and more until `seconds` have passed.
// Returns the best pass's GB/s; *mean gets all timed passes' bytes over their total time. This VM's
// bandwidth moves within a second (a pass can take twice as long as the one before), so the best pass
// is the machine at its fastest moment, and the mean what a longer read gets on average.
static double read_loop(const float *a, size_t bytes, int repeats, double seconds, double *mean) {
    size_t n = bytes / sizeof(float);
    double best = 1e30, sink = 0, timed = 0;
    int r = 0;
    for (; r <= repeats || timed < seconds; r++) {
        double t0 = now(), total = 0;
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
        double t = now() - t0;
        sink += total;
        if (r > 0 && t < best) best = t;
        if (r > 0) timed += t;
    }
    if (sink == 12345.0) printf("#\n"); // keeps the sums alive
    double pass_bytes = (double)(n / 32 * 32 * sizeof(float));
    if (mean) *mean = pass_bytes * (r - 1) / timed / 1e9;
    return pass_bytes / best / 1e9;
}

static double read_bandwidth(size_t bytes, int repeats, double seconds, double *mean) {
    size_t n = bytes / sizeof(float);
    float *a = malloc(bytes);
    if (!a) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7); // first touch by the thread that reads it
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
