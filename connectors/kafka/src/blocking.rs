//! A blocking client call run on its own thread, polled from a core.
//!
//! Owns: [`Blocking`], a call (a transaction's init or commit) started on a new thread
//! whose result the core polls; the thread wakes the waker the core left when done.
//!
//! Must not: be used per record (a thread per call: fine once per checkpoint).

use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

struct Slot<R> {
    result: Option<R>,
    waker: Option<Waker>,
}

/// A call in flight on a helper thread.
pub(crate) struct Blocking<R> {
    slot: Arc<Mutex<Slot<R>>>,
}

impl<R: Send + 'static> Blocking<R> {
    /// Starts `f` on a new thread.
    pub(crate) fn spawn(name: &str, f: impl FnOnce() -> R + Send + 'static) -> Self {
        let slot = Arc::new(Mutex::new(Slot {
            result: None,
            waker: None,
        }));
        let s = slot.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let r = f();
                let waker = {
                    let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                    g.result = Some(r);
                    g.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            })
            .expect("spawning a kafka helper thread");
        Self { slot }
    }

    /// The result once there, else `Pending` after leaving `waker` to be woken.
    pub(crate) fn poll(&self, waker: &Waker) -> Poll<R> {
        let mut g = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match g.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                g.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }
}
