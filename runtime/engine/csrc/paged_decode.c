/* Decode attention read in place from the paged KV cache (CPU).
 *
 * One query token per sequence attends every cached token of that sequence, reading K and V rows
 * straight out of their pages: no gathered copy of the cache is made. One OpenMP task per sequence;
 * each walks its page table once for K (scores), once for V (weighted sum), keeping the query heads
 * (all of them, grouped-query attention) in float32. Scores, softmax and accumulation are float32.
 *
 * Layouts (runtime/engine/attention.py): q and out [num_seqs, num_q_heads, head_dim];
 * k_cache/v_cache [num_pages, page_size, num_kv_heads, head_dim]; page_table [num_seqs, max_pages]
 * int32; kv_lens [num_seqs] int32 (>= 1). Query head hq reads KV head hq / (num_q_heads / num_kv_heads).
 * lse (NULL or [num_seqs, num_q_heads] float32) receives each row's log-sum-exp of the scaled scores, so
 * a caller can merge this part with attention over other keys (cascade over a shared prefix).
 * Returns 0, or 1 when scratch memory could not be allocated (the caller raises).
 *
 * bfloat16 with head_dim 64/128 and up to 8 query heads per KV head takes AVX-512 paths (below) where
 * the compiler targets AVX-512; everything else the generic loops, which the compiler vectorises.
 *
 * Built by runtime/engine/cpu_kernels.py with -O3 -march=native and the float flags that let the
 * compiler vectorise the reductions (never -ffast-math: it would set flush-to-zero process-wide).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float load_f32(const float *p, int64_t i) { return p[i]; }

static inline float load_bf16(const uint16_t *p, int64_t i) {
    uint32_t u = (uint32_t)p[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline void store_f32(float *p, int64_t i, float x) { p[i] = x; }

static inline void store_bf16(uint16_t *p, int64_t i, float x) {  /* round to nearest even */
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        p[i] = (uint16_t)((u >> 16) | 0x40u);  /* NaN stays NaN */
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i] = (uint16_t)(u >> 16);
}

/* exp(x) for x <= 0: 2^n * 2^f with f in [-0.5, 0.5] and Cephes' exp2f polynomial (relative error
 * about 2e-7); written so the compiler vectorises it, which expf() from libm is not. */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float t = x * 1.44269504088896341f;
    const float n = nearbyintf(t);
    const float f = t - n;
    float p = 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    uint32_t bits;
    memcpy(&bits, &p, 4);
    bits += (uint32_t)(int32_t)n << 23;
    memcpy(&p, &bits, 4);
    return p;
}

/* AVX-512 paths for bfloat16 with head_dim 64 or 128 and up to 8 query heads per KV head: one KV head
 * at a time, its query heads and the V accumulators held in registers, each K/V row converted once.
 * 1.5x faster than the generic loops below on the large demo model's shapes. They return 0 where
 * they do not apply (no AVX-512, other shapes) and the generic loops run instead. */
#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 load16_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

static inline const uint16_t *row_of(const uint16_t *cache, const int32_t *pages, int32_t page_size,
                                     int64_t row_len, int32_t t) {
    return cache + ((int64_t)pages[t / page_size] * page_size + t % page_size) * row_len;
}

