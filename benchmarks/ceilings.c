/* The machine's ceilings for single-thread softmax, for benchmarks/peers.py.
 *
 *   ceilings memory N REPS   bandwidths over N floats and the traffic bounds they imply:
 *                            a read-only pass (max), a read+write pass with ordinary and
 *                            with streaming stores; two-pass moves read + read/write,
 *                            three-pass recompute read + read + read/write.
 *   ceilings exp N REPS      the exp pass alone (exp(x - m), store, sum) on N floats in
 *                            L1: the compute ceiling of in-cache softmax.  exp_err is the
 *                            largest relative error of its exp against a double reference.
 *
 * Build with cc -O2 -march=native ceilings.c -o ceilings (no libm needed).  The passes are
 * written once against the vector operations below: AVX-512F, AVX2 + FMA or AArch64 NEON,
 * whichever the target has, one float at a time elsewhere.  Results are printed as
 * key=value pairs on one line (lanes: floats per vector).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__AVX512F__)
#include <immintrin.h>
enum { W = 16 };
typedef __m512 vf;
#define SET1(c) _mm512_set1_ps(c)
#define LOAD(p) _mm512_load_ps(p)
#define STORE(p, v) _mm512_store_ps(p, v)
#define STREAM(p, v) _mm512_stream_ps(p, v)
#define FENCE() _mm_sfence()
#define ADD(a, b) _mm512_add_ps(a, b)
#define SUB(a, b) _mm512_sub_ps(a, b)
#define MUL(a, b) _mm512_mul_ps(a, b)
#define MAX(a, b) _mm512_max_ps(a, b)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
/* v * 2^k by vscalefps, as softgen's AVX-512 kernels do */
#define POW2_SCALE(v, k, biased) _mm512_scalef_ps(v, k)
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
enum { W = 8 };
typedef __m256 vf;
#define SET1(c) _mm256_set1_ps(c)
#define LOAD(p) _mm256_load_ps(p)
#define STORE(p, v) _mm256_store_ps(p, v)
#define STREAM(p, v) _mm256_stream_ps(p, v)
#define FENCE() _mm_sfence()
#define ADD(a, b) _mm256_add_ps(a, b)
#define SUB(a, b) _mm256_sub_ps(a, b)
#define MUL(a, b) _mm256_mul_ps(a, b)
#define MAX(a, b) _mm256_max_ps(a, b)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
/* 2^k from the exponent bits that the rounding left in `biased` */
#define POW2_SCALE(v, k, biased) \
    _mm256_mul_ps(v, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(biased), 23)))
#elif defined(__aarch64__)
#include <arm_neon.h>
enum { W = 4 };
typedef float32x4_t vf;
#define SET1(c) vdupq_n_f32(c)
#define LOAD(p) vld1q_f32(p)
#define STORE(p, v) vst1q_f32(p, v)
#define STREAM(p, v) vst1q_f32(p, v)   /* no streaming-store intrinsic */
#define FENCE() ((void)0)
#define ADD(a, b) vaddq_f32(a, b)
#define SUB(a, b) vsubq_f32(a, b)
#define MUL(a, b) vmulq_f32(a, b)
#define MAX(a, b) vmaxq_f32(a, b)
#define FMA(a, b, c) vfmaq_f32(c, a, b)
#define POW2_SCALE(v, k, biased) \
    vmulq_f32(v, vreinterpretq_f32_s32(vshlq_n_s32(vreinterpretq_s32_f32(biased), 23)))
#else
/* one float at a time (the compiler may vectorize); plain stores stand in for streaming */
enum { W = 1 };
typedef float vf;
static float pow2_bits(float biased) {
    uint32_t u;
    memcpy(&u, &biased, sizeof u);
    u <<= 23;
    memcpy(&biased, &u, sizeof u);
    return biased;
}
#define SET1(c) (c)
#define LOAD(p) (*(p))
#define STORE(p, v) (*(p) = (v))
#define STREAM(p, v) (*(p) = (v))
#define FENCE() ((void)0)
#define ADD(a, b) ((a) + (b))
#define SUB(a, b) ((a) - (b))
#define MUL(a, b) ((a) * (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define FMA(a, b, c) ((a) * (b) + (c))   /* fmaf would be a libm call */
#define POW2_SCALE(v, k, biased) ((v) * pow2_bits(biased))
#endif

#if defined(__GNUC__)
#define INLINE inline __attribute__((always_inline))
#else
#define INLINE inline
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float lanes_max(vf v) {
    float lane[W] __attribute__((aligned(64)));
    STORE(lane, v);
    float m = lane[0];
    for (int i = 1; i < W; i++) m = lane[i] > m ? lane[i] : m;
    return m;
}

