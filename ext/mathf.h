/* float32's exp, tanh and Adagrad, in plain arithmetic that gcc and clang vectorise on every path (no libm
 * call in the loop, so no libmvec needed): the float kernels' activations and softmax. */
#ifndef CHARSTREAM_MATHF_H
#define CHARSTREAM_MATHF_H

#include <math.h>
#include <stddef.h>
#include <string.h>

/* exp(x) for float, within about 2 ulp on [-87, 88] (clamped there: no inf, no denormal): x = n ln2 + r,
 * |r| <= ln2/2 (Cody-Waite, n ln2_hi exact), exp(r) by its Taylor polynomial to r^7 (the first term
 * left out is below 6e-9 relative), times 2^n put together in the exponent bits. */
static inline float cs_expf(float x)
{
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float t = x * 1.44269504088896341f;
    int n = (int)(t + (t < 0.0f ? -0.5f : 0.5f));
    float r = x - (float)n * 0.693145751953125f;
    r = r - (float)n * 1.42860682030941723212e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int bits = (n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* Equivalent to `h[:n] = np.tanh(h[:n])` in float: (e - 1) / (e + 1) with e = exp(2a), a clamped to
 * [-9, 9] (tanh(9) rounds to 1.0f); absolute error below 2e-7. */
static inline void cs_tanh_f(float *h, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float a = h[i] > 9.0f ? 9.0f : (h[i] < -9.0f ? -9.0f : h[i]);
        float e = cs_expf(a + a);
        h[i] = (e - 1.0f) / (e + 1.0f);
    }
}

/* Equivalent to `y[:n] = np.exp((y[:n] - m) * s); return y[:n].sum()` in float, summed in double. */
static inline double cs_exp_affine_f(float *y, ptrdiff_t n, float m, float s)
{
    double sum = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        y[i] = cs_expf((y[i] - m) * s);
        sum += y[i];
    }
    return sum;
}

/* min-char-rnn's Adagrad in float: `d = clip(d, -5, 5); m += d * d; p += -lr * d / sqrt(m + 1e-8)`. */
static inline void cs_adagrad_f(float *p, const float *d, float *m, ptrdiff_t n, double lr)
{
    const float nlr = (float)-lr;
    for (ptrdiff_t i = 0; i < n; i++) {
        float g = d[i];
        g = g > 5.0f ? 5.0f : g;
        g = g < -5.0f ? -5.0f : g;
        m[i] += g * g;
        p[i] += nlr * g / sqrtf(m[i] + 1e-8f);
    }
}

#endif
