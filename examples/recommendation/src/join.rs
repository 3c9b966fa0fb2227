//! `join_all`: one future that waits for several, all in flight together. A
//! recommendation looks up every item of a user's history at once with it (the engine
//! polls one future per request; the futures inside it are this crate's business).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Waits for all of `futures`, polling every unfinished one whenever woken (so that
/// they are in flight together); their outputs in order.
pub fn join_all<F: Future + Unpin>(futures: Vec<F>) -> JoinAll<F> {
    JoinAll {
        outputs: futures.iter().map(|_| None).collect(),
        futures: futures.into_iter().map(Some).collect(),
    }
}

/// The future of [`join_all`].
pub struct JoinAll<F: Future> {
    futures: Vec<Option<F>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future + Unpin> Future for JoinAll<F>
where
    F::Output: Unpin,
{
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut pending = false;
        for (slot, out) in this.futures.iter_mut().zip(&mut this.outputs) {
            if let Some(f) = slot {
                match Pin::new(f).poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(
            this.outputs
                .iter_mut()
                .map(|o| o.take().expect("JoinAll polled after it completed"))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_all_polls_every_future_until_all_are_done_and_keeps_their_order() {
        use std::cell::Cell;
        use std::rc::Rc;
        use std::task::Wake;

        struct Noop;
        impl Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        /// Ready once the shared counter reaches `at`; counts its polls.
        struct Gate {
            now: Rc<Cell<u32>>,
            at: u32,
            polls: Rc<Cell<u32>>,
        }
        impl Future for Gate {
            type Output = u32;
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
                self.polls.set(self.polls.get() + 1);
                if self.now.get() >= self.at {
                    Poll::Ready(self.at)
                } else {
                    Poll::Pending
                }
            }
        }
        let now = Rc::new(Cell::new(0));
        let polls = Rc::new(Cell::new(0));
        let gates = [2, 0, 1]
            .map(|at| Gate {
                now: now.clone(),
                at,
                polls: polls.clone(),
            })
            .into_iter()
            .collect();
        let mut j = join_all(gates);
        let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        // The first poll starts all three (they are in flight together).
        assert!(Pin::new(&mut j).poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 3);
        now.set(1);
        assert!(Pin::new(&mut j).poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 5, "the finished one is not polled again");
        now.set(2);
        assert_eq!(Pin::new(&mut j).poll(&mut cx), Poll::Ready(vec![2, 0, 1]));
    }
}
