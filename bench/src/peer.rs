//! The side-by-side peer: the default latency job on timely-dataflow, under the same
//! open-loop schedule, for `rill-bench run latency --peer timely`.
//!
//! Each of the W workers (W = rill's core count, each pinned to the same CPU as rill's
//! executor of the same index when `pin` is set) generates the global sequence numbers
//! `w, w+W, w+2W, …` at the target rate from a shared start time, stamps each event with
//! the time it was due, and feeds it in; the dataflow is `exchange(key)` → a per-key count
//! in a `HashMap` (timely's `unary` with an `Exchange` pact) → a sink (`inspect`) that
//! records `now − due` into the worker's HdrHistogram; the histograms are merged after
//! the run. Keys are `stable_hash(seq) % keys`, as in rill. A worker with nothing due
//! for less than `SPIN` keeps stepping; longer, it parks until the next event is due or
//! data arrives (as rill's executors spin then park).
//!
//! Timely timestamps are nanoseconds of the schedule and every batch the generator emits
//! closes its epoch (as timely's own `openloop` example does): timely's input hands
//! records to the exchange and activates the operators only when an epoch closes, so a
//! coarser epoch would hold records back. The count does not wait for the frontier.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use rill_engine::keys::stable_hash;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Input, Inspect, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::machine::this_thread_cpu_s;
use crate::stats::{merge, new_histogram, MAX_LATENCY_NS};

/// Below this wait the worker keeps stepping instead of parking.
const SPIN: Duration = Duration::from_micros(200);

/// One generated event (as rill's `LatencyEvent`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PeerEvent {
    /// Global sequence number.
    pub seq: u64,
    /// Partitioning key.
    pub key: u64,
    /// When it was due, ns since the shared origin.
    pub due_ns: u64,
    /// False during warm-up.
    pub measure: bool,
    /// Per-key count, set by the count operator.
    pub count: u64,
}

/// The load, as rill's generator has it.
#[derive(Clone, Debug)]
pub struct PeerLoad {
    /// Events per second over all workers.
    pub rate_eps: u64,
    /// Length of the schedule, ms (including warm-up).
    pub duration_ms: u64,
    /// Warm-up, ms.
    pub warmup_ms: u64,
    /// Distinct keys.
    pub keys: u64,
    /// CPUs, one worker each.
    pub cpus: Vec<usize>,
    /// Pin worker i to `cpus[i]`.
    pub pin: bool,
}

/// One worker's results.
struct WorkerResult {
    latency: Histogram<u64>,
    sunk: u64,
    last_arrival_ns: u64,
    start_ns: u64,
    cpu_s: f64,
    pinned: bool,
}

/// What the peer measured.
pub struct PeerResult {
    /// All workers' latency merged (ns).
    pub latency: Histogram<u64>,
    /// Records that reached the sink, warm-up included.
    pub sunk: u64,
    /// Throughput over the measured window (warm-up to last arrival), events/s.
    pub throughput_eps: f64,
    /// CPU seconds by thread (`timely-N`) or process (`jvm`).
    pub cpu_s: Vec<(String, f64)>,
    /// The peer's own CPU total when it ran in a process of its own (`None`: in ours).
    pub process_cpu_s: Option<f64>,
    /// Wall time.
    pub wall: Duration,
    /// Whether every worker was pinned.
    pub pinned: bool,
    /// How long after the end of the schedule the last record reached the sink, ms.
    pub end_lag_ms: Option<f64>,
    /// What else the peer reports (version, checkpoints), for the report.
    pub details: std::collections::BTreeMap<String, String>,
}

