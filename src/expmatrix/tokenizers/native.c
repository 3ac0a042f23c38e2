/* Fused binning kernels: one pass over the object slots instead of ~10 numpy passes.
 *
 * Compiled at first use by native.py (cc -O3, no -ffast-math, no -march: the float arithmetic
 * is IEEE and identical to numpy's) and called through ctypes, which releases the GIL, so
 * chunks run on parallel threads. Every function reproduces the numpy path of binning.py and
 * quantiles.py bit for bit; tests/test_native.py compares the two on adversarial inputs.
 *
 * Layouts (C order): ids (rows, slots) int64, 0 = empty slot, 1..NT-1 object types;
 * cont (rows, slots, n_cols) float32.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NT 8 /* object types 0..7 (0: empty slot) */

#if defined(__GNUC__) /* helpers inlined into each clone, so that they are compiled for its target */
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

typedef struct {
    int32_t col;        /* the feature's column in cont */
    int32_t cyclic;     /* wrap values outside [lo, hi) by whole periods before binning */
    int32_t upper_out;  /* 1: v > hi is out of range (quantile), 0: v >= hi (fixed) */
    int32_t n_edges;
    int32_t per_type;   /* the edges differ per object type */
    float lo, hi;       /* the fitted (quantile) or declared range, as float32 */
    double low, period; /* cyclic: the range's start and length, as numpy's wrap takes them */
    int64_t radix;      /* the code's place value in a joint token (a global's: 1) */
    int64_t offset;     /* added to a global's token: where its token range starts */
    const float *edges; /* (NT, n_edges): sorted edges per object type (a global's: row 0) */
} Feature;

/* binning.wrap: low + (v - low) mod period in float64 (Python's sign rule), to float32, high -> low. */
INLINE float wrap(float v, const Feature *f) {
    double m = fmod((double)v - f->low, f->period);
    if (m < 0) m += f->period;
    float w = (float)(f->low + m);
    return w >= f->hi ? (float)f->low : w;
}

/* x86-64: an AVX2 clone of the hot loops too, chosen at load time by the CPU that runs it (a cache on a
 * shared home directory stays valid on every node) */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

#define MAX_FEAT 16 /* features binned at once (more: the numpy path) */
#define BLOCK 2048  /* slots binned at once, whole rows: their columns stay in L1, the loops vectorize */

/* v[c*width + i] = x[i*n_cols + c]: the block's columns, contiguous (called with a constant n_cols) */
INLINE void columns(int64_t n, const float *restrict x, int32_t n_cols, float *restrict v, int64_t width) {
    for (int64_t i = 0; i < n; ++i)
        for (int32_t c = 0; c < n_cols; ++c) v[c * width + i] = x[i * n_cols + c];
}

/* One feature over a block, in one vectorized loop: the NaN/inf and out-of-range real values are counted,
 * code[i] = edges <= v[i] (k_edges of them, padded with +inf), or with acc, acc[i] += code*radix at real
 * slots. Called with a constant k_edges, so that the edge loop unrolls. */
INLINE void bin_block(int64_t n, const float *restrict v, const int32_t *restrict real, const float *e,
                             int32_t k_edges, float lo, float hi, int32_t upper_out, int32_t count_range,
                             int32_t *restrict code, int32_t *restrict acc, int32_t radix, int64_t *bad,
                             int64_t *outside) {
    int32_t n_bad = 0, n_out = 0; /* n <= BLOCK: no overflow */
    for (int64_t i = 0; i < n; ++i) {
        float x = v[i];
        int32_t c = 0;
        for (int32_t j = 0; j < k_edges; ++j) c += x >= e[j];
        n_bad += real[i] & !(x - x == 0.0f);
        n_out += real[i] & ((x < lo) | (upper_out ? x > hi : x >= hi)) & count_range;
        if (acc)
            acc[i] += (c * radix) & -real[i];
        else
            code[i] = c;
    }
    *bad += n_bad, *outside += n_out;
}

/* One feature over a block of n values v (modified: cyclic ones wrapped): its codes into code, or with acc,
 * acc[i] += code*radix at real slots; out-of-range and NaN/inf real values counted in counts[0], counts[1].
 * t: the slots' types (per-type edges), padded: the shared edges padded to 8. */
