//! Chained operators: what runs between two exchanges on one core. Each is a push-based
//! `Emit` that calls the next one directly (operator chaining: no queue, no copy). They
//! own no control logic beyond forwarding: combining the control items of several inputs
//! is `InputSet`'s job, used by `UnionJoin` here and by the exchange receiver.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::error::EngineError;
use crate::message::{Control, InputSet};

/// The receiving end of a chain link: records, in-band control items and end-of-stream.
pub(crate) trait Emit<T> {
    /// One record.
    fn data(&mut self, rec: T);
    /// A barrier or watermark, in order with the records around it.
    fn control(&mut self, c: Control);
    /// The input is done; called exactly once, last.
    fn end(&mut self);
}

/// A boxed link.
pub(crate) type BoxEmit<T> = Box<dyn Emit<T>>;

/// Where an operator's failure is parked until the shard loop sees it. Operators are
/// plain calls with no `Result` on the per-record path; the first failure wins and stops
/// the shard.
#[derive(Clone, Default)]
pub(crate) struct FailureSlot(Rc<RefCell<Option<EngineError>>>);

impl FailureSlot {
    /// Records `e` unless an earlier failure is already recorded.
    pub(crate) fn fail(&self, e: EngineError) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// Takes the recorded failure, if any.
    pub(crate) fn take(&self) -> Option<EngineError> {
        self.0.borrow_mut().take()
    }
}

/// Output handle given to user functions (`flat_map`, `process`, sources).
pub struct Out<'a, T> {
    down: &'a mut dyn Emit<T>,
}

impl<'a, T> Out<'a, T> {
    pub(crate) fn new(down: &'a mut dyn Emit<T>) -> Self {
        Self { down }
    }

    /// An output that hands every record to `f`'s function: how code outside the engine
    /// calls a partition's `poll` (to wrap a built-in source in a source of its own, or
    /// to test one). Control items (watermarks) a wrapped partition sends are dropped:
    /// put watermarks on the outer source.
    ///
    /// ```
    /// use rill_engine::dataflow::{EmitFn, Out};
    /// let mut got = Vec::new();
    /// let mut f = EmitFn(|x: u32| got.push(x));
    /// let mut out = Out::from_fn(&mut f);
    /// out.emit(1);
    /// out.emit(2);
    /// drop(out);
    /// drop(f);
    /// assert_eq!(got, [1, 2]);
    /// ```
    pub fn from_fn<F: FnMut(T)>(f: &'a mut EmitFn<F>) -> Self {
        Self { down: f }
    }

    /// Sends `rec` downstream.
    #[inline]
    pub fn emit(&mut self, rec: T) {
        self.down.data(rec);
    }

    /// Sends watermark `w` downstream, in order with the records: how a source that
    /// tracks event time itself (one generator per split, see
    /// [`SplitWatermarks`](super::watermarks::SplitWatermarks)) emits its watermarks.
    /// `Watermark::IDLE` marks the partition idle until its next watermark or record.
    /// Such a source is not also wrapped in `Watermarked` (both would emit).
    pub fn watermark(&mut self, w: crate::message::Watermark) {
        self.down.control(Control::Watermark(w));
    }

    /// Sends a control item downstream, in order with the records (engine-internal:
    /// watermark generators).
    pub(crate) fn control(&mut self, c: Control) {
        self.down.control(c);
    }

    /// The link behind this handle (for adapters that observe what passes).
    pub(crate) fn link(&mut self) -> &mut dyn Emit<T> {
        &mut *self.down
    }
}

/// A function that takes the records of an [`Out`] (see [`Out::from_fn`]).
pub struct EmitFn<F>(pub F);

impl<T, F: FnMut(T)> Emit<T> for EmitFn<F> {
    #[inline]
    fn data(&mut self, rec: T) {
        (self.0)(rec);
    }
    fn control(&mut self, _c: Control) {}
    fn end(&mut self) {}
}

/// Drops everything: the output of a stream nobody consumes.
pub(crate) struct Discard;

impl<T> Emit<T> for Discard {
    fn data(&mut self, _rec: T) {}
    fn control(&mut self, _c: Control) {}
    fn end(&mut self) {}
}

/// One stream read by several consumers: each gets every record (cloned for all but
/// the last).
pub(crate) struct FanOut<T> {
    pub(crate) outs: Vec<BoxEmit<T>>,
}

impl<T: Clone> Emit<T> for FanOut<T> {
    fn data(&mut self, rec: T) {
        let (last, rest) = self.outs.split_last_mut().expect("fan-out has consumers");
        for o in rest {
            o.data(rec.clone());
        }
        last.data(rec);
    }
    fn control(&mut self, c: Control) {
        self.outs.iter_mut().for_each(|o| o.control(c));
    }
    fn end(&mut self) {
        self.outs.iter_mut().for_each(|o| o.end());
    }
}

