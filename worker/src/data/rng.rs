//! Seeded randomness that does not depend on thread scheduling: every random
//! decision of the loader draws from a generator derived from (seed, epoch,
//! position, purpose), so batches are identical whatever the thread count.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a generator is for, so the streams of one position never overlap.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    Shuffle = 1,
    Sample = 2,
    Mix = 3,
    /// The key of a device batch's erasing noise.
    Noise = 4,
}

/// A generator for one (seed, epoch, index, stream).
pub fn derive(seed: u64, epoch: u64, index: u64, stream: Stream) -> StdRng {
    let mut x = splitmix(seed ^ 0x6d61_656c_6162_0000);
    x = splitmix(x ^ epoch);
    x = splitmix(x ^ index);
    x = splitmix(x ^ stream as u64);
    StdRng::seed_from_u64(x)
}

/// SplitMix64's finaliser: a bijective mix, so distinct inputs give
/// well-separated seeds.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One standard-normal draw (Box-Muller).
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One Gamma(shape, 1) draw (Marsaglia and Tsang; shapes under 1 boosted).
pub fn gamma(rng: &mut impl Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = 1.0 - rng.r#gen::<f64>();
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = 1.0 - rng.r#gen::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// One Beta(alpha, alpha) draw, as numpy's `np.random.beta(alpha, alpha)` in
/// timm's Mixup.
pub fn beta_symmetric(rng: &mut impl Rng, alpha: f64) -> f64 {
    let x = gamma(rng, alpha);
    let y = gamma(rng, alpha);
    if x + y > 0.0 { x / (x + y) } else { 0.5 }
}
