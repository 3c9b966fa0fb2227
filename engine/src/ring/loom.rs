//! The ring's synchronization primitives, swapped for loom's with the `loom` feature.
//!
//! Owns: the one place that decides whether `Arc`, the atomics, `UnsafeCell` and `yield_now`
//! come from `std` or from loom, so the ring and doorbell code is model-checked unchanged
//! (the same shape as tokio's `src/loom/`). Must not: contain logic of its own.
//!
//! `UnsafeCell` follows loom's closure API (`with` / `with_mut`) in both builds; under
//! `std` the closures compile to a plain pointer access.

#[cfg(not(feature = "loom"))]
mod imp {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
    pub(crate) use std::sync::Arc;
    pub(crate) use std::thread::yield_now;

    /// `std::cell::UnsafeCell` behind loom's closure-based API.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Immutable access through a raw pointer.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Mutable access through a raw pointer.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(feature = "loom")]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread::yield_now;
}

pub(crate) use imp::*;
