//! The per-core loop. One task on each pinned executor polls that core's drivers
//! (source partitions, exchange receivers), flushes its ports, and — once nothing moved
//! for as long as the spin governor allows (`spin.rs`: the full `spin_before_park` on a
//! CPU of its own, nothing while the CPU is contended) — parks on the core's doorbell
//! until a producer rings, a port's flush deadline, a timer or a source's next due time
//! (see `park.rs` for how). While busy it never parks and never yields.

use super::spin::SpinGovernor;
use super::{park, ShardArgs, StopHandle};
use crate::clock::Clock;
use std::cell::RefCell;
use std::rc::Rc;

use crate::checkpoint::core::CoreCheckpoints;
use crate::checkpoint::runtime::CoreRuntime;
use crate::dataflow::instantiate::{CkptCtx, Instantiator, Step};
use crate::error::{EngineError, Result};
use crate::ids::CoreId;
use crate::metrics::{CheckpointGauges, MetricsHandle, ShardReport};
use crate::monitor::probe::Marker;
use crate::monitor::sched::OwnSchedStat;
use std::sync::atomic::Ordering;

/// Aborts the whole job if this core's shard unwinds (a panic in user code), so that the
/// other cores do not wait forever for its end-of-stream.
struct AbortOnPanic(StopHandle);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// Runs one core's shard to completion.
pub(crate) async fn run(mut args: ShardArgs) -> Result<ShardReport> {
    let metrics = MetricsHandle::default();
    let shared = args.shared.clone();
    let _abort_on_panic = AbortOnPanic(shared.handle.clone());
    let core = args.spec.cores[args.index].clone();
    let core_ids: Vec<CoreId> = args.spec.cores.iter().map(|c| c.cpu).collect();
    let probe = shared.probes[args.index].clone();
    probe.register_thread();
    let publish_ns = shared.publish_ns;
    let traced = shared.trace_operators.then(|| probe.clone());
    let ckpt = args.ckpt.take();
    let ctx = ckpt.as_ref().map(|c| {
        let mut cc = CoreCheckpoints::new(
            args.index,
            c.config.mode,
            c.config.incremental,
            c.config.max_chain,
        );
        cc.archive_slice_ns = c.config.archive_slice_us * 1_000;
        cc.unaligned_after_ns = c
            .config
            .unaligned
            .then_some(c.config.aligned_timeout_ms * 1_000_000);
        CkptCtx {
            core: Rc::new(RefCell::new(cc)),
            restore: c.restore.clone(),
        }
    });
    let parts = match Instantiator::run(args.instantiate_args(
        metrics.clone(),
        ctx.clone(),
        &core_ids,
        traced,
    )) {
        Ok(p) => p,
        Err(e) => {
            shared.handle.abort();
            return Err(e);
        }
    };
    let mut rt = match (ckpt, ctx) {
        (Some(c), Some(ctx)) => {
            match CoreRuntime::new(
                ctx.core,
                &c.dir,
                core.cpu.0 as u32,
                core.config.io_uring_depth as u32,
                c.config.log_config(),
                c.link,
                shared.clock,
            ) {
                Ok(rt) => Some(rt),
                Err(e) => {
                    shared.handle.abort();
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let (mut drivers, ports, failure) = (parts.drivers, parts.ports, parts.failure);
    let (driver_markers, port_markers) = (parts.driver_markers, parts.port_markers);
    let mut next_publish_ns = 0u64;
    let doorbell = shared.handle.doorbells[args.index].clone();
    let clock = shared.clock;
    let abort = &shared.handle.abort;
    let waker = park::thread_waker();
    park::tighten_timer_slack();
    if core.config.sched_slice_us > 0 {
        if let Err(e) = park::request_slice(core.config.sched_slice_us) {
            tracing::warn!(
                "{}: sched_slice_us = {}: the kernel refused the slice ({e}); the core \
                 runs with the default slice",
                core.file.display(),
                core.config.sched_slice_us
            );
        }
    }
    let mut sched = if core.config.spin_adaptive {
        OwnSchedStat::open()
    } else {
        None
    };
    let mut spin = SpinGovernor::new(core.config.spin_before_park_us * 1_000, sched.is_some());

    // Start together: the last core to be ready sets the start time.
    if shared.ready.fetch_add(1, Ordering::SeqCst) + 1 == shared.cores {
        let start = clock.now_ns() + 1_000_000;
        shared.start_ns.store(start, Ordering::SeqCst);
    }
    let start_ns = loop {
        let s = shared.start_ns.load(Ordering::SeqCst);
        if s != 0 {
            break s;
        }
        if abort.load(Ordering::SeqCst) {
            return Err(EngineError::Stopped);
        }
        std::thread::yield_now();
    };
    for d in &mut drivers {
        d.start(start_ns);
    }

    let mut finished = vec![false; drivers.len()];
    // Since when the core found no work (an idle gap, parks included), and since when
    // it has been spinning (reset by a park).
    let mut idle_since: Option<u64> = None;
    let mut spin_since: Option<u64> = None;
    loop {
        if abort.load(Ordering::Relaxed) {
            return Err(EngineError::Stopped);
        }
        // A stop requested after this point must not be slept through.
        let stopping = shared.handle.is_stopped();
        let now = clock.now_ns();
        probe.round(now);
        let mut progress = false;
        let mut done = true;
        let mut wake_at: Option<u64> = None;
        let mut blocked = 0u64;
        for ((d, was_done), m) in drivers
            .iter_mut()
            .zip(finished.iter_mut())
            .zip(&driver_markers)
        {
            probe.set(*m);
            match d.step(now) {
                Step::Progress => {
                    progress = true;
                    done = false;
                }
                Step::Idle(t) => {
                    done = false;
                    wake_at = earliest(wake_at, t);
                }
                Step::Blocked => {
                    done = false;
                    blocked += 1;
                }
                Step::Done => {
                    // A driver that just finished ended its chain by direct calls:
                    // drivers stepped before it in this round may have finished too, so
                    // look once more before concluding anything (or parking).
                    if !*was_done {
                        *was_done = true;
                        progress = true;
                    }
                }
            }
        }
        if blocked > 0 {
            metrics.add("backpressure_steps", blocked);
        }
        if let Some(e) = failure.take() {
            shared.handle.abort();
            return Err(e);
        }
        probe.set(Marker::CHECKPOINT);
        if let Some(rt) = &mut rt {
            match rt.step(&mut drivers) {
                Ok(p) => progress |= p,
                Err(e) => {
                    shared.handle.abort();
                    return Err(e);
                }
            }
            if !rt.may_end() {
                done = false;
            }
            wake_at = earliest(wake_at, rt.wake_at(clock.now_ns()));
        }
        let now = clock.now_ns();
        for (p, m) in ports.iter().zip(&port_markers) {
            probe.set(*m);
            progress |= p.borrow_mut().flush(now);
        }
        // Drained is asked only once every port has flushed: a port's flush can hand
        // work to a port flushed before it in this round (an async operator's last
        // results and its end reach a sink port whose file is still being finished),
        // and ending the shard then lost that sink's output.
        for p in &ports {
            let p = p.borrow();
            if !p.is_drained() {
                done = false;
                wake_at = earliest(wake_at, p.next_deadline());
            }
        }
        // A port fails while it flushes (an async request failing or timing out) and then
        // counts as drained: look at the failure before `done` can end the shard with Ok,
        // which lost the failure and the request's output with exit 0.
        if let Some(e) = failure.take() {
            shared.handle.abort();
            return Err(e);
        }
        probe.set(Marker::LOOP);
        if let Some(every) = publish_ns {
            if now >= next_publish_ns {
                next_publish_ns = now + every;
                let ckpt = rt.as_ref().and_then(|r| r.history_so_far());
                probe.publish(|| {
                    let mut snap = metrics.snapshot(now);
                    snap.checkpoints = ckpt.map(CheckpointGauges::of);
                    snap
                });
            }
        }
        if done {
            break;
        }
        if spin.wants_sample(now) {
            if let Some((_, delay)) = sched.as_mut().and_then(|s| s.read()) {
                if spin.sample(now, delay) {
                    metrics.add("spin_holds", 1);
                }
            }
        }
        if progress {
            if let Some(since) = idle_since.take() {
                spin.idle_ended(now.saturating_sub(since));
            }
            spin_since = None;
            continue;
        }
        idle_since.get_or_insert(now);
        let since = *spin_since.get_or_insert(now);
        if now - since < spin.spin_ns(now) {
            std::hint::spin_loop();
            continue;
        }
        metrics.add("spin_ns", now - since);
        // Park: arm, re-check everything a producer or the clock could have changed,
        // then sleep until rung or until the next deadline.
        doorbell.arm();
        let now = clock.now_ns();
        let work_waiting = drivers.iter().any(|d| d.has_input())
            || rt.as_ref().is_some_and(|r| r.has_input())
            || ports.iter().any(|p| p.borrow().can_progress(now))
            || wake_at.is_some_and(|t| t <= now)
            || abort.load(Ordering::SeqCst)
            || shared.handle.is_stopped() != stopping;
        if work_waiting {
            doorbell.disarm();
        } else {
            probe.parked();
            metrics.add("parks", 1);
            park::park(&doorbell, &waker, &clock, wake_at);
            doorbell.disarm();
        }
        spin_since = None;
    }
    probe.parked();
    let mut report = metrics.report(core.cpu);
    if let Some(rt) = &mut rt {
        report.checkpoints = rt.history();
    }
    Ok(report)
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