#define DEFINE_FAST(G, D)                                                                                   \
    static void qk_##G##_##D(const uint16_t *k_cache, const int32_t *pages, int32_t page_size,             \
                             int64_t row_len, int32_t h, const float *qf, int32_t len, float *scores) {     \
        __m512 qv[G][D / 16];                                                                              \
        for (int g = 0; g < G; g++)                                                                        \
            for (int j = 0; j < D / 16; j++) qv[g][j] = _mm512_loadu_ps(qf + g * D + 16 * j);              \
        for (int32_t t = 0; t < len; t++) {                                                                \
            const uint16_t *kr = row_of(k_cache, pages, page_size, row_len, t) + (int64_t)h * D;           \
            __m512 k[D / 16];                                                                              \
            for (int j = 0; j < D / 16; j++) k[j] = load16_bf16(kr + 16 * j);                              \
            for (int g = 0; g < G; g++) {                                                                  \
                __m512 a = _mm512_mul_ps(qv[g][0], k[0]);                                                  \
                for (int j = 1; j < D / 16; j++) a = _mm512_fmadd_ps(qv[g][j], k[j], a);                    \
                scores[(int64_t)g * len + t] = _mm512_reduce_add_ps(a);                                    \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
    static void v_##G##_##D(const uint16_t *v_cache, const int32_t *pages, int32_t page_size,              \
                            int64_t row_len, int32_t h, const float *p, int32_t len, float *acc) {          \
        __m512 a[G][D / 16];                                                                               \
        for (int g = 0; g < G; g++)                                                                        \
            for (int j = 0; j < D / 16; j++) a[g][j] = _mm512_setzero_ps();                                \
        for (int32_t t = 0; t < len; t++) {                                                                \
            const uint16_t *vr = row_of(v_cache, pages, page_size, row_len, t) + (int64_t)h * D;           \
            __m512 v[D / 16];                                                                              \
            for (int j = 0; j < D / 16; j++) v[j] = load16_bf16(vr + 16 * j);                              \
            for (int g = 0; g < G; g++) {                                                                  \
                const __m512 w = _mm512_set1_ps(p[(int64_t)g * len + t]);                                  \
                for (int j = 0; j < D / 16; j++) a[g][j] = _mm512_fmadd_ps(w, v[j], a[g][j]);              \
            }                                                                                              \
        }                                                                                                  \
        for (int g = 0; g < G; g++)                                                                        \
            for (int j = 0; j < D / 16; j++) _mm512_storeu_ps(acc + g * D + 16 * j, a[g][j]);              \
    }

#define DEFINE_FAST_D(D) DEFINE_FAST(1, D) DEFINE_FAST(2, D) DEFINE_FAST(3, D) DEFINE_FAST(4, D) \
                         DEFINE_FAST(5, D) DEFINE_FAST(6, D) DEFINE_FAST(7, D) DEFINE_FAST(8, D)
DEFINE_FAST_D(64)
DEFINE_FAST_D(128)

typedef void (*head_fn)(const uint16_t *, const int32_t *, int32_t, int64_t, int32_t, const float *, int32_t,
                        float *);
#define FAST_TABLE(KIND, D) {KIND##_1_##D, KIND##_2_##D, KIND##_3_##D, KIND##_4_##D, \
                             KIND##_5_##D, KIND##_6_##D, KIND##_7_##D, KIND##_8_##D}
static const head_fn QK64[8] = FAST_TABLE(qk, 64), QK128[8] = FAST_TABLE(qk, 128);
static const head_fn V64[8] = FAST_TABLE(v, 64), V128[8] = FAST_TABLE(v, 128);

/* Runs the specialised pass for each KV head (input and output advanced by their per-head steps);
 * 0 when no specialisation fits the shape. */
static int per_kv_head(const head_fn *for64, const head_fn *for128, const uint16_t *cache, const int32_t *pages,
                       int32_t page_size, int64_t row_len, int32_t num_kv_heads, int32_t group, int32_t D,
                       const float *in, int64_t in_step, int32_t len, float *out, int64_t out_step) {
    if (group < 1 || group > 8 || (D != 64 && D != 128)) return 0;
    const head_fn f = (D == 64 ? for64 : for128)[group - 1];
    for (int32_t h = 0; h < num_kv_heads; h++)
        f(cache, pages, page_size, row_len, h, in + h * in_step, len, out + h * out_step);
    return 1;
}

/* scores [Hq, len] from the scaled queries; acc [Hq, D] from the probabilities */
#define qk_fast_bf16(k, pg, ps, rl, hkv, g, d, qf, len, scores) \
    per_kv_head(QK64, QK128, k, pg, ps, rl, hkv, g, d, qf, (int64_t)(g) * (d), len, scores, (int64_t)(g) * (len))
#define v_fast_bf16(v, pg, ps, rl, hkv, g, d, p, len, acc) \
    per_kv_head(V64, V128, v, pg, ps, rl, hkv, g, d, p, (int64_t)(g) * (len), len, acc, (int64_t)(g) * (d))
#endif

/* No fast path (float32, whose generic loops already run near memory bandwidth, or no AVX-512). */
#define NO_FAST_PATH(...) 0
#if !defined(__AVX512F__)
#define qk_fast_bf16 NO_FAST_PATH
#define v_fast_bf16 NO_FAST_PATH
#endif

#define DEFINE_PAGED_DECODE(NAME, T, LOAD, STORE, QK_FAST, V_FAST)                                                  \
    int NAME(const T *q, const T *k_cache, const T *v_cache, const int32_t *page_table,          \
             const int32_t *kv_lens, int32_t num_seqs, int32_t max_pages, int32_t num_q_heads,      \
             int32_t num_kv_heads, int32_t head_dim, int32_t page_size, float scale, T *out,        \
             float *lse) {                                                                          \
        const int32_t group = num_q_heads / num_kv_heads, D = head_dim;                           \
        const int64_t row_len = (int64_t)num_kv_heads * D, q_len = (int64_t)num_q_heads * D;      \
        int failed = 0;                                                                           \
        _Pragma("omp parallel for schedule(dynamic, 1) reduction(| : failed)")                    \
        for (int32_t b = 0; b < num_seqs; b++) {                                                  \
            const int32_t len = kv_lens[b];                                                       \
            const int32_t *pages = page_table + (int64_t)b * max_pages;                           \
            float *scores = malloc(sizeof(float) * (size_t)num_q_heads * (size_t)len);            \
            float *qf = malloc(sizeof(float) * 2 * (size_t)q_len);                                \
            if (scores == NULL || qf == NULL) {                                                   \
                free(scores);                                                                     \
                free(qf);                                                                         \
                failed = 1;                                                                       \
                continue;                                                                         \
            }                                                                                     \
            float *acc = qf + q_len;                                                              \
            for (int64_t i = 0; i < q_len; i++) {                                                 \
                qf[i] = LOAD(q, b * q_len + i) * scale;                                           \
                acc[i] = 0.0f;                                                                    \
            }                                                                                     \
            if (!QK_FAST(k_cache, pages, page_size, row_len, num_kv_heads, group, D, qf, len, scores))   \
            for (int32_t t = 0; t < len; t++) {                                                   \
                const T *row = k_cache +                                                          \
                    ((int64_t)pages[t / page_size] * page_size + t % page_size) * row_len;         \
                for (int32_t hq = 0; hq < num_q_heads; hq++) {                                    \
                    const T *kr = row + (int64_t)(hq / group) * D;                                \
                    const float *qh = qf + (int64_t)hq * D;                                       \
                    float s = 0.0f;                                                               \
                    for (int32_t d = 0; d < D; d++) s += qh[d] * LOAD(kr, d);                     \
                    scores[(int64_t)hq * len + t] = s;                                            \
                }                                                                                 \
            }                                                                                     \
            for (int32_t hq = 0; hq < num_q_heads; hq++) {                                        \
                float *sh = scores + (int64_t)hq * len, m = -INFINITY, sum = 0.0f;                \
                for (int32_t t = 0; t < len; t++) m = sh[t] > m ? sh[t] : m;                      \
                for (int32_t t = 0; t < len; t++) sh[t] = exp_nonpositive(sh[t] - m);             \
                for (int32_t t = 0; t < len; t++) sum += sh[t];                                   \
                const float inv = 1.0f / sum;                                                     \
                if (lse != NULL) lse[(int64_t)b * num_q_heads + hq] = m + logf(sum);              \
                for (int32_t t = 0; t < len; t++) sh[t] *= inv;                                   \
            }                                                                                     \
            if (!V_FAST(v_cache, pages, page_size, row_len, num_kv_heads, group, D, scores, len, acc))  \
            for (int32_t t = 0; t < len; t++) {                                                   \
                const T *row = v_cache +                                                          \
                    ((int64_t)pages[t / page_size] * page_size + t % page_size) * row_len;         \
                for (int32_t hq = 0; hq < num_q_heads; hq++) {                                    \
                    const T *vr = row + (int64_t)(hq / group) * D;                                \
                    const float p = scores[(int64_t)hq * len + t];                                \
                    float *ah = acc + (int64_t)hq * D;                                            \
                    for (int32_t d = 0; d < D; d++) ah[d] += p * LOAD(vr, d);                     \
                }                                                                                 \
            }                                                                                     \
            for (int64_t i = 0; i < q_len; i++) STORE(out, b * q_len + i, acc[i]);                \
            free(scores);                                                                         \
            free(qf);                                                                             \
        }                                                                                         \
        return failed;                                                                            \
    }

DEFINE_PAGED_DECODE(paged_decode_f32, float, load_f32, store_f32, NO_FAST_PATH, NO_FAST_PATH)
DEFINE_PAGED_DECODE(paged_decode_bf16, uint16_t, load_bf16, store_bf16, qk_fast_bf16, v_fast_bf16)
