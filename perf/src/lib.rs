//! rill-perf: microbenchmarks live in `benches/` and measurement binaries in `src/bin/`;
//! this library holds what they share (pinned helper threads, the ring echo loop) and
//! the tuning advisor of `rill-perf tune` ([`tune`]).

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rill_engine::ring::{Consumer, Producer};

pub mod tune;

/// A thread pinned to `core` running `body(stop)`; stopped and joined on drop.
pub struct Pinned {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Pinned {
    /// Spawns `body` on a thread pinned to `core`; `body` should return once the flag
    /// it is given becomes true.
    pub fn spawn(
        core: core_affinity::CoreId,
        body: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            core_affinity::set_for_current(core);
            body(&thread_stop);
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            // A panic in the helper thread already printed its message.
            let _ = handle.join();
        }
    }
}

/// Sends every value received on `rx` straight back on `tx` until `stop` is set (the
/// far side of a ring ping-pong).
pub fn echo(mut rx: Consumer<u64>, mut tx: Producer<u64>, stop: &AtomicBool) {
    let mut idle = 0u32;
    loop {
        match rx.try_pop() {
            Some(v) => {
                tx.try_push(v).expect("pong ring has room");
                idle = 0;
            }
            None => {
                idle = idle.wrapping_add(1);
                if idle % 1024 == 0 && stop.load(Ordering::Relaxed) {
                    return;
                }
                spin_loop();
            }
        }
    }
}

/// The far side of a raw shared-cache-line ping-pong: turns every odd value written to
/// `line` into the next even one, until `stop` is set.
pub fn echo_line(line: &AtomicU64, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let v = line.load(Ordering::Acquire);
        if v % 2 == 1 {
            line.store(v + 1, Ordering::Release);
        } else {
            spin_loop();
        }
    }
}

/// One ring ping-pong: sends `i` and spins until the echo of it comes back.
#[inline]
pub fn round_trip(ping: &mut Producer<u64>, pong: &mut Consumer<u64>, i: u64) {
    ping.try_push(i).expect("ping ring has room");
    loop {
        if let Some(v) = pong.try_pop() {
            assert_eq!(v, i, "the echo returns what was sent");
            return;
        }
        spin_loop();
    }
}
