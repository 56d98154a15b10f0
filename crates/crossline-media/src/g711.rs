//! G.711 µ-law (PCMU) and A-law (PCMA) companding, ITU-T G.711.
//!
//! Everything is a table look-up; the tables are built at compile time by
//! `const fn`, so there is no start-up cost and no branch per sample.
//!
//! Input and output are 16-bit linear PCM. G.711 itself works on 14-bit
//! (µ-law) and 13-bit (A-law) samples; the 16-bit values used here are those
//! scaled left, as in the ITU-T G.191 reference code. Negative samples are
//! folded by one's complement (`!s`, i.e. `-s - 1`) as G.191 does, which keeps
//! the quantiser exactly symmetric: `s` and `!s` differ only in the sign bit of
//! their code. Consequences worth knowing:
//!
//! * µ-law has two zero codes: `0xFF` (+0) and `0x7F` (−0). Samples `0..=3`
//!   encode to `0xFF`, `-4..=-1` to `0x7F`; both decode to `0`, and `0`
//!   encodes back to `0xFF`.
//! * A-law has no zero code: `0xD5` decodes to `+8`, `0x55` to `-8`.
//! * Decoding gives the middle of each quantisation interval, so
//!   `encode(decode(c)) == c` for every code except µ-law `0x7F`.

/// µ-law encoder input: the top 14 bits of the sample (`s >> 2`).
const ULAW_ENC_BITS: u32 = 14;
/// A-law's finest step is 16 in 16-bit units, so the top 12 bits (`s >> 4`)
/// already decide the code: a smaller table that stays in L1 cache.
const ALAW_ENC_BITS: u32 = 12;

/// µ-law bias, in 14-bit units (132 in 16-bit units).
const ULAW_BIAS: i32 = 33;
/// Largest biased 14-bit µ-law magnitude (top of segment 7).
const ULAW_CLIP: i32 = 0x1FFF;

/// Encode one µ-law sample from its 14-bit two's-complement value.
const fn ulaw_encode_14(x: i32) -> u8 {
    // One's-complement fold: -1 maps to magnitude 0 (the "−0" code).
    let (sign, mag) = if x < 0 { (0x80, !x) } else { (0x00, x) };
    let mut biased = mag + ULAW_BIAS;
    if biased > ULAW_CLIP {
        biased = ULAW_CLIP;
    }
    // biased is in 33..=0x1FFF, so its top set bit is bit 5..=12.
    let seg = (31 - (biased as u32).leading_zeros()) as i32 - 5;
    let mantissa = (biased >> (seg + 1)) & 0x0F;
    // All bits are transmitted inverted.
    !((sign | (seg << 4) | mantissa) as u8)
}

/// Decode one µ-law code to 16-bit linear (G.191 `ulaw_expand`).
const fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let exponent = ((c >> 4) & 0x07) as i32;
    let mantissa = (c & 0x0F) as i32;
    // Interval midpoint: ((2m + 33) << e) - 33 in 14-bit units, times 4.
    let mag = (((mantissa << 1) + 33) << exponent) - 33;
    let v = mag << 2;
    if c & 0x80 != 0 {
        -v as i16
    } else {
        v as i16
    }
}

/// Encode one A-law sample from its 12-bit two's-complement value
/// (16-bit sample `>> 4`).
const fn alaw_encode_12(x: i32) -> u8 {
    // One's-complement fold, sign bit set for positive values (G.191).
    let (sign, mag) = if x < 0 { (0x00, !x) } else { (0x80, x) };
    // mag is 0..=2047; segment 0 and 1 share a step size.
    let code = if mag < 16 {
        mag
    } else {
        let seg = (31 - (mag as u32).leading_zeros()) as i32 - 3;
        (seg << 4) | ((mag >> (seg - 1)) & 0x0F)
    };
    // Even bits are inverted on the line.
    ((sign | code) as u8) ^ 0x55
}