INLINE void bin_feature(int64_t n, float *restrict v, const int32_t *restrict real, const int64_t *t,
                               const Feature *f, const float *padded, int32_t *restrict code, int32_t *restrict acc,
                               int64_t *counts) {
    if (f->cyclic) { /* only values outside the range are wrapped (rare: a scalar pass) */
        int32_t any = 0;
        for (int64_t i = 0; i < n; ++i) any |= (v[i] < f->lo) | (v[i] >= f->hi);
        for (int64_t i = 0; any && i < n; ++i)
            if (v[i] < f->lo || v[i] >= f->hi) v[i] = wrap(v[i], f);
    }
    int32_t range = !f->cyclic, radix = (int32_t)f->radix;
    int64_t *bad = &counts[1], *outside = &counts[0];
    if (f->per_type || f->n_edges > 8) { /* edges per slot: a scalar loop */
        bin_block(n, v, real, padded, 0, f->lo, f->hi, f->upper_out, range, code, NULL, 0, bad, outside);
        for (int64_t i = 0; i < n; ++i) {
            const float *e = f->edges + (f->per_type && real[i] ? t[i] : 0) * f->n_edges;
            int32_t c = 0;
            for (int32_t j = 0; j < f->n_edges; ++j) c += v[i] >= e[j];
            code[i] = c;
            if (acc) acc[i] += (c * radix) & -real[i];
        }
    } else if (f->n_edges <= 4) {
        bin_block(n, v, real, padded, 4, f->lo, f->hi, f->upper_out, range, code, acc, radix, bad, outside);
    } else {
        bin_block(n, v, real, padded, 8, f->lo, f->hi, f->upper_out, range, code, acc, radix, bad, outside);
    }
}

/* Bin codes of every feature at every real slot of rows x slots, a block of rows at a time, feature by
 * feature. Joint (tok not NULL): row r of tok and of mask (both out_stride wide) gets the tokens
 * 1 + (type-1)*radix0 + sum code_k*radix_k (0 at empty slots) and the real-slot mask from column obj_col,
 * and the tokens offset_j + code_j of the n_glob globals gvals[r*n_glob + j] (mask 1) from glob_col.
 * Factorized (tok NULL): codes [type, code_1 + 1, ...] (0 at empty slots) into
 * fac[(r*slots + s)*(1 + n_feat) + k]. counts: (n_feat + n_glob, 2) out-of-range and NaN/inf real
 * values. Returns the ids outside 0..NT-1 (-1: too many features or columns, or no memory). */
