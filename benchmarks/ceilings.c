/* The machine's ceilings for single-thread softmax, for benchmarks/peers.py.
 *
 *   ceilings memory N REPS   bandwidths over N floats and the traffic bounds they imply:
 *                            a read-only pass (max), a read+write pass with ordinary and
 *                            with streaming stores; two-pass moves read + read/write,
 *                            three-pass recompute read + read + read/write.
 *   ceilings exp N REPS      the exp pass alone (exp(x - m), store, sum) on N floats in
 *                            L1: the compute ceiling of in-cache softmax.
 *
 * Build with cc -O2 -march=native: AVX-512 intrinsics where the CPU has them, plain loops
 * elsewhere.  Results are printed as key=value pairs on one line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#if defined(__AVX512F__)
/* AVX-512: what softgen's kernels use on such a machine */
__attribute__((noinline)) static float read_pass(const float *a, size_t n) {
    __m512 m0 = _mm512_set1_ps(-1e30f), m1 = m0, m2 = m0, m3 = m0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        m0 = _mm512_max_ps(m0, _mm512_load_ps(a + i));
        m1 = _mm512_max_ps(m1, _mm512_load_ps(a + i + 16));
        m2 = _mm512_max_ps(m2, _mm512_load_ps(a + i + 32));
        m3 = _mm512_max_ps(m3, _mm512_load_ps(a + i + 48));
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}

__attribute__((noinline)) static void rw_pass(const float *a, float *b, size_t n, int streaming) {
    __m512 k = _mm512_set1_ps(1.5f);
    if (streaming) {
        for (size_t i = 0; i + 16 <= n; i += 16) _mm512_stream_ps(b + i, _mm512_mul_ps(_mm512_load_ps(a + i), k));
        _mm_sfence();
    } else {
        for (size_t i = 0; i + 16 <= n; i += 16) _mm512_store_ps(b + i, _mm512_mul_ps(_mm512_load_ps(a + i), k));
    }
}

/* e^x for -87 < x <= 0: Cody-Waite reduction, degree-5 polynomial, vscalefps: the same
 * work per element as softgen's exp (README section 2 has the constants). */
static __m512 vexp(__m512 x) {
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 t = _mm512_fmadd_ps(k, _mm512_set1_ps(-0.693145752f), x);
    t = _mm512_fmadd_ps(k, _mm512_set1_ps(-1.42860677e-6f), t);
    __m512 p = _mm512_set1_ps(8.3334519e-3f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(4.1665795e-2f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.6666665e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

__attribute__((noinline)) static float exp_pass(const float *a, float *y, size_t n, float m) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, mv = _mm512_set1_ps(m);
    for (size_t i = 0; i + 32 <= n; i += 32) {
        __m512 e0 = vexp(_mm512_sub_ps(_mm512_load_ps(a + i), mv));
        __m512 e1 = vexp(_mm512_sub_ps(_mm512_load_ps(a + i + 16), mv));
        _mm512_store_ps(y + i, e0);
        _mm512_store_ps(y + i + 16, e1);
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#else
/* elsewhere: plain loops the compiler vectorizes (no streaming stores) */
__attribute__((noinline)) static float read_pass(const float *a, size_t n) {
    float m = -1e30f;
    for (size_t i = 0; i < n; i++) m = a[i] > m ? a[i] : m;
    return m;
}

__attribute__((noinline)) static void rw_pass(const float *a, float *b, size_t n, int streaming) {
    (void)streaming;
    for (size_t i = 0; i < n; i++) b[i] = a[i] * 1.5f;
}

__attribute__((noinline)) static float exp_pass(const float *a, float *y, size_t n, float m) {
    float s = 0;
    for (size_t i = 0; i < n; i++) {
        float x = a[i] - m, k = __builtin_roundf(x * 1.44269504f);
        float t = x - k * 0.693145752f - k * 1.42860677e-6f;
        float p = ((((8.3334519e-3f * t + 4.1665795e-2f) * t + 1.6666665e-1f) * t + 0.5f) * t + 1.0f) * t + 1.0f;
        y[i] = __builtin_ldexpf(p, (int)k);
        s += y[i];
    }
    return s;
}
#endif

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "memory") && strcmp(argv[1], "exp"))) {
        fprintf(stderr, "usage: ceilings memory|exp [N] [REPS]\n");
        return 2;
    }
    int memory = !strcmp(argv[1], "memory");
    size_t n = argc > 2 ? strtoull(argv[2], 0, 10) : (memory ? (size_t)1 << 26 : 4096);
    int reps = argc > 3 ? atoi(argv[3]) : (memory ? 5 : 20000);
    n -= n % 64;
    float *a = aligned_alloc(64, n * 4), *b = aligned_alloc(64, n * 4);
    if (!a || !b || n == 0) return 1;
    for (size_t i = 0; i < n; i++) { a[i] = -(float)(i % 1000) * 1e-2f; b[i] = 0; }
    volatile float sink = 0;
    if (memory) {
        double br = 1e30, bw = 1e30, bnt = 1e30;
        for (int r = 0; r < reps; r++) {
            double t = now(); sink += read_pass(a, n); t = now() - t; if (t < br) br = t;
            t = now(); rw_pass(a, b, n, 0); t = now() - t; if (t < bw) bw = t;
            t = now(); rw_pass(a, b, n, 1); t = now() - t; if (t < bnt) bnt = t;
        }
        double rw = bw < bnt ? bw : bnt;
        printf("n=%zu read_GBps=%.2f rw_GBps=%.2f rw_stream_GBps=%.2f two_pass_bound=%.3f "
               "three_pass_recompute_bound=%.3f\n", n, n * 4 / br / 1e9, n * 8 / bw / 1e9,
               n * 8 / bnt / 1e9, n / (br + rw) / 1e9, n / (2 * br + rw) / 1e9);
    } else {
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t = now();
            for (int k = 0; k < reps; k++) sink += exp_pass(a, b, n, 0.5f);
            t = (now() - t) / reps;
            if (t < best) best = t;
        }
        printf("n=%zu exp_pass=%.3f\n", n, n / best / 1e9);
    }
    return sink == 12345.0f;
}