/// Runs the peer under `load`.
pub fn run_timely(load: &PeerLoad) -> Result<PeerResult> {
    let workers = load.cpus.len().max(1);
    let events = (u128::from(load.rate_eps) * u128::from(load.duration_ms) / 1_000) as u64;
    let origin = Instant::now();
    let start = Arc::new(AtomicU64::new(0));
    let load2 = load.clone();
    let started = Instant::now();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers() as u64;
        let pinned = load2.pin
            && core_affinity::set_for_current(core_affinity::CoreId {
                id: load2.cpus[index],
            });
        let cpu0 = this_thread_cpu_s();
        let now_ns = move || origin.elapsed().as_nanos() as u64;
        let latency = Rc::new(RefCell::new(new_histogram()));
        let sunk = Rc::new(RefCell::new((0u64, 0u64)));
        let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<PeerEvent>>> =
            InputHandle::new();
        let probe = ProbeHandle::new();
        let (lat, sk) = (latency.clone(), sunk.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .unary(
                    Exchange::new(|e: &PeerEvent| e.key),
                    "count",
                    |_cap, _info| {
                        let mut counts: HashMap<u64, u64> = HashMap::new();
                        move |input, output| {
                            input.for_each(|cap, data| {
                                let mut session = output.session(&cap);
                                for mut e in data.drain(..) {
                                    let c = counts.entry(e.key).or_insert(0);
                                    *c += 1;
                                    e.count = *c;
                                    session.give(e);
                                }
                            });
                        }
                    },
                )
                .container::<Vec<PeerEvent>>()
                .inspect(move |e: &PeerEvent| {
                    let now = now_ns();
                    if e.measure {
                        lat.borrow_mut().saturating_record(
                            now.saturating_sub(e.due_ns).clamp(1, MAX_LATENCY_NS),
                        );
                    }
                    let mut s = sk.borrow_mut();
                    s.0 += 1;
                    s.1 = s.1.max(now);
                })
                .probe_with(&probe);
        });
        timely::synchronization::Barrier::new(worker).wait();
        // The first worker past the barrier sets the shared start (1 ms ahead).
        let _ = start.compare_exchange(0, now_ns() + 1_000_000, Ordering::SeqCst, Ordering::SeqCst);
        let start_ns = start.load(Ordering::SeqCst);
        let rate = u128::from(load2.rate_eps);
        let offset = |seq: u64| (u128::from(seq) * 1_000_000_000 / rate) as u64;
        let warmup_ns = load2.warmup_ms * 1_000_000;
        let mut next = index as u64;
        while next < events {
            let now = now_ns();
            let mut sent = false;
            while next < events && start_ns + offset(next) <= now {
                let off = offset(next);
                input.send(PeerEvent {
                    seq: next,
                    key: stable_hash(&next) % load2.keys.max(1),
                    due_ns: start_ns + off,
                    measure: off >= warmup_ns,
                    count: 0,
                });
                next += peers;
                sent = true;
            }
            if sent {
                // Timely hands a batch to the exchange (and wakes the operators) only when
                // the epoch closes, so every batch closes one: the time is ns since start.
                let epoch = now.saturating_sub(start_ns).max(*input.time() + 1);
                input.advance_to(epoch);
            }
            let wait = Duration::from_nanos((start_ns + offset(next)).saturating_sub(now_ns()));
            if next >= events || wait < SPIN {
                worker.step();
            } else {
                worker.step_or_park(Some(wait - SPIN / 2));
            }
        }
        drop(input);
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        let (n, last) = *sunk.borrow();
        let latency = latency.borrow().clone();
        WorkerResult {
            latency,
            sunk: n,
            last_arrival_ns: last,
            start_ns,
            cpu_s: this_thread_cpu_s() - cpu0,
            pinned,
        }
    })
    .map_err(|e| anyhow!("timely peer failed to start: {e}"))?;
    let results: Vec<WorkerResult> = guards
        .join()
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow!("a timely worker failed: {e}"))?;
    let wall = started.elapsed();
    let latency = merge(results.iter().map(|r| &r.latency));
    let start_ns = results.iter().map(|r| r.start_ns).max().unwrap_or(0);
    let last = results.iter().map(|r| r.last_arrival_ns).max().unwrap_or(0);
    let window_ns = last.saturating_sub(start_ns) as f64 - load.warmup_ms as f64 * 1e6;
    Ok(PeerResult {
        throughput_eps: if window_ns > 0.0 {
            latency.len() as f64 * 1e9 / window_ns
        } else {
            0.0
        },
        sunk: results.iter().map(|r| r.sunk).sum(),
        cpu_s: results
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("timely-{i}"), r.cpu_s))
            .collect(),
        process_cpu_s: None,
        pinned: results.iter().all(|r| r.pinned),
        end_lag_ms: Some(last.saturating_sub(start_ns) as f64 / 1e6 - load.duration_ms as f64),
        details: std::collections::BTreeMap::new(),
        latency,
        wall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_measures_every_scheduled_event() {
        let load = PeerLoad {
            rate_eps: 20_000,
            duration_ms: 300,
            warmup_ms: 100,
            keys: 100,
            cpus: rill_engine::config::available_cpus()
                .into_iter()
                .take(2)
                .collect(),
            pin: false,
        };
        let r = run_timely(&load).unwrap();
        assert_eq!(r.sunk, 6_000);
        assert_eq!(
            r.latency.len(),
            crate::report::expected_samples(20_000, 300, 100)
        );
    }
}