VECTOR_CLONES static int64_t bin_slots(int64_t rows, int64_t slots, const int64_t *restrict ids,
                                       const float *restrict cont, int32_t n_cols, int32_t n_feat,
                                       const Feature *feat, int64_t radix0, int32_t *restrict tok,
                                       uint8_t *restrict mask, int64_t out_stride, int64_t obj_col,
                                       const float *restrict gvals, int32_t n_glob, const Feature *gfeat,
                                       int64_t glob_col, int64_t *restrict fac, int64_t *counts) {
    if (n_feat > MAX_FEAT || n_cols > MAX_FEAT || n_glob > MAX_FEAT) return -1;
    int64_t per_block = slots <= 0 ? BLOCK : BLOCK / slots > 0 ? BLOCK / slots : 1, bad_ids = 0;
    int64_t width = per_block * (slots > 0 ? slots : 1); /* >= per_block: the globals' buffers too */
    int32_t *buf = malloc(sizeof(int32_t) * 4 * width), type_radix = (int32_t)radix0;
    float *col = malloc(sizeof(float) * (n_cols + 1) * width), padded[2 * MAX_FEAT][8];
    if (!buf || !col) {
        free(buf), free(col);
        return -1;
    }
    int32_t *real = buf, *acc = fac ? NULL : buf + width, *code = buf + 2 * width, *ones = buf + 3 * width;
    float *gv = col + n_cols * width;
    for (int64_t i = 0; i < width; ++i) ones[i] = 1;
    for (int32_t k = 0; k < n_feat + n_glob; ++k) { /* shared edges padded with +inf (v >= inf: inf, an error) */
        const Feature *f = k < n_feat ? &feat[k] : &gfeat[k - n_feat];
        for (int32_t j = 0; j < 8; ++j) padded[k][j] = j < f->n_edges ? f->edges[j] : INFINITY;
    }
    for (int64_t b = 0; b < rows; b += per_block) {
        int64_t nr = rows - b < per_block ? rows - b : per_block, n = nr * slots;
        const int64_t *t = ids + b * slots;
        int32_t block_bad = 0;
        for (int64_t i = 0; i < n; ++i) { /* branch-free, in int32: it vectorizes; unsigned: no overflow */
            int32_t ok = (uint64_t)t[i] - 1u < NT - 1;
            block_bad += (t[i] != 0) & !ok;
            real[i] = ok;
            if (acc) acc[i] = (1 + ((int32_t)(t[i] & 7) - 1) * type_radix) & -ok;
        }
        bad_ids += block_bad;
        const float *x = cont + b * slots * n_cols;
        switch (n_cols) { /* constant strides vectorize */
        case 3: columns(n, x, 3, col, width); break;
        case 4: columns(n, x, 4, col, width); break;
        case 5: columns(n, x, 5, col, width); break;
        default: columns(n, x, n_cols, col, width);
        }
        for (int32_t k = 0; k < n_feat; ++k) {
            bin_feature(n, col + feat[k].col * width, real, t, &feat[k], padded[k], code, acc, &counts[2 * k]);
            if (fac)
                for (int64_t i = 0; i < n; ++i) fac[(b * slots + i) * (1 + n_feat) + k + 1] = (code[i] + 1) & -real[i];
        }
        for (int64_t r = 0; r < nr; ++r) {
            const int32_t *re = real + r * slots;
            if (fac) {
                int64_t *o = fac + (b + r) * slots * (1 + n_feat);
                for (int64_t s = 0; s < slots; ++s) o[s * (1 + n_feat)] = re[s] ? t[r * slots + s] : 0;
            } else {
                int32_t *o = tok + (b + r) * out_stride + obj_col;
                uint8_t *m = mask + (b + r) * out_stride + obj_col;
                for (int64_t s = 0; s < slots; ++s) o[s] = acc[r * slots + s], m[s] = (uint8_t)re[s];
            }
        }
        for (int32_t j = 0; tok && j < n_glob; ++j) { /* the globals of the block's rows, one token each */
            for (int64_t r = 0; r < nr; ++r) gv[r] = gvals[(b + r) * n_glob + j];
            bin_feature(nr, gv, ones, NULL, &gfeat[j], padded[n_feat + j], code, NULL, &counts[2 * (n_feat + j)]);
            for (int64_t r = 0; r < nr; ++r) {
                tok[(b + r) * out_stride + glob_col + j] = (int32_t)gfeat[j].offset + code[r];
                mask[(b + r) * out_stride + glob_col + j] = 1;
            }
        }
    }
    free(buf), free(col);
    return bad_ids;
}

int64_t joint_tokens(int64_t rows, int64_t slots, const int64_t *ids, const float *cont, int32_t n_cols,
                     int32_t n_feat, const Feature *feat, int64_t radix0, int32_t *tok, uint8_t *mask,
                     int64_t out_stride, int64_t obj_col, const float *gvals, int32_t n_glob, const Feature *gfeat,
                     int64_t glob_col, int64_t *counts) {
    return bin_slots(rows, slots, ids, cont, n_cols, n_feat, feat, radix0, tok, mask, out_stride, obj_col, gvals,
                     n_glob, gfeat, glob_col, NULL, counts);
}

int64_t factorized_codes(int64_t rows, int64_t slots, const int64_t *ids, const float *cont, int32_t n_cols,
                         int32_t n_feat, const Feature *feat, int64_t *out, int64_t *counts) {
    return bin_slots(rows, slots, ids, cont, n_cols, n_feat, feat, 0, NULL, NULL, 0, 0, NULL, 0, NULL, 0, out, counts);
}

/* *bad += NaN/inf among v[0..n); *lo, *hi: lowered/raised to the min and max (NaN skipped), 8 lanes at once
 * with the compiler's vector extensions (min/max reductions do not vectorize without -ffast-math). */
INLINE void summarize(int64_t n, const float *restrict v, float *lo, float *hi, int64_t *bad) {
    float l = *lo, h = *hi;
    int64_t nb = 0, i = 0;
#if defined(__GNUC__)
    typedef float f8 __attribute__((vector_size(32)));
    typedef int32_t i8 __attribute__((vector_size(32)));
    f8 vl, vh;
    i8 vb = {0};
    for (int j = 0; j < 8; ++j) vl[j] = l, vh[j] = h;
    for (; i + 8 <= n; i += 8) {
        f8 x;
        memcpy(&x, v + i, sizeof x);
        f8 d = x - x; /* 0 when finite, NaN otherwise */
        vb -= d != d;
        i8 lt = x < vl, gt = x > vh;
        vl = (f8)((lt & (i8)x) | (~lt & (i8)vl));
        vh = (f8)((gt & (i8)x) | (~gt & (i8)vh));
    }
    for (int j = 0; j < 8; ++j) {
        l = vl[j] < l ? vl[j] : l, h = vh[j] > h ? vh[j] : h;
        nb += vb[j];
    }
#endif
    for (; i < n; ++i) {
        nb += !(v[i] - v[i] == 0.0f);
        l = v[i] < l ? v[i] : l, h = v[i] > h ? v[i] : h;
    }
    *lo = l, *hi = h, *bad += nb;
}