static float lanes_sum(vf v) {
    float lane[W] __attribute__((aligned(64)));
    STORE(lane, v);
    float s = 0;
    for (int i = 0; i < W; i++) s += lane[i];
    return s;
}

/* n is a multiple of 64 floats and the arrays are 64-byte aligned */
__attribute__((noinline)) static float read_pass(const float *a, size_t n) {
    vf m0 = SET1(-1e30f), m1 = m0, m2 = m0, m3 = m0;
    for (size_t i = 0; i + 4 * W <= n; i += 4 * W) {
        m0 = MAX(m0, LOAD(a + i));
        m1 = MAX(m1, LOAD(a + i + W));
        m2 = MAX(m2, LOAD(a + i + 2 * W));
        m3 = MAX(m3, LOAD(a + i + 3 * W));
    }
    return lanes_max(MAX(MAX(m0, m1), MAX(m2, m3)));
}

__attribute__((noinline)) static void rw_pass(const float *a, float *b, size_t n, int streaming) {
    const vf k = SET1(1.5f);
    if (streaming) {
        for (size_t i = 0; i + W <= n; i += W) STREAM(b + i, MUL(LOAD(a + i), k));
        FENCE();
    } else {
        for (size_t i = 0; i + W <= n; i += W) STORE(b + i, MUL(LOAD(a + i), k));
    }
}

/* e^x for -87 < x <= 0 with softgen's recipe and constants (softgen/numerics.py): k by
 * magic-bias rounding, Cody-Waite reduction, degree-5 polynomial, times 2^k. */
static INLINE vf vexp(vf x) {
    const vf magic = SET1(0x1.8p23f + 127.0f);   /* leaves k + 127 in the low mantissa bits */
    const vf biased = FMA(x, SET1(0x1.715476p+0f), magic);
    const vf k = SUB(biased, magic);
    vf t = FMA(k, SET1(-0x1.62E400p-1f), x);
    t = FMA(k, SET1(-0x1.7F7D1Cp-20f), t);
    vf p = SET1(0x1.0F9F9Cp-7f);
    p = FMA(p, t, SET1(0x1.573A1Ap-5f));
    p = FMA(p, t, SET1(0x1.555A80p-3f));
    p = FMA(p, t, SET1(0x1.FFFDC6p-2f));
    p = FMA(p, t, SET1(0x1.FFFFF6p-1f));
    return POW2_SCALE(FMA(t, p, SET1(1.0f)), k, biased);
}

__attribute__((noinline)) static float exp_pass(const float *a, float *y, size_t n, float m) {
    vf s0 = SET1(0.0f), s1 = s0;
    const vf mv = SET1(m);
    for (size_t i = 0; i + 2 * W <= n; i += 2 * W) {
        const vf e0 = vexp(SUB(LOAD(a + i), mv));
        const vf e1 = vexp(SUB(LOAD(a + i + W), mv));
        STORE(y + i, e0);
        STORE(y + i + W, e1);
        s0 = ADD(s0, e0);
        s1 = ADD(s1, e1);
    }
    return lanes_sum(ADD(s0, s1));
}

/* e^x in double for -20 < x <= 0 without libm: a Taylor series at x/64, squared 6 times */
static double exp_reference(double x) {
    double t = x / 64, term = 1, s = 1;
    for (int i = 1; i < 14; i++) {
        term *= t / i;
        s += term;
    }
    for (int i = 0; i < 6; i++) s *= s;
    return s;
}

/* the largest relative error of y = e^(a - m), taking a - m as rounded to float */
static double exp_error(const float *a, const float *y, size_t n, float m) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double ref = exp_reference(a[i] - m), err = (y[i] - ref) / ref;
        err = err < 0 ? -err : err;
        worst = err > worst ? err : worst;
    }
    return worst;
}

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
        printf("n=%zu lanes=%d read_GBps=%.2f rw_GBps=%.2f rw_stream_GBps=%.2f two_pass_bound=%.3f "
               "three_pass_recompute_bound=%.3f\n", n, W, n * 4 / br / 1e9, n * 8 / bw / 1e9,
               n * 8 / bnt / 1e9, n / (br + rw) / 1e9, n / (2 * br + rw) / 1e9);
    } else {
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t = now();
            for (int k = 0; k < reps; k++) sink += exp_pass(a, b, n, 0.5f);
            t = (now() - t) / reps;
            if (t < best) best = t;
        }
        printf("n=%zu lanes=%d exp_pass=%.3f exp_err=%.3g\n", n, W, n / best / 1e9,
               exp_error(a, b, n, 0.5f));
    }
    return sink == 12345.0f;
}
