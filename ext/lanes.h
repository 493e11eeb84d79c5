/* LaneKernel's C: B lanes (minibatch rows) of one model trained, scored and sampled together, in
 * float64 or float32, on the threads of one OpenMP team. ext/lanes_ops.h holds the algorithm, once
 * per type; this file holds the state it works on (cs_lanes) and the calls ext/lanes.pxi makes.
 *
 * Every product is a cs_pgemm: C's tiles (16 rows x 64 columns, starting at multiples of those) are
 * shared among the team, and each tile is one cs_gemm_acc with the whole sum over k in a fixed order.
 * Which code path computes C[i, j] depends on i, j and C's shape alone, so the result is the same to
 * the bit for any number of threads; the reductions across rows (losses, bias gradients) run in row
 * order on one thread per output. Built without OpenMP the pragmas are ignored: one thread.
 */
#ifndef CHARSTREAM_LANES_H
#define CHARSTREAM_LANES_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cells.h"

typedef struct {
    int cell, f32, nt;                 /* CS_RNN/GRU/LSTM; float32 (else float64); threads */
    ptrdiff_t H, V, L, G, GH, S, SC, B, T, Vp, ldT;   /* S floats of state per lane, SC vectors per layer */
    void **Wx, **Wh, **b, *Why, *by;             /* parameters, per layer where named so */
    void **dWx, **dWh, **db, *dWhy, *dby;        /* their gradients */
    void **P, **D, **M, **Vm;                    /* every parameter, gradient, memory, moment: table order */
    ptrdiff_t *sizes, nparams;
    ptrdiff_t nlast;   /* the steps the last gradients sum over: Adam clips at 5 per step */
    double input_lr;   /* Adam's step for Wxh of layer 0 is input_lr * lr (the one-hot input's weights) */
    void *hs;      /* (L, T+1, B, H): hs[l, 0] the state before the chunk, hs[l, t+1] h_t */
    void *cs;      /* (L, T+1, B, H): the LSTM's c */
    void *acts;    /* (L, T, B, GH): the input side Wxh x + bh, then the activated gates */
    void *aux;     /* (L, T, B, H): what each cell's backward needs besides */
    void *da;      /* (T, B, GH): dL/d(Wxh x + bh) of one layer */
    void *dw;      /* (T, B, GH): dL/d(Whh hprev), the GRU's own */
    void *dhx;     /* (L, T, B, H): dL/dh_t from above */
    void *ys;      /* (T*B, Vp): logits, then dy */
    void *tT;      /* (max(V, GH), ldT): dy, dw or da transposed, ldT = T*B rounded up to 16 */
    void *wT;      /* prepared: per layer Whh^T (H, GH) at offh[l], Wxh^T (H, GH) at offx[l] (l > 0), Why^T (H, V) at offy */
    void *wx0T;    /* (V, GH): the first layer's Wxh transposed, an input's column in one stretch */
    void *wP;      /* the weights' panels for cs_gemm_pk, at opk (cs_lanes_layout) */
    void *pk;      /* (T*B, H) in panels: a chunk's states, packed for a weight gradient's product */
    ptrdiff_t *opk;
    void *gx0T;    /* (V, GH): the first layer's dWxh transposed */
    void *dhnext, *dcn, *dhp, *hn, *cn;   /* (B, H) */
    void *z;       /* (B, GH) */
    double *rowloss;   /* (T*B,) */
    double *yd;        /* (B, V): sampling's logits in double */
    double *scratch;   /* (B, V): sampling's top-k scratch */
    int *xin;          /* (B,): sampling's inputs of one step */
    ptrdiff_t *offh, *offx, offy;
    int stale;         /* wT and wx0T are out of date (set by an update) */
    double loss;
    /* dropout (training only; ext/lanes_ops.h, cs_lanes_drop): off when keep_bits is 0 */
    uint64_t dkey;     /* cs_drop_key(seed, step): the masks of one update */
    uint64_t keep_bits;   /* a unit is kept when its hash >> 11 < keep_bits (keep = 1 - rate, times 2^53) */
    double dscale;     /* 1 / keep: inverted dropout */
    void *dm;          /* (L, T, B, H): each layer's output mask, 0 or dscale */
    void *hd;          /* (L, T, B, H): each layer's output times its mask, what the layer above and the head read */
} cs_lanes;

/* splitmix64's output function over z + the golden gamma: a counter-based hash (Steele et al. 2014). */
static inline uint64_t cs_splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The key of one update's masks: splitmix64(seed ^ splitmix64(step)). Unit i of lane b's output of
 * layer l at step t of the chunk is kept when splitmix64(key + ((l*T + t)*B + b)*H + i) >> 11 < keep_bits. */
static inline uint64_t cs_drop_key(uint64_t seed, uint64_t step)
{
    return cs_splitmix64(seed ^ cs_splitmix64(step));
}

