//! Async IO without a thread pool: an operator whose per-record work is a future polled
//! by the core that owns the partition (Flink's `AsyncDataStream`, but on the core's own
//! completion queues and timers). Concurrency is the number of requests in flight,
//! bounded by the operator's capacity; when full the operator reports itself blocked to
//! the drivers feeding it (backpressure) while completions, timeouts, retries, barriers
//! and watermarks keep being handled.
//!
//! - [`op`]: the operator (ordering, capacity, timeout policy, retry, breaker, snapshot).
//! - [`policy`]: pure retry and circuit-breaker decisions.
//! - [`timer`]: per-core timers on the job clock and the `Sleep` future.
//! - [`lookup`]: a simulated lookup with a configured latency distribution.
//! - [`service`]: the lookup `[lookup]` configures (simulated, or Redis on the core's
//!   io_uring).
//!
//! Ordering: ordered mode emits in input order. Unordered mode emits results as they
//! complete but in Flink's segments: a result leaves after every watermark its input
//! followed and before every watermark its input preceded (a watermark waits for the
//! results before it; results after it wait for it).
//!
//! Checkpoints: at a barrier the operator does not wait (as Flink's `AsyncWaitOperator`).
//! It archives its pending sequence — the inputs of every request whose result has not
//! been emitted yet (in flight, completed but held for ordering, or still waiting for
//! capacity) and the watermarks not yet forwarded among them, in input order — and
//! forwards the barrier at once. So a barrier overtakes exactly what it archives: those
//! results and watermarks follow it downstream, in their segments, and a restore
//! replays the same sequence before anything else (inputs re-issued, watermarks back in
//! place), so downstream sees after the barrier what it saw before the failure. Nothing
//! that came after a barrier is archived with it. The one exception is a barrier that
//! reaches the operator after every source on its core has finished (the final
//! checkpoint of a bounded or stopped job; a core without sources counts as finished, so
//! there every barrier waits): it waits until every earlier result and watermark has
//! been emitted, which keeps the last results inside the last checkpoint, and archives
//! nothing. Restored inputs go to the partition with the same index (modulo the
//! parallelism): a restore at another parallelism re-issues every input once, but not
//! necessarily on the partition that owns its key; when it merges several old
//! partitions, their inputs come first and then only the highest of their watermarks.

#[doc(hidden)]
pub mod bench;
pub mod lookup;
pub(crate) mod op;
pub mod policy;
pub mod redis;
pub mod service;
#[cfg(test)]
mod tests;
pub mod timer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use policy::{BreakerConfig, RetryStrategy};
pub use timer::{ManualClock, Sleep, Timers};

/// Whether results leave in input order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncMode {
    /// Results leave in input order (`orderedWait`).
    Ordered,
    /// Results leave as they complete, but never across a watermark (`unorderedWait`).
    Unordered,
}

/// How many requests may be in flight at once (results held for ordering count too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// A fixed bound.
    Fixed(usize),
    /// Sized from the observed arrival rate λ and request latency t (Little's law,
    /// N = λ·t, with 50% headroom), within `min ..= max`, re-evaluated every 100 ms.
    Auto {
        /// Lower bound.
        min: usize,
        /// Upper bound.
        max: usize,
    },
}

/// Why an attempt failed.
#[derive(Debug)]
pub enum AsyncError {
    /// An IO error talking to the service.
    Io(std::io::Error),
    /// The service answered with an error.
    Service(String),
}

impl fmt::Display for AsyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsyncError::Io(e) => write!(f, "io: {e}"),
            AsyncError::Service(m) => write!(f, "service error: {m}"),
        }
    }
}

/// What one attempt returns.
pub type AsyncResult<U> = Result<Vec<U>, AsyncError>;
/// A boxed attempt.
pub type BoxFuture<U> = Pin<Box<dyn Future<Output = AsyncResult<U>>>>;

/// Makes the fallback records of a timed-out input.
pub type FallbackFn<T, U> = Arc<dyn Fn(&T) -> Vec<U> + Send + Sync>;
/// Decides whether a result is retried.
pub type ResultPredicate<U> = Arc<dyn Fn(&[U]) -> bool + Send + Sync>;
/// Decides whether an error is retried.
pub type ErrorPredicate = Arc<dyn Fn(&AsyncError) -> bool + Send + Sync>;