/// Decode one A-law code to 16-bit linear (G.191 `alaw_expand`).
const fn alaw_decode(code: u8) -> i16 {
    let c = code ^ 0x55;
    let seg = ((c & 0x70) >> 4) as i32;
    let mut mag = (c & 0x0F) as i32;
    if seg > 0 {
        mag += 16;
    }
    // Interval midpoint in 16-bit units.
    mag = (mag << 4) + 8;
    if seg > 1 {
        mag <<= seg - 1;
    }
    if c & 0x80 != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

const fn build_ulaw_encode() -> [u8; 1 << ULAW_ENC_BITS] {
    let mut t = [0u8; 1 << ULAW_ENC_BITS];
    let mut i = 0;
    while i < t.len() {
        // Index is the sample's top 14 bits as unsigned; sign-extend back.
        let x = ((i as u16) << (16 - ULAW_ENC_BITS)) as i16 as i32 >> (16 - ULAW_ENC_BITS);
        t[i] = ulaw_encode_14(x);
        i += 1;
    }
    t
}

const fn build_alaw_encode() -> [u8; 1 << ALAW_ENC_BITS] {
    let mut t = [0u8; 1 << ALAW_ENC_BITS];
    let mut i = 0;
    while i < t.len() {
        let x = ((i as u16) << (16 - ALAW_ENC_BITS)) as i16 as i32 >> (16 - ALAW_ENC_BITS);
        t[i] = alaw_encode_12(x);
        i += 1;
    }
    t
}

const fn build_decode(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode(i as u8)
        } else {
            ulaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

// `static`, not `const`: one copy in memory, not one per use site.
static ULAW_ENCODE: [u8; 1 << ULAW_ENC_BITS] = build_ulaw_encode();
static ALAW_ENCODE: [u8; 1 << ALAW_ENC_BITS] = build_alaw_encode();
static ULAW_DECODE: [i16; 256] = build_decode(false);
static ALAW_DECODE: [i16; 256] = build_decode(true);

/// Encode one 16-bit linear sample to µ-law.
#[inline(always)]
pub fn linear_to_ulaw(s: i16) -> u8 {
    // The shifted index is always < table length, so no bounds check remains.
    ULAW_ENCODE[((s as u16) >> (16 - ULAW_ENC_BITS)) as usize]
}

/// Decode one µ-law code to 16-bit linear.
#[inline(always)]
pub fn ulaw_to_linear(c: u8) -> i16 {
    ULAW_DECODE[c as usize]
}

/// Encode one 16-bit linear sample to A-law.
#[inline(always)]
pub fn linear_to_alaw(s: i16) -> u8 {
    ALAW_ENCODE[((s as u16) >> (16 - ALAW_ENC_BITS)) as usize]
}

/// Decode one A-law code to 16-bit linear.
#[inline(always)]
pub fn alaw_to_linear(c: u8) -> i16 {
    ALAW_DECODE[c as usize]
}

/// Encode `src` to µ-law into `dst`. Converts `min(src.len(), dst.len())`
/// samples and returns that count; the rest of `dst` is left untouched.
#[inline]
pub fn encode_ulaw(src: &[i16], dst: &mut [u8]) -> usize {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = linear_to_ulaw(s);
    }
    src.len().min(dst.len())
}

/// Encode `src` to A-law into `dst`; same length rule as [`encode_ulaw`].
#[inline]
pub fn encode_alaw(src: &[i16], dst: &mut [u8]) -> usize {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = linear_to_alaw(s);
    }
    src.len().min(dst.len())
}

/// Decode µ-law `src` into `dst`; same length rule as [`encode_ulaw`].
#[inline]
pub fn decode_ulaw(src: &[u8], dst: &mut [i16]) -> usize {
    for (d, &c) in dst.iter_mut().zip(src) {
        *d = ulaw_to_linear(c);
    }
    src.len().min(dst.len())
}

