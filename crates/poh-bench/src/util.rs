//! Small helpers of the benchmark binary and its examples.

use anyhow::{Context, Result};

/// `size` pseudo-random bytes, the same for the same `i` (xorshift seeded from it): the
/// payload of the benchmark's tx `i`, which neither compresses nor repeats.
pub fn payload(i: usize, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in p.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    p
}

/// The median of `v` (the upper one of an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Positional argument `i` of the command line, parsed, or `default` when absent.
pub fn arg<T: std::str::FromStr>(i: usize, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    std::env::args()
        .nth(i)
        .map(|s| s.parse::<T>())
        .transpose()
        .with_context(|| format!("argument {i}"))
        .map(|v| v.unwrap_or(default))
}
