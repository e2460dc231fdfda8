// Counter-based Gaussian noise shared by jemfast's CUDA kernels.
//
// Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as
// easy as 1, 2, 3", SC 2011) with the round, key schedule and word layout of
// triton.language.random.philox for 32-bit counter words, followed by
// Triton's uint_to_uniform_float and the first output of its Box-Muller
// pair_uniform_to_normal. A normal is therefore a pure function of
// (seed, counter): the CUDA, Triton and PyTorch backends produce the same
// Philox words bit for bit and float32 normals that agree to a few ulps (the
// libm logf/cosf/sqrtf here; compiled Triton uses an approximate sqrt).
//
// Everything is __host__ __device__ and free of CUDA/torch headers beyond the
// qualifiers, so the host test program can check it against an independent
// implementation on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define JEMFAST_HD __host__ __device__ __forceinline__
#else
#define JEMFAST_HD inline
#endif

namespace jemfast {

constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;  // Weyl increment of k0 (golden ratio)
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;  // Weyl increment of k1 (sqrt(3) - 1)
constexpr int kPhiloxRounds = 10;

// Triton's int31 -> [0, 1) scale: the largest float32 with (2**31 - 1) * scale < 1.
constexpr float kUniformScale = 4.6566127342e-10f;
// Box-Muller lower bound on the radial uniform, as in Triton, so log(u) stays finite.
constexpr float kBoxMullerMinU = 1.0e-7f;
constexpr float kTwoPi = 6.283185307179586f;

struct PhiloxWords {
  uint32_t r0, r1, r2, r3;
};

JEMFAST_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Philox4x32-10 on counter words (c0, c1, c2, c3) and key (k0, k1), all uint32
// with wrapping arithmetic.
JEMFAST_HD PhiloxWords philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                     uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < kPhiloxRounds; ++round) {
    const uint32_t hi_a = mulhi32(kPhiloxRoundA, c0);
    const uint32_t lo_a = kPhiloxRoundA * c0;
    const uint32_t hi_b = mulhi32(kPhiloxRoundB, c2);
    const uint32_t lo_b = kPhiloxRoundB * c2;
    c0 = hi_b ^ c1 ^ k0;
    c1 = lo_b;
    c2 = hi_a ^ c3 ^ k1;
    c3 = lo_a;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  return PhiloxWords{c0, c1, c2, c3};
}

// Philox words for a 64-bit counter n and 64-bit seed: counter (lo32(n), hi32(n), 0, 0),
// key (lo32(seed), hi32(seed)). For n < 2**32 this is tl.randint4x(seed, n).
JEMFAST_HD PhiloxWords philox_at(uint64_t seed, uint64_t counter) {
  return philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Counter words (lo, hi) of base + step for a small step, with 32-bit adds and a
// carry: kernels handling several consecutive elements compute the 64-bit base
// once and derive the rest this way.
JEMFAST_HD void counter_words_after(uint32_t base_lo, uint32_t base_hi, uint32_t step, uint32_t* lo,
                                    uint32_t* hi) {
  *lo = base_lo + step;
  *hi = base_hi + (*lo < step ? 1u : 0u);
}

// Triton's uint_to_uniform_float for 32-bit words: a float32 in [0, 1).
JEMFAST_HD float uint32_to_uniform(uint32_t word) {
  int32_t v = static_cast<int32_t>(word);
  v = v < 0 ? ~v : v;
  // int -> float rounds to nearest on both host and device (cvt.rn.f32.s32).
  return static_cast<float>(v) * kUniformScale;
}

// First output of Triton's pair_uniform_to_normal (Box-Muller), float32.
// Deliberately the accurate logf/cosf/sqrtf: the result must agree with the
// PyTorch reference to 1e-6, which the fast intrinsics do not.
JEMFAST_HD float box_muller(float u0, float u1) {
  const float radial = fmaxf(kBoxMullerMinU, u0);
  const float theta = kTwoPi * u1;
  const float radius = sqrtf(-2.0f * logf(radial));
  return radius * cosf(theta);
}

// The standard normal jemfast assigns to (seed, counter).
JEMFAST_HD float philox_normal(uint64_t seed, uint64_t counter) {
  const PhiloxWords w = philox_at(seed, counter);
  return box_muller(uint32_to_uniform(w.r0), uint32_to_uniform(w.r1));
}

}  // namespace jemfast