/// `map`.
pub(crate) struct MapOp<F, U> {
    pub(crate) f: F,
    pub(crate) down: BoxEmit<U>,
}

impl<T, U, F: FnMut(T) -> U> Emit<T> for MapOp<F, U> {
    #[inline]
    fn data(&mut self, rec: T) {
        self.down.data((self.f)(rec));
    }
    fn control(&mut self, c: Control) {
        self.down.control(c);
    }
    fn end(&mut self) {
        self.down.end();
    }
}

/// `filter`.
pub(crate) struct FilterOp<F, T> {
    pub(crate) f: F,
    pub(crate) down: BoxEmit<T>,
}

impl<T, F: FnMut(&T) -> bool> Emit<T> for FilterOp<F, T> {
    #[inline]
    fn data(&mut self, rec: T) {
        if (self.f)(&rec) {
            self.down.data(rec);
        }
    }
    fn control(&mut self, c: Control) {
        self.down.control(c);
    }
    fn end(&mut self) {
        self.down.end();
    }
}

/// `flat_map`: the function writes any number of records to an `Out`.
pub(crate) struct FlatMapOp<F, U> {
    pub(crate) f: F,
    pub(crate) down: BoxEmit<U>,
}

impl<T, U, F: FnMut(T, &mut Out<'_, U>)> Emit<T> for FlatMapOp<F, U> {
    #[inline]
    fn data(&mut self, rec: T) {
        let mut out = Out::new(&mut *self.down);
        (self.f)(rec, &mut out);
    }
    fn control(&mut self, c: Control) {
        self.down.control(c);
    }
    fn end(&mut self) {
        self.down.end();
    }
}

/// What an input of a union delivered while alignment held it back.
enum UnionHeld<T> {
    Data(T),
    Control(Control),
    End,
}

/// Most items held back per union input before the union reports itself blocked (the
/// drivers feeding it then stop).
const UNION_HELD_MAX: usize = 4096;

/// The shared half of a union: the combined input state and the downstream chain. In
/// exactly-once mode an input that delivered a barrier is held (queued, bounded) until
/// every input has, as at an exchange receiver.
pub(crate) struct UnionJoin<T> {
    inputs: InputSet,
    down: BoxEmit<T>,
    hold: bool,
    blocked: Vec<bool>,
    held: Vec<VecDeque<UnionHeld<T>>>,
}

impl<T> UnionJoin<T> {
    pub(crate) fn new(n: usize, down: BoxEmit<T>, hold: bool) -> Self {
        Self {
            inputs: InputSet::new(n),
            down,
            hold,
            blocked: vec![false; n],
            held: (0..n).map(|_| VecDeque::new()).collect(),
        }
    }

    fn data(&mut self, i: usize, rec: T) {
        if self.blocked[i] {
            self.held[i].push_back(UnionHeld::Data(rec));
        } else {
            self.down.data(rec);
        }
    }

    fn control(&mut self, i: usize, c: Control) {
        if self.blocked[i] {
            self.held[i].push_back(UnionHeld::Control(c));
            return;
        }
        match c {
            Control::Barrier(b) => match self.inputs.on_barrier(i, b) {
                Some(b) => self.release(Control::Barrier(b)),
                None if self.hold => self.blocked[i] = true,
                None => {}
            },
            Control::Watermark(w) => {
                if let Some(w) = self.inputs.on_watermark(i, w) {
                    self.down.control(Control::Watermark(w));
                }
            }
        }
    }

    fn end(&mut self, i: usize) {
        if self.blocked[i] {
            self.held[i].push_back(UnionHeld::End);
            return;
        }
        let f = self.inputs.on_end(i);
        if let Some(b) = f.barrier {
            self.release(Control::Barrier(b));
        }
        if let Some(w) = f.watermark {
            self.down.control(Control::Watermark(w));
        }
        if f.end {
            self.down.end();
        }
    }

    /// Forwards a completed barrier and replays what the inputs sent after it.
    fn release(&mut self, barrier: Control) {
        self.down.control(barrier);
        self.blocked.iter_mut().for_each(|b| *b = false);
        for i in 0..self.held.len() {
            while !self.blocked[i] {
                let Some(h) = self.held[i].pop_front() else {
                    break;
                };
                match h {
                    UnionHeld::Data(r) => self.down.data(r),
                    UnionHeld::Control(c) => self.control(i, c),
                    UnionHeld::End => self.end(i),
                }
            }
        }
    }
}

impl<T> crate::dataflow::exchange::Port for UnionJoin<T> {
    fn flush(&mut self, _now_ns: u64) -> bool {
        false
    }
    fn is_blocked(&self) -> bool {
        self.held.iter().any(|h| h.len() >= UNION_HELD_MAX)
    }
    fn can_progress(&self, _now_ns: u64) -> bool {
        false
    }
    fn is_drained(&self) -> bool {
        true
    }
    fn next_deadline(&self) -> Option<u64> {
        None
    }
}

