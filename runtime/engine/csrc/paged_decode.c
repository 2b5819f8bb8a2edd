/* Decode attention read in place from the paged KV cache (CPU).
 *
 * One query token per sequence attends every cached token of that sequence, reading K and V rows
 * straight out of their pages: no gathered copy of the cache is made. One OpenMP task per sequence.
 * Scores, softmax and accumulation are float32, whatever the cache's dtype.
 *
 * Layouts (runtime/engine/attention.py): q and out [num_seqs, num_q_heads, head_dim];
 * k_cache/v_cache [num_pages, page_size, num_kv_heads, head_dim]; page_table [num_seqs, max_pages]
 * int32; kv_lens [num_seqs] int32 (>= 1). Query head hq reads KV head hq / (num_q_heads / num_kv_heads).
 * kv_starts (NULL or [num_seqs] int32, each < kv_lens): the first token each sequence attends, for
 * sliding-window attention (tokens kv_starts[b] .. kv_lens[b] - 1); NULL attends from token 0.
 * lse (NULL or [num_seqs, num_q_heads] float32) receives each row's log-sum-exp of the scaled scores, so
 * a caller can merge this part with attention over other keys (cascade over a shared prefix).
 * Returns 0, or 1 when scratch memory could not be allocated (the caller raises).
 *
 * Where the compiler targets AVX-512, head_dim 64 and 128 take the blocked path below (any group size,
 * float32 or bfloat16); everything else the generic loops at the end, which the compiler vectorises.
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

/* The blocked AVX-512 path. A sequence is walked in blocks of 16 tokens, every KV head of a block
 * before the next block, so each page is read front to back once per pass (walking one head at a
 * time over the whole sequence read every page four times in strided slices, and cold pages cost
 * 1.4x more that way: 8.4 -> 5.9 ms per step for 16 sequences of 620 tokens on the large demo model).
 *
 * Scores: one query head's dot products with the block's 16 keys accumulate in 16 registers, which
 * sum16 reduces in one shuffle tree (45 instructions, where 16 horizontal sums take ~130). bfloat16
 * keys are multiplied as bfloat16 pairs (VDPBF16PS: exact products, float32 sums) where the CPU has
 * AVX512-BF16, else converted to float32. Values: float32 probabilities times float32-converted V
 * rows, the query heads of one KV head accumulating in registers across the block. The softmax is
 * vectorised by hand: the compiler leaves the generic max loop scalar (IEEE comparison semantics),
 * and that loop alone was a fifth of the kernel's time. */
#if defined(__AVX512F__)
#include <immintrin.h>

enum { F32 = 0, BF16 = 1 };
#if defined(__AVX512BF16__)
#define HAS_DPBF16 1
#else
#define HAS_DPBF16 0
#endif

static inline __m512 load16_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

static inline __attribute__((always_inline)) __m512 load16(const void *p, int64_t i, const int type) {
    return type == F32 ? _mm512_loadu_ps((const float *)p + i) : load16_bf16((const uint16_t *)p + i);
}

static inline __attribute__((always_inline)) void store16(void *p, int64_t i, __m512 x, const int type) {
    if (type == F32) {
        _mm512_storeu_ps((float *)p + i, x);
        return;
    }
#if defined(__AVX512BF16__)
    _mm256_storeu_si256((__m256i *)((uint16_t *)p + i), (__m256i)_mm512_cvtneps_pbh(x));
#else  /* round to nearest even, NaN stays NaN (as store_bf16) */
    const __m512i u = _mm512_castps_si512(x);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
    r = _mm512_mask_or_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), u, _mm512_set1_epi32(0x400000));
    _mm256_storeu_si256((__m256i *)((uint16_t *)p + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
#endif
}

static inline __mmask16 first_lanes(int32_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* exp_nonpositive on 16 lanes (the same polynomial; scalef applies the power of two) */
static inline __m512 exp_nonpositive16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Normalises s[0..len) into probabilities in place and returns the log-sum-exp. */
static inline float softmax_row(float *s, int32_t len) {
    __m512 vm = _mm512_set1_ps(-INFINITY), vs = _mm512_setzero_ps();
    for (int32_t t = 0; t < len; t += 16)
        vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), first_lanes(len - t), s + t));
    const float m = _mm512_reduce_max_ps(vm);
    const __m512 mv = _mm512_set1_ps(m);
    for (int32_t t = 0; t < len; t += 16) {
        const __mmask16 k = first_lanes(len - t);
        const __m512 e = _mm512_maskz_mov_ps(k, exp_nonpositive16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + t), mv)));
        _mm512_mask_storeu_ps(s + t, k, e);
        vs = _mm512_add_ps(vs, e);
    }
    const float sum = _mm512_reduce_add_ps(vs);
    const __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (int32_t t = 0; t < len; t += 16) {
        const __mmask16 k = first_lanes(len - t);
        _mm512_mask_storeu_ps(s + t, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + t), inv));
    }
    return m + logf(sum);
}

