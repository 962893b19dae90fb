//! A small seeded PRNG (SplitMix64) for property tests, and the time budget they run for.
//!
//! `EPHEMERAL_ROOT_FUZZ_SECS` sets how long each property test runs (default 2 s);
//! `EPHEMERAL_ROOT_FUZZ_SEED` fixes the first seed (default: from the clock; printed on failure
//! by the caller).

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let n = self.below(max_len + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// How long one property test runs.
pub fn budget() -> std::time::Duration {
    let secs = std::env::var("EPHEMERAL_ROOT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    std::time::Duration::from_secs_f64(secs)
}

/// Run `f(rng, case)` with fresh seeds until the budget is spent (at least `min_cases` times).
/// A panic inside names the seed that reproduces it (`EPHEMERAL_ROOT_FUZZ_SEED=…`).
pub fn run(name: &str, min_cases: u64, mut f: impl FnMut(&mut Rng)) -> u64 {
    let first = std::env::var("EPHEMERAL_ROOT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let start = std::time::Instant::now();
    let budget = budget();
    let mut n = 0u64;
    while n < min_cases || start.elapsed() < budget {
        let seed = first.wrapping_add(n);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&mut Rng::new(seed));
        }));
        if let Err(e) = r {
            eprintln!("{name}: failed with EPHEMERAL_ROOT_FUZZ_SEED={seed}");
            std::panic::resume_unwind(e);
        }
        n += 1;
    }
    eprintln!("{name}: {n} cases in {:.1?}", start.elapsed());
    n
}