/// One input of a union.
pub(crate) struct UnionInput<T> {
    pub(crate) index: usize,
    pub(crate) join: Rc<RefCell<UnionJoin<T>>>,
}

impl<T> Emit<T> for UnionInput<T> {
    #[inline]
    fn data(&mut self, rec: T) {
        self.join.borrow_mut().data(self.index, rec);
    }
    fn control(&mut self, c: Control) {
        self.join.borrow_mut().control(self.index, c);
    }
    fn end(&mut self) {
        self.join.borrow_mut().end(self.index);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A collecting `Emit` for unit tests.
    use super::*;

    /// Everything a chain delivered, in order.
    #[derive(Debug, PartialEq)]
    pub(crate) enum Seen<T> {
        Data(T),
        Control(Control),
        End,
    }

    /// Collects into a shared vector.
    pub(crate) struct Collect<T>(pub(crate) Rc<RefCell<Vec<Seen<T>>>>);

    impl<T> Emit<T> for Collect<T> {
        fn data(&mut self, rec: T) {
            self.0.borrow_mut().push(Seen::Data(rec));
        }
        fn control(&mut self, c: Control) {
            self.0.borrow_mut().push(Seen::Control(c));
        }
        fn end(&mut self) {
            self.0.borrow_mut().push(Seen::End);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Collect, Seen};
    use super::*;
    use crate::ids::CheckpointId;
    use crate::message::Barrier;

    #[test]
    fn chained_operators_call_each_other_in_order() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink: BoxEmit<i64> = Box::new(Collect(seen.clone()));
        let filter: BoxEmit<i64> = Box::new(FilterOp {
            f: |x: &i64| x % 2 == 0,
            down: sink,
        });
        let mut chain = FlatMapOp {
            f: |x: i64, out: &mut Out<'_, i64>| {
                out.emit(x);
                out.emit(x + 1);
            },
            down: Box::new(MapOp {
                f: |x: i64| x * 10,
                down: filter,
            }) as BoxEmit<i64>,
        };
        chain.data(1);
        chain.control(Control::Barrier(Barrier::new(CheckpointId(1))));
        chain.data(2);
        chain.end();
        assert_eq!(
            *seen.borrow(),
            vec![
                Seen::Data(10),
                Seen::Data(20),
                Seen::Control(Control::Barrier(Barrier::new(CheckpointId(1)))),
                Seen::Data(20),
                Seen::Data(30),
                Seen::End
            ]
        );
    }

    #[test]
    fn union_ends_once_after_both_inputs_and_aligns_barriers() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let join = Rc::new(RefCell::new(UnionJoin::new(
            2,
            Box::new(Collect::<u32>(seen.clone())) as BoxEmit<u32>,
            false,
        )));
        let mut a = UnionInput {
            index: 0,
            join: join.clone(),
        };
        let mut b = UnionInput { index: 1, join };
        let bar = Control::Barrier(Barrier::new(CheckpointId(3)));
        a.data(1);
        a.control(bar);
        b.data(2);
        b.control(bar);
        a.end();
        b.data(3);
        b.end();
        assert_eq!(
            *seen.borrow(),
            vec![
                Seen::Data(1),
                Seen::Data(2),
                Seen::Control(bar),
                Seen::Data(3),
                Seen::End
            ]
        );
    }

    #[test]
    fn exactly_once_union_holds_an_input_after_its_barrier_until_both_delivered_it() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let join = Rc::new(RefCell::new(UnionJoin::new(
            2,
            Box::new(Collect::<u32>(seen.clone())) as BoxEmit<u32>,
            true,
        )));
        let mut a = UnionInput {
            index: 0,
            join: join.clone(),
        };
        let mut b = UnionInput {
            index: 1,
            join: join.clone(),
        };
        let bar = Control::Barrier(Barrier::new(CheckpointId(1)));
        a.data(1);
        a.control(bar);
        a.data(2); // after a's barrier: held
        b.data(3);
        a.end(); // held too, in order
        assert!(!crate::dataflow::exchange::Port::is_blocked(
            &*join.borrow()
        ));
        b.control(bar);
        b.data(4);
        b.end();
        assert_eq!(
            *seen.borrow(),
            vec![
                Seen::Data(1),
                Seen::Data(3),
                Seen::Control(bar),
                Seen::Data(2),
                Seen::Data(4),
                Seen::End
            ]
        );
    }

    #[test]
    fn fan_out_gives_every_consumer_every_record() {
        let a = Rc::new(RefCell::new(Vec::new()));
        let b = Rc::new(RefCell::new(Vec::new()));
        let mut f = FanOut {
            outs: vec![
                Box::new(Collect(a.clone())) as BoxEmit<String>,
                Box::new(Collect(b.clone())),
            ],
        };
        f.data("x".to_string());
        f.end();
        assert_eq!(*a.borrow(), vec![Seen::Data("x".to_string()), Seen::End]);
        assert_eq!(*a.borrow(), *b.borrow());
    }
}
