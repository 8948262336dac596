//! One small deterministic PRNG (splitmix64) for property-style loops and simulations, so a
//! seed always gives the same run and no extra crate is needed.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() as f64 / u64::MAX as f64) < p
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `bytes` with 1 to `max_edits` random byte replacements, deletions or insertions.
    pub fn mutate(&mut self, bytes: &[u8], max_edits: usize) -> Vec<u8> {
        let mut m = bytes.to_vec();
        for _ in 0..=self.below(max_edits) {
            let i = self.below(m.len());
            match self.below(3) {
                0 => m[i] = self.next() as u8,
                1 => {
                    m.remove(i);
                }
                _ => m.insert(i, self.next() as u8),
            }
        }
        m
    }
}
