//! Chained operators: what runs between two exchanges on one core. Each is a push-based
//! `Emit` that calls the next one directly (operator chaining: no queue, no copy). They
//! own no control logic beyond forwarding: combining the control items of several inputs
//! is `InputSet`'s job, used by `UnionJoin` here and by the exchange receiver.

use std::cell::RefCell;
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

    /// Sends `rec` downstream.
    #[inline]
    pub fn emit(&mut self, rec: T) {
        self.down.data(rec);
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

/// The shared half of a union: the combined input state and the downstream chain.
pub(crate) struct UnionJoin<T> {
    pub(crate) inputs: InputSet,
    pub(crate) down: BoxEmit<T>,
}

/// One input of a union.
pub(crate) struct UnionInput<T> {
    pub(crate) index: usize,
    pub(crate) join: Rc<RefCell<UnionJoin<T>>>,
}

impl<T> Emit<T> for UnionInput<T> {
    #[inline]
    fn data(&mut self, rec: T) {
        self.join.borrow_mut().down.data(rec);
    }
    fn control(&mut self, c: Control) {
        let mut j = self.join.borrow_mut();
        let forward = match c {
            Control::Barrier(b) => j.inputs.on_barrier(self.index, b).map(Control::Barrier),
            Control::Watermark(w) => j.inputs.on_watermark(self.index, w).map(Control::Watermark),
        };
        if let Some(c) = forward {
            j.down.control(c);
        }
    }
    fn end(&mut self) {
        let mut j = self.join.borrow_mut();
        let f = j.inputs.on_end(self.index);
        for c in f.controls() {
            j.down.control(c);
        }
        if f.end {
            j.down.end();
        }
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
        chain.control(Control::Barrier(Barrier {
            id: CheckpointId(1),
        }));
        chain.data(2);
        chain.end();
        assert_eq!(
            *seen.borrow(),
            vec![
                Seen::Data(10),
                Seen::Data(20),
                Seen::Control(Control::Barrier(Barrier {
                    id: CheckpointId(1)
                })),
                Seen::Data(20),
                Seen::Data(30),
                Seen::End
            ]
        );
    }

    #[test]
    fn union_ends_once_after_both_inputs_and_aligns_barriers() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let join = Rc::new(RefCell::new(UnionJoin {
            inputs: InputSet::new(2),
            down: Box::new(Collect::<u32>(seen.clone())) as BoxEmit<u32>,
        }));
        let mut a = UnionInput {
            index: 0,
            join: join.clone(),
        };
        let mut b = UnionInput { index: 1, join };
        let bar = Control::Barrier(Barrier {
            id: CheckpointId(3),
        });
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
