// machine.c -- measures the two physical limits the engine is judged against:
//   read bandwidth: GB/s streaming a buffer much larger than the caches, all threads (the decode roofline)
//   FMA peak:       GFLOP/s of independent 8-wide fused multiply-adds, all threads (the prefill roofline)
// Prints "read_gbps X" and "fma_gflops Y" lines. Best of several repeats, like the rest of the bench.
// Build: cc -O3 -march=native -ffp-contract=fast -fopenmp bench/machine.c -o bench/machine
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float vec8 __attribute__((vector_size(32)));

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Sums a buffer with 4 vector accumulators per thread: the loads, not the adds, are the limit.
static double read_bandwidth(size_t bytes, int repeats) {
    size_t n = bytes / sizeof(float);
    float *a = malloc(bytes);
    if (!a) { fprintf(stderr, "error: out of memory\n"); exit(1); }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7); // first touch by the thread that reads it
    double best = 1e30, sink = 0;
    for (int r = 0; r < repeats; r++) {
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
        if (t < best) best = t;
    }
    free(a);
    if (sink == 12345.0) printf("#\n"); // keeps the sums alive
    return bytes / best / 1e9;
}

// 12 independent FMA chains per thread hide the FMA latency (4 cycles x 2 pipes needs >= 8).
static double fma_peak(long iters, int repeats) {
    double best = 1e30;
    float sink = 0;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    for (int r = 0; r < repeats; r++) {
        double t0 = now();
#pragma omp parallel reduction(+ : sink)
        {
            vec8 acc[12], m = {1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f};
            vec8 b = {1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f};
            for (int j = 0; j < 12; j++) acc[j] = (vec8){(float)j};
            for (long i = 0; i < iters; i++)
                for (int j = 0; j < 12; j++) acc[j] = acc[j] * m + b;
            for (int j = 0; j < 12; j++) sink += acc[j][0];
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    if (sink == 12345.0f) printf("#\n");
    return 2.0 * 8 * 12 * (double)iters * threads / best / 1e9;
}

int main(void) {
    printf("read_gbps %.2f\n", read_bandwidth((size_t)1 << 30, 5));
    printf("fma_gflops %.2f\n", fma_peak(50000000, 5));
    return 0;
}
