//! A simulated lookup for benchmarks without a server: the seed's example (a request that
//! upper-cases its input after an IO delay), with the delay drawn from a configured
//! distribution by a seeded generator, and waited for on the core's timers (no thread
//! sleeps). The result depends only on the input.

use std::time::Duration;

use super::{AsyncError, AsyncResult, Timers};

/// The delay distribution of the simulated lookup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniform in `lo ..= hi`.
    Uniform {
        /// Shortest.
        lo: Duration,
        /// Longest.
        hi: Duration,
    },
    /// Log-normal with this median and σ of the underlying normal.
    LogNormal {
        /// The median delay.
        median: Duration,
        /// σ of ln(delay).
        sigma: f64,
    },
}

/// splitmix64: a small seeded generator (deterministic across runs for one seed).
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn next_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

impl Latency {
    /// Draws one delay.
    pub fn sample(&self, rng: &mut SplitMix) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { lo, hi } => {
                let span = hi.saturating_sub(lo).as_nanos() as u64;
                lo + Duration::from_nanos(if span == 0 {
                    0
                } else {
                    rng.next_u64() % (span + 1)
                })
            }
            Latency::LogNormal { median, sigma } => {
                // Box-Muller.
                let (u1, u2) = (rng.next_f64(), rng.next_f64());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let ns = median.as_nanos() as f64 * (sigma * z).exp();
                Duration::from_nanos(ns.min(1e15) as u64)
            }
        }
    }
}

/// The simulated service of one partition.
pub struct SimulatedLookup {
    timers: Timers,
    latency: Latency,
    rng: SplitMix,
}

impl SimulatedLookup {
    /// A lookup on `timers` with `latency`, seeded with `seed`.
    pub fn new(timers: Timers, latency: Latency, seed: u64) -> Self {
        Self {
            timers,
            latency,
            rng: SplitMix(seed),
        }
    }

    /// The seed's example: `input` upper-cased, after a simulated IO delay.
    pub fn upper(
        &mut self,
        input: String,
    ) -> impl std::future::Future<Output = AsyncResult<String>> {
        let d = self.latency.sample(&mut self.rng);
        let timers = self.timers.clone();
        async move {
            if !d.is_zero() {
                timers.sleep_ns(d.as_nanos() as u64).await;
            }
            Ok::<_, AsyncError>(vec![input.to_uppercase()])
        }
    }

    /// A delay then `f(input)`.
    pub fn call<I: 'static, O: 'static>(
        &mut self,
        input: I,
        f: impl FnOnce(I) -> O + 'static,
    ) -> impl std::future::Future<Output = AsyncResult<O>> {
        let d = self.latency.sample(&mut self.rng);
        let timers = self.timers.clone();
        async move {
            if !d.is_zero() {
                timers.sleep_ns(d.as_nanos() as u64).await;
            }
            Ok::<_, AsyncError>(vec![f(input)])
        }
    }
}

/// The comparison point the seed describes (Flink's way): a fixed pool of OS threads,
/// each doing the simulated IO as a blocking call (`thread::sleep`). The core hands a
/// request to the pool and re-polls its answer on the core's timers every `IO_POLL_NS`
/// (the same bound the core uses for its own io_uring), since a pool thread cannot ring
/// the core. For benchmarks only.
pub struct ThreadPoolLookup {
    tx: std::sync::mpsc::Sender<PoolJob>,
    timers: Timers,
    latency: Latency,
    rng: SplitMix,
}

type Answer = std::sync::Arc<std::sync::Mutex<Option<()>>>;
struct PoolJob {
    delay: Duration,
    answer: Answer,
}

impl ThreadPoolLookup {
    /// Starts `threads` pool threads (they end when the lookup is dropped).
    pub fn new(timers: Timers, latency: Latency, seed: u64, threads: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<PoolJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("rill-pool-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().expect("pool queue").recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    std::thread::sleep(job.delay); // the blocking call
                    *job.answer.lock().expect("answer") = Some(());
                });
        }
        Self {
            tx,
            timers,
            latency,
            rng: SplitMix(seed),
        }
    }

    /// A delay on a pool thread, then `f(input)`.
    pub fn call<I: 'static, O: 'static>(
        &mut self,
        input: I,
        f: impl FnOnce(I) -> O + 'static,
    ) -> impl std::future::Future<Output = AsyncResult<O>> {
        let delay = self.latency.sample(&mut self.rng);
        let answer: Answer = Default::default();
        let sent = self.tx.send(PoolJob {
            delay,
            answer: answer.clone(),
        });
        let timers = self.timers.clone();
        async move {
            if sent.is_err() {
                return Err(AsyncError::Service("the thread pool is gone".into()));
            }
            while answer.lock().expect("answer").is_none() {
                timers.sleep_ns(super::timer::IO_POLL_NS).await;
            }
            Ok(vec![f(input)])
        }
    }
}