/* Accumulator i of a block holds token TOKEN_OF[i]; sum16 then returns token t's sum in lane t (the
 * shuffle tree's lane order is this involution). */
static const int TOKEN_OF[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};

static inline __m512 sum16(const __m512 *a) {
    __m512 b[8], c[4], d[2];
    for (int k = 0; k < 8; k++)
        b[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[k], a[k + 8], 0x44), _mm512_shuffle_f32x4(a[k], a[k + 8], 0xEE));
    for (int k = 0; k < 4; k++)
        c[k] = _mm512_add_ps(_mm512_shuffle_f32x4(b[k], b[k + 4], 0x88), _mm512_shuffle_f32x4(b[k], b[k + 4], 0xDD));
    for (int k = 0; k < 2; k++)
        d[k] = _mm512_add_ps(_mm512_shuffle_ps(c[k], c[k + 2], 0x88), _mm512_shuffle_ps(c[k], c[k + 2], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
}

/* Address of token t's row (all KV heads, row_bytes long) in the cache. */
static inline const char *row_of(const void *cache, const int32_t *pages, int32_t page_size, int64_t row_bytes,
                                 int32_t t) {
    return (const char *)cache + ((int64_t)pages[t / page_size] * page_size + t % page_size) * row_bytes;
}

/* q . k over one row, unscaled: q as float32 (D/16 registers) or, with AVX512-BF16, as raw bfloat16
 * pairs (D/32 registers) */
static inline __attribute__((always_inline)) __m512 row_dot(const char *k, const __m512 *qf, const __m512i *qb,
                                                            const int type, const int D) {
#if HAS_DPBF16
    if (type == BF16) {
        __m512 a = _mm512_setzero_ps();
        for (int j = 0; j < D / 32; j++)
            a = _mm512_dpbf16_ps(a, (__m512bh)qb[j], (__m512bh)_mm512_loadu_si512(k + 64 * j));
        return a;
    }
#endif
    (void)qb;
    __m512 a = _mm512_mul_ps(qf[0], load16(k, 0, type));
    for (int j = 1; j < D / 16; j++) a = _mm512_fmadd_ps(qf[j], load16(k, 16 * j, type), a);
    return a;
}

/* scores[hq * stride + t] = scale * q[hq] . k[t] for every query head and token */
static inline __attribute__((always_inline)) void
blocked_scores(const void *q, const void *k_cache, const int32_t *pages, int32_t first, int32_t page_size,
               int32_t num_kv_heads, int32_t group, int32_t len, float scale, float *scores, int64_t stride,
               const int type, const int D) {
    const int64_t esize = type == F32 ? 4 : 2, row_bytes = num_kv_heads * D * esize;
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int32_t t0 = 0; t0 < len; t0 += 16) {
        const int32_t n = len - t0 < 16 ? len - t0 : 16;
        const char *rows[16];
        for (int i = 0; i < 16; i++)  /* past the end: any valid row, its lane is not stored */
            rows[i] = row_of(k_cache, pages, page_size, row_bytes, first + t0 + (TOKEN_OF[i] < n ? TOKEN_OF[i] : 0));
        for (int32_t h = 0; h < num_kv_heads; h++)
            for (int32_t g = 0; g < group; g++) {
                const int64_t hq = (int64_t)h * group + g;
                __m512 qf[D / 16];
                __m512i qb[D / 32];
                if (type == BF16 && HAS_DPBF16)
                    for (int j = 0; j < D / 32; j++) qb[j] = _mm512_loadu_si512((const uint16_t *)q + hq * D + 32 * j);
                else
                    for (int j = 0; j < D / 16; j++) qf[j] = load16(q, hq * D + 16 * j, type);
                __m512 acc[16];
                for (int i = 0; i < 16; i++) acc[i] = row_dot(rows[i] + h * D * esize, qf, qb, type, D);
                _mm512_mask_storeu_ps(scores + hq * stride + t0, first_lanes(n), _mm512_mul_ps(sum16(acc), vscale));
            }
    }
}

/* acc[g] += sum over the block's 16 rows of p[g][i] v[i] for GC query heads of KV head h (padding rows
 * have probability 0); the accumulators stay in registers across the block */