/// What happens to a request whose timeout passed (or that the open breaker failed
/// fast).
pub enum OnTimeout<T, U> {
    /// Fail the job with a message naming the operator, the request and the timeout.
    Fail,
    /// Drop the request, counted in `async_dropped`.
    Drop,
    /// Emit what the function returns for the input instead.
    Fallback(FallbackFn<T, U>),
}

impl<T, U> Clone for OnTimeout<T, U> {
    fn clone(&self) -> Self {
        match self {
            OnTimeout::Fail => OnTimeout::Fail,
            OnTimeout::Drop => OnTimeout::Drop,
            OnTimeout::Fallback(f) => OnTimeout::Fallback(f.clone()),
        }
    }
}

/// Settings of one async operator. `AsyncOptions::new()` gives Flink's defaults as the
/// seed uses them: ordered, capacity 100, timeout 10 s, fail on timeout, no retry.
pub struct AsyncOptions<T, U> {
    /// Ordered or unordered.
    pub mode: AsyncMode,
    /// The in-flight bound.
    pub capacity: Capacity,
    /// Covers every attempt of a request.
    pub timeout: Duration,
    /// The timeout handler's policy.
    pub on_timeout: OnTimeout<T, U>,
    /// How failed attempts are retried.
    pub retry: RetryStrategy,
    /// Which errors are retried (default: all).
    pub retry_on_error: ErrorPredicate,
    /// Which results are retried (default: none; e.g. `|r| r.is_empty()`).
    pub retry_on_result: ResultPredicate<U>,
    /// A circuit breaker per partition.
    pub breaker: Option<BreakerConfig>,
}

impl<T, U> Clone for AsyncOptions<T, U> {
    fn clone(&self) -> Self {
        Self {
            mode: self.mode,
            capacity: self.capacity,
            timeout: self.timeout,
            on_timeout: self.on_timeout.clone(),
            retry: self.retry,
            retry_on_error: self.retry_on_error.clone(),
            retry_on_result: self.retry_on_result.clone(),
            breaker: self.breaker,
        }
    }
}

impl<T, U> Default for AsyncOptions<T, U> {
    fn default() -> Self {
        Self {
            mode: AsyncMode::Ordered,
            capacity: Capacity::Fixed(100),
            timeout: Duration::from_secs(10),
            on_timeout: OnTimeout::Fail,
            retry: RetryStrategy::None,
            retry_on_error: Arc::new(|_| true),
            retry_on_result: Arc::new(|_| false),
            breaker: None,
        }
    }
}

impl<T, U> AsyncOptions<T, U> {
    /// The defaults (see the type).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the mode.
    pub fn mode(mut self, m: AsyncMode) -> Self {
        self.mode = m;
        self
    }
    /// Sets the capacity.
    pub fn capacity(mut self, c: Capacity) -> Self {
        self.capacity = c;
        self
    }
    /// Sets the timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Sets the timeout policy.
    pub fn on_timeout(mut self, p: OnTimeout<T, U>) -> Self {
        self.on_timeout = p;
        self
    }
    /// Sets the retry strategy.
    pub fn retry(mut self, r: RetryStrategy) -> Self {
        self.retry = r;
        self
    }
    /// Retries results for which `f` is true.
    pub fn retry_on_result(mut self, f: impl Fn(&[U]) -> bool + Send + Sync + 'static) -> Self {
        self.retry_on_result = Arc::new(f);
        self
    }
    /// Retries only errors for which `f` is true.
    pub fn retry_on_error(
        mut self,
        f: impl Fn(&AsyncError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_on_error = Arc::new(f);
        self
    }
    /// Adds a circuit breaker per partition.
    pub fn breaker(mut self, b: BreakerConfig) -> Self {
        self.breaker = Some(b);
        self
    }
}

/// What an async function's factory gets on its partition's core: the core's timers
/// (and through them the job clock).
#[derive(Clone)]
pub struct AsyncCtx {
    /// The core's timers.
    pub timers: Timers,
    /// The partition.
    pub partition: u32,
}