/* The values of columns cols[0..n_out) at the real slots of the chosen rows (chosen NULL: all rows), of
 * object type `type` (0: any), in order, into outs[c] (outs NULL: only count them), with each column's
 * min and max into lohi[2c], lohi[2c + 1] (start them at +inf, -inf) and NaN/inf count into bad[c].
 * Returns how many. A block of rows at a time: the kept slots first (branch-free), then each column. */
VECTOR_CLONES int64_t gather(int64_t rows, int64_t slots, const int64_t *restrict ids, const float *restrict cont,
                             int32_t n_cols, int32_t n_out, const int32_t *cols, const uint8_t *chosen, int64_t type,
                             float *const *outs, float *lohi, int64_t *bad) {
    if (slots <= 0) return 0;
    int64_t per_block = BLOCK / slots > 0 ? BLOCK / slots : 1, n = 0;
    int32_t *keep = malloc(sizeof(int32_t) * per_block * slots);
    if (!keep) return -1;
    for (int64_t b = 0; b < rows; b += per_block) {
        int64_t nr = rows - b < per_block ? rows - b : per_block, m = 0;
        const int64_t *t = ids + b * slots;
        for (int64_t r = 0; r < nr; ++r) {
            if (chosen && !chosen[b + r]) continue;
            for (int64_t i = r * slots; i < (r + 1) * slots; ++i) {
                keep[m] = (int32_t)i;
                m += type ? t[i] == type : t[i] > 0;
            }
        }
        const float *x = cont + b * slots * n_cols;
        for (int32_t c = 0; outs && c < n_out; ++c) {
            float *o = outs[c] + n;
            const float *xc = x + cols[c];
            for (int64_t j = 0; j < m; ++j) o[j] = xc[(int64_t)keep[j] * n_cols];
            summarize(m, o, &lohi[2 * c], &lohi[2 * c + 1], &bad[c]);
        }
        n += m;
    }
    free(keep);
    return n;
}

#define COUNT_CHUNK 4096 /* values compared at once */

/* code[i] = bounds <= v[i] for k (constant) bounds, padded with +inf to an even number: the parity, which
 * says inside or outside a bracket, is unchanged (v >= +inf only for +inf, which is >= every bound);
 * above[j] += values >= bound j. */
INLINE void count_codes(int64_t m, const float *restrict v, const float *restrict b, int32_t k,
                               int32_t *restrict code, int32_t *restrict above) {
    for (int64_t i = 0; i < m; ++i) {
        int32_t c = 0;
        for (int32_t j = 0; j < k; ++j) c += v[i] >= b[j];
        code[i] = c;
    }
    for (int32_t j = 0; j < k; ++j) {
        int32_t a = 0;
        for (int64_t i = 0; i < m; ++i) a += code[i] > j;
        above[j] = a;
    }
}

/* quantiles.QuantileSketch.add_count: at_least[j] += values >= bounds[j] (nb sorted bounds, nb even, at
 * most 16); the values inside a bracket (an odd number of bounds <= v) appended to inside. Returns how
 * many. */
VECTOR_CLONES int64_t bracket_count(int64_t n, const float *restrict v, int32_t nb, const float *bounds,
                                    int64_t *at_least, float *restrict inside) {
    float padded[16];
    int32_t code[COUNT_CHUNK], above[16];
    int64_t n_in = 0;
    if (nb > 16 || nb % 2) return -1;
    for (int32_t j = 0; j < 16; ++j) padded[j] = j < nb ? bounds[j] : INFINITY;
    for (int64_t start = 0; start < n; start += COUNT_CHUNK) {
        int64_t m = n - start < COUNT_CHUNK ? n - start : COUNT_CHUNK;
        const float *x = v + start;
        if (nb <= 8)
            count_codes(m, x, padded, 8, code, above);
        else
            count_codes(m, x, padded, 16, code, above);
        for (int32_t j = 0; j < nb; ++j) at_least[j] += above[j];
        for (int64_t i = 0; i < m; ++i)
            if (code[i] & 1) inside[n_in++] = x[i];
    }
    return n_in;
}