#define CS_LANE_MB 24   /* cs_pgemm's tile: rows (a multiple of every path's block rows, 4 and 6) ... */
#define CS_LANE_NB 64   /* ... and columns (a multiple of every path's 4 vectors: 64 floats with AVX-512) */

static inline int cs_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Equivalent to `np.argmax(y[:V])`: the first index of the largest. */
static inline ptrdiff_t cs_argmax(const double *y, ptrdiff_t V)
{
    ptrdiff_t best = 0;
    for (ptrdiff_t k = 1; k < V; k++)
        if (y[k] > y[best])
            best = k;
    return best;
}

/* A draw from softmax(y * inv), y the logits with their bias (overwritten), by inverse CDF at u in
 * [0, 1), cut to the top_k most probable first when 0 < top_k < V: the single-lane kernels' draw. */
static inline ptrdiff_t cs_draw_logits(double *y, ptrdiff_t V, double inv, double u, ptrdiff_t top_k, double *s)
{
    double m = y[0], w;
    for (ptrdiff_t k = 1; k < V; k++)
        m = y[k] > m ? y[k] : m;
    w = cs_exp_affine(y, V, m, inv);
    if (0 < top_k && top_k < V)
        w = cs_cut_top_k(y, V, top_k, s);
    return cs_draw(y, V, u * w);
}

#define CS_REAL double
#define CS_NAME(x) x##_d
#define CS_EXP_AFFINE cs_exp_affine
#define CS_TANH cs_tanh
#define CS_CELL(x) x
#define CS_ADAGRAD cs_adagrad
#include "lanes_ops.h"
#include "lanes_end.h"
#define CS_REAL float
#define CS_NAME(x) x##_f
#define CS_EXP_AFFINE cs_exp_affine_f
#define CS_TANH cs_tanh_f
#define CS_CELL(x) x##_f
#define CS_ADAGRAD cs_adagrad_f
#include "lanes_ops.h"
#include "lanes_end.h"

/* Where the weights' panels go in wP (fills c->opk); returns the elements they take. */
static ptrdiff_t cs_lanes_layout(cs_lanes *c)
{
    return c->f32 ? cs_lanes_layout_f(c, c->opk) : cs_lanes_layout_d(c, c->opk);
}

/* Forward and backward of one chunk of n steps on every lane: xs (B, ldx) int32 holds each lane's
 * inputs xs[b, :n] and targets xs[b, 1:n+1]; state (B, S) in the model's type is read, then set to
 * the last state. Fills the gradients of scale * the summed loss; returns the summed loss in nats. */
static double cs_lanes_chunk(cs_lanes *c, const int *xs, ptrdiff_t ldx, ptrdiff_t n, void *state, double scale)
{
    return c->f32 ? cs_lanes_chunk_f(c, xs, ldx, n, (float *)state, (float)scale)
                  : cs_lanes_chunk_d(c, xs, ldx, n, (double *)state, scale);
}

/* One optimizer step over every parameter (Adam when c->Vm, with bias corrections c1, c2; else Adagrad). */
static void cs_lanes_update(cs_lanes *c, double lr, double c1, double c2)
{
    if (c->f32)
        cs_lanes_update_f(c, lr, c1, c2);
    else
        cs_lanes_update_d(c, lr, c1, c2);
}

/* Step the first Bn lanes' states (Bn, S) through xs[b, :n] (rows ldx apart); with losses, also add
 * each lane's -log p(xs[b, t+1]) after each step (lanes_ops.h: cs_lanes_run). */
static void cs_lanes_run(cs_lanes *c, ptrdiff_t Bn, const int *xs, ptrdiff_t ldx, ptrdiff_t n, void *state,
                         double *losses)
{
    if (c->f32)
        cs_lanes_run_f(c, Bn, xs, ldx, n, (float *)state, losses);
    else
        cs_lanes_run_d(c, Bn, xs, ldx, n, (double *)state, losses);
}

/* Sample n characters on each of the first Bn lanes: see lanes_ops.h, cs_lanes_sample. */
static void cs_lanes_sample(cs_lanes *c, ptrdiff_t Bn, void *state, const double *u, ptrdiff_t ldu, int *out,
                            ptrdiff_t ldo, ptrdiff_t n, const double *inv, const unsigned char *greedy,
                            const ptrdiff_t *top_k)
{
    if (c->f32)
        cs_lanes_sample_f(c, Bn, (float *)state, u, ldu, out, ldo, n, inv, greedy, top_k);
    else
        cs_lanes_sample_d(c, Bn, (double *)state, u, ldu, out, ldo, n, inv, greedy, top_k);
}

/* Softmax of lane 0's logits over temperature into p (V doubles). */
static void cs_lanes_probs(cs_lanes *c, const void *state, double *p, double inv)
{
    if (c->f32)
        cs_lanes_probs_f(c, (const float *)state, p, inv);
    else
        cs_lanes_probs_d(c, (const double *)state, p, inv);
}

#endif