#define DEFINE_PV(TYPE, GC, D)                                                                               \
    static inline void pv_##TYPE##_##GC##_##D(const char *const *rows, int64_t head_offset, const float *p,   \
                                              int64_t p_stride, float *acc) {                                \
        __m512 a[GC][D / 16];                                                                                \
        for (int g = 0; g < GC; g++)                                                                         \
            for (int j = 0; j < D / 16; j++) a[g][j] = _mm512_loadu_ps(acc + g * D + 16 * j);                \
        for (int i = 0; i < 16; i++) {                                                                       \
            __m512 v[D / 16];                                                                                \
            for (int j = 0; j < D / 16; j++) v[j] = load16(rows[i] + head_offset, 16 * j, TYPE);             \
            for (int g = 0; g < GC; g++) {                                                                   \
                const __m512 w = _mm512_set1_ps(p[g * p_stride + i]);                                        \
                for (int j = 0; j < D / 16; j++) a[g][j] = _mm512_fmadd_ps(w, v[j], a[g][j]);               \
            }                                                                                                \
        }                                                                                                    \
        for (int g = 0; g < GC; g++)                                                                         \
            for (int j = 0; j < D / 16; j++) _mm512_storeu_ps(acc + g * D + 16 * j, a[g][j]);                \
    }
#define DEFINE_PV_TYPE(TYPE) DEFINE_PV(TYPE, 1, 64) DEFINE_PV(TYPE, 2, 64) DEFINE_PV(TYPE, 3, 64) \
                             DEFINE_PV(TYPE, 4, 64) DEFINE_PV(TYPE, 1, 128) DEFINE_PV(TYPE, 2, 128)
DEFINE_PV_TYPE(F32)
DEFINE_PV_TYPE(BF16)

typedef void (*pv_fn)(const char *const *, int64_t, const float *, int64_t, float *);
/* [type][D == 128][query heads at once - 1]: as many as keep their accumulators in registers */
static const pv_fn PV[2][2][4] = {
    {{pv_F32_1_64, pv_F32_2_64, pv_F32_3_64, pv_F32_4_64}, {pv_F32_1_128, pv_F32_2_128, NULL, NULL}},
    {{pv_BF16_1_64, pv_BF16_2_64, pv_BF16_3_64, pv_BF16_4_64}, {pv_BF16_1_128, pv_BF16_2_128, NULL, NULL}},
};

/* acc [Hq, D] += probabilities [Hq, stride] times the V rows */
static inline __attribute__((always_inline)) void
blocked_values(const void *v_cache, const int32_t *pages, int32_t first, int32_t page_size, int32_t num_kv_heads,
               int32_t group, int32_t len, const float *p, int64_t stride, float *acc, const int type, const int D) {
    const int64_t esize = type == F32 ? 4 : 2, row_bytes = num_kv_heads * D * esize;
    const int chunk = D == 64 ? 4 : 2;
    for (int32_t t0 = 0; t0 < len; t0 += 16) {
        const int32_t n = len - t0 < 16 ? len - t0 : 16;
        const char *rows[16];
        for (int i = 0; i < 16; i++) rows[i] = row_of(v_cache, pages, page_size, row_bytes, first + t0 + (i < n ? i : 0));
        for (int32_t h = 0; h < num_kv_heads; h++)
            for (int32_t g0 = 0; g0 < group; g0 += chunk) {
                const int gc = group - g0 < chunk ? group - g0 : chunk;
                const int64_t hq = (int64_t)h * group + g0;
                PV[type][D == 128][gc - 1](rows, h * D * esize, p + hq * stride + t0, stride, acc + hq * D);
            }
    }
}

/* One sequence: out [Hq, D] and lse [Hq] (or NULL); 0, or 1 when scratch memory ran out. */
static inline __attribute__((always_inline)) int
blocked_decode(const void *q, const void *k_cache, const void *v_cache, const int32_t *pages, int32_t first, int32_t len,
               int32_t num_q_heads, int32_t num_kv_heads, int32_t page_size, float scale, void *out, float *lse,
               const int type, const int D) {
    const int32_t group = num_q_heads / num_kv_heads;
    const int64_t padded = (len + 15) / 16 * 16;
    float *scores = malloc(sizeof(float) * (size_t)num_q_heads * (size_t)padded);
    float *acc = calloc((size_t)num_q_heads * (size_t)D, sizeof(float));
    if (scores == NULL || acc == NULL) {
        free(scores);
        free(acc);
        return 1;
    }
    blocked_scores(q, k_cache, pages, first, page_size, num_kv_heads, group, len, scale, scores, padded, type, D);
    for (int32_t hq = 0; hq < num_q_heads; hq++) {
        float *sh = scores + hq * padded;
        const float row_lse = softmax_row(sh, len);
        if (lse != NULL) lse[hq] = row_lse;
        for (int64_t t = len; t < padded; t++) sh[t] = 0.0f;
    }
    blocked_values(v_cache, pages, first, page_size, num_kv_heads, group, len, scores, padded, acc, type, D);
    for (int64_t i = 0; i < (int64_t)num_q_heads * D; i += 16) store16(out, i, _mm512_loadu_ps(acc + i), type);
    free(scores);
    free(acc);
    return 0;
}