/// Decode A-law `src` into `dst`; same length rule as [`encode_ulaw`].
#[inline]
pub fn decode_alaw(src: &[u8], dst: &mut [i16]) -> usize {
    for (d, &c) in dst.iter_mut().zip(src) {
        *d = alaw_to_linear(c);
    }
    src.len().min(dst.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_vectors() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(3), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(-4), 0x7F);
        assert_eq!(linear_to_ulaw(4), 0xFE);
        assert_eq!(linear_to_ulaw(-5), 0x7E);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);
        // Segment edges (G.711 table 2a, scaled by 4).
        assert_eq!(ulaw_to_linear(0xF0), 120);
        assert_eq!(ulaw_to_linear(0xEF), 132);
    }

    #[test]
    fn alaw_known_vectors() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(15), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(-16), 0x55);
        assert_eq!(linear_to_alaw(16), 0xD4);
        assert_eq!(linear_to_alaw(32767), 0xAA);
        assert_eq!(linear_to_alaw(-32768), 0x2A);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn ulaw_every_code_round_trips() {
        for c in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(c));
            if c == 0x7F {
                // −0 decodes to 0, which encodes as +0.
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, c, "code {c:#04x}");
            }
        }
    }

    #[test]
    fn alaw_every_code_round_trips() {
        for c in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "code {c:#04x}");
        }
    }

    /// Decoded level of the code for `s`, as a key that must not decrease.
    fn check_monotonic(enc: fn(i16) -> u8, dec: fn(u8) -> i16) {
        let mut prev = i32::MIN;
        for s in i16::MIN..=i16::MAX {
            let level = dec(enc(s)) as i32;
            assert!(level >= prev, "not monotonic at {s}");
            prev = level;
        }
    }

    #[test]
    fn ulaw_monotonic_and_symmetric() {
        check_monotonic(linear_to_ulaw, ulaw_to_linear);
        for s in i16::MIN..=i16::MAX {
            // One's-complement fold: s and !s differ only in the sign bit.
            assert_eq!(linear_to_ulaw(s) ^ 0x80, linear_to_ulaw(!s));
        }
    }

    #[test]
    fn alaw_monotonic_and_symmetric() {
        check_monotonic(linear_to_alaw, alaw_to_linear);
        for s in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_alaw(s) ^ 0x80, linear_to_alaw(!s));
        }
    }

    #[test]
    fn decode_levels_rise_with_magnitude_bits() {
        // Within each sign, a larger 7-bit magnitude decodes strictly larger.
        for sign in [0x00u8, 0x80] {
            let ulaw: Vec<i32> = (0..128u8)
                .map(|m| i32::from(ulaw_to_linear(!(sign | m))).abs())
                .collect();
            let alaw: Vec<i32> = (0..128u8)
                .map(|m| i32::from(alaw_to_linear((sign | m) ^ 0x55)).abs())
                .collect();
            assert!(ulaw.windows(2).all(|w| w[0] < w[1]), "{ulaw:?}");
            assert!(alaw.windows(2).all(|w| w[0] < w[1]), "{alaw:?}");
        }
    }

    #[test]
    fn quantisation_error_bounded() {
        // Error stays near half the local step, except above the top level (clipping).
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let a = alaw_to_linear(linear_to_alaw(s)) as i32;
            let s = s as i32;
            let mag = s.unsigned_abs() as i32;
            let ulaw_tol = if mag > 32124 {
                32768 - 32124
            } else {
                mag / 16 + 16
            };
            let alaw_tol = if mag > 32256 {
                32768 - 32256
            } else {
                mag / 16 + 16
            };
            assert!((u - s).abs() <= ulaw_tol, "µ-law {s} -> {u}");
            assert!((a - s).abs() <= alaw_tol, "A-law {s} -> {a}");
        }
    }

    #[test]
    fn slice_helpers_match_scalar_and_respect_lengths() {
        let src: Vec<i16> = (0..1000).map(|i| (i * 65 - 32000) as i16).collect();
        let mut u = [0u8; 1000];
        let mut a = [0u8; 1000];
        assert_eq!(encode_ulaw(&src, &mut u), 1000);
        assert_eq!(encode_alaw(&src, &mut a), 1000);
        for (i, &s) in src.iter().enumerate() {
            assert_eq!(u[i], linear_to_ulaw(s));
            assert_eq!(a[i], linear_to_alaw(s));
        }
        let mut lin = [0i16; 1000];
        assert_eq!(decode_ulaw(&u, &mut lin), 1000);
        assert!(lin.iter().zip(&u).all(|(&l, &c)| l == ulaw_to_linear(c)));
        assert_eq!(decode_alaw(&a, &mut lin), 1000);
        assert!(lin.iter().zip(&a).all(|(&l, &c)| l == alaw_to_linear(c)));

        // Shorter destination: only that much is written.
        let mut short = [0xAAu8; 4];
        assert_eq!(encode_ulaw(&src, &mut short), 4);
        let mut long = [7i16; 8];
        assert_eq!(decode_alaw(&a[..3], &mut long), 3);
        assert_eq!(long[3..], [7i16; 5]);
    }
}
