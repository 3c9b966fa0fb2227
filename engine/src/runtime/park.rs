//! Parking an idle core. The shard is its executor's only long-running task, and when
//! it has nothing to do it blocks its thread on a futex until a producer rings the
//! core's doorbell or a deadline passes (a source's next due time, a batch's flush
//! deadline).
//!
//! Why not await inside glommio: on 2-vCPU VMs like the CI machine, glommio 0.9 was seen
//! to park its executor in `io_uring_enter` with the shard already woken (by a foreign
//! `Waker`, by its own yield at a preemption point, or by a timer), leaving the core
//! asleep for good — a rare hang under CPU contention (see also glommio issues 326 and
//! 547 about timers in VMs). A futex park with the thread's timer slack at 1 ns is
//! reliable and wakes within microseconds. The cost is that the executor does not poll
//! its io_uring while the shard is parked, so later work that puts IO on the executor
//! must bound the park (`deadline`) while IO is in flight.
#![allow(unsafe_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::ring::Doorbell;

/// Wakes a parked thread.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the calling thread.
pub(crate) fn thread_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(std::thread::current())))
}

/// Sets the calling thread's timer slack to 1 ns so timed parks are punctual.
pub(crate) fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this thread's timer
    // slack; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

/// `struct sched_attr` of `sched_setattr(2)` (its first version, 48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Asks the scheduler to run the calling thread in slices of `slice_us` (Linux 6.12+
/// EEVDF: `sched_runtime` of a `SCHED_OTHER` thread, clamped by the kernel to 100 us ..=
/// 100 ms). A thread with a shorter slice gets an earlier virtual deadline, so when it
/// wakes with work (a ring, a timer, a due time) it may preempt a CPU-bound neighbour
/// sooner instead of waiting for the neighbour's slice to end (measured: it depends on
/// the neighbours, see `CoreConfig::sched_slice_us`). It gets no more CPU than before:
/// its share is set by its weight (nice), not its slice. The thread stays
/// `SCHED_OTHER` at its nice value; no privilege is needed. Older kernels accept and
/// ignore it.
pub(crate) fn request_slice(slice_us: u64) -> std::io::Result<()> {
    // SAFETY: getpriority takes two integers and reads nothing from memory; errno is
    // cleared first because -1 is also a valid nice value.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: nice,
        sched_runtime: slice_us * 1_000,
        ..SchedAttr::default()
    };
    // SAFETY: `attr` is a valid, initialised sched_attr of the size it declares and
    // outlives the call; pid 0 is the calling thread; flags 0.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Blocks until the doorbell is rung or `deadline_ns` (on `clock`) passes. Call only
/// after `doorbell.arm()` and an empty re-check; `waker` must be this thread's.
pub(crate) fn park(
    doorbell: &Doorbell,
    waker: &Waker,
    clock: &MonotonicClock,
    deadline_ns: Option<u64>,
) {
    let mut wait = pin!(doorbell.wait());
    let mut cx = Context::from_waker(waker);
    loop {
        if wait.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        match deadline_ns {
            Some(t) => {
                let now = clock.now_ns();
                if now >= t {
                    return;
                }
                std::thread::park_timeout(Duration::from_nanos(t - now));
            }
            None => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_ring_from_another_thread_ends_the_park() {
        let bell = Arc::new(Doorbell::new());
        let clock = MonotonicClock::new(Instant::now());
        let waker = thread_waker();
        for _ in 0..200 {
            bell.arm();
            let b = bell.clone();
            let t = std::thread::spawn(move || b.notify());
            park(&bell, &waker, &clock, None);
            bell.disarm();
            t.join().unwrap();
        }
    }

    #[test]
    fn a_slice_request_leaves_the_thread_at_its_policy_and_nice() {
        std::thread::spawn(|| {
            // SAFETY: getpriority/sched_getscheduler read nothing from memory.
            let before = unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            };
            request_slice(100).expect("sched_setattr");
            let after = unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            };
            assert_eq!(before, after);
            assert_eq!(after.0, libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_deadline_ends_the_park() {
        let bell = Doorbell::new();
        let clock = MonotonicClock::new(Instant::now());
        bell.arm();
        let deadline = clock.now_ns() + 2_000_000;
        park(&bell, &thread_waker(), &clock, Some(deadline));
        assert!(clock.now_ns() >= deadline);
    }
}