/* The blocked path for one sequence, or -1 when its head_dim has none (the generic loops run). */
#define DEFINE_BLOCKED(NAME, T, TYPE)                                                                           \
    static int NAME(const T *q, const T *k_cache, const T *v_cache, const int32_t *pages, int32_t first,        \
                    int32_t len,                                                                                \
                    int32_t num_q_heads, int32_t num_kv_heads, int32_t D, int32_t page_size, float scale, T *out, \
                    float *lse) {                                                                               \
        if (D == 64)                                                                                            \
            return blocked_decode(q, k_cache, v_cache, pages, first, len, num_q_heads, num_kv_heads, page_size,  \
                                  scale, out, lse, TYPE, 64);                                                   \
        if (D == 128)                                                                                           \
            return blocked_decode(q, k_cache, v_cache, pages, first, len, num_q_heads, num_kv_heads, page_size,  \
                                  scale, out, lse, TYPE, 128);                                                  \
        return -1;                                                                                              \
    }
DEFINE_BLOCKED(blocked_f32, float, F32)
DEFINE_BLOCKED(blocked_bf16, uint16_t, BF16)

#else
#define blocked_f32(...) (-1)
#define blocked_bf16(...) (-1)

static inline float softmax_row(float *s, int32_t len) {
    float m = -INFINITY, sum = 0.0f;
    for (int32_t t = 0; t < len; t++) m = s[t] > m ? s[t] : m;
    for (int32_t t = 0; t < len; t++) s[t] = exp_nonpositive(s[t] - m);
    for (int32_t t = 0; t < len; t++) sum += s[t];
    const float inv = 1.0f / sum;
    for (int32_t t = 0; t < len; t++) s[t] *= inv;
    return m + logf(sum);
}
#endif

/* The entry points: the blocked path where it applies, else the generic loops (head by head for
 * every token, the compiler vectorising over head_dim). */
#define DEFINE_PAGED_DECODE(NAME, T, LOAD, STORE, BLOCKED)                                          \
    int NAME(const T *q, const T *k_cache, const T *v_cache, const int32_t *page_table,          \
             const int32_t *kv_lens, int32_t num_seqs, int32_t max_pages, int32_t num_q_heads,      \
             int32_t num_kv_heads, int32_t head_dim, int32_t page_size, float scale, T *out,        \
             float *lse, const int32_t *kv_starts) {                                                \
        const int32_t group = num_q_heads / num_kv_heads, D = head_dim;                           \
        const int64_t row_len = (int64_t)num_kv_heads * D, q_len = (int64_t)num_q_heads * D;      \
        int failed = 0;                                                                           \
        _Pragma("omp parallel for schedule(dynamic, 1) reduction(| : failed)")                    \
        for (int32_t b = 0; b < num_seqs; b++) {                                                  \
            const int32_t first = kv_starts == NULL ? 0 : kv_starts[b];                           \
            const int32_t len = kv_lens[b] - first;                                               \
            const int32_t *pages = page_table + (int64_t)b * max_pages;                           \
            float *seq_lse = lse == NULL ? NULL : lse + (int64_t)b * num_q_heads;                 \
            const int blocked = BLOCKED(q + b * q_len, k_cache, v_cache, pages, first, len, num_q_heads, \
                                        num_kv_heads, D, page_size, scale, out + b * q_len, seq_lse);  \
            if (blocked >= 0) {                                                                   \
                failed |= blocked;                                                                \
                continue;                                                                         \
            }                                                                                     \
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
            for (int32_t t = 0; t < len; t++) {                                                   \
                const T *row = k_cache +                                                          \
                    ((int64_t)pages[(first + t) / page_size] * page_size + (first + t) % page_size) * row_len; \
                for (int32_t hq = 0; hq < num_q_heads; hq++) {                                    \
                    const T *kr = row + (int64_t)(hq / group) * D;                                \
                    const float *qh = qf + (int64_t)hq * D;                                       \
                    float s = 0.0f;                                                               \
                    for (int32_t d = 0; d < D; d++) s += qh[d] * LOAD(kr, d);                     \
                    scores[(int64_t)hq * len + t] = s;                                            \
                }                                                                                 \
            }                                                                                     \
            for (int32_t hq = 0; hq < num_q_heads; hq++) {                                        \
                const float row_lse = softmax_row(scores + (int64_t)hq * len, len);               \
                if (seq_lse != NULL) seq_lse[hq] = row_lse;                                       \
            }                                                                                     \
            for (int32_t t = 0; t < len; t++) {                                                   \
                const T *row = v_cache +                                                          \
                    ((int64_t)pages[(first + t) / page_size] * page_size + (first + t) % page_size) * row_len; \
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

DEFINE_PAGED_DECODE(paged_decode_f32, float, load_f32, store_f32, blocked_f32)
DEFINE_PAGED_DECODE(paged_decode_bf16, uint16_t, load_bf16, store_bf16, blocked_bf16)
