//! What travels on a ring between cores and along a chain inside one: data batches and,
//! in-band with them, barriers, watermarks and end-of-stream. Barriers are data: they
//! stay ordered with the records around them because they ride the same channel.
//! `InputSet` is the one place that combines the control items of several inputs
//! (end-of-stream counting, watermark minimum, barrier arrival); operators never do.

use crate::ids::CheckpointId;

/// A checkpoint barrier, injected by the sources and carried in-band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    /// The checkpoint this barrier starts.
    pub id: CheckpointId,
}

/// An event-time watermark: no record with an event time at or below `0` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watermark(pub u64);

/// One item on a ring.
#[derive(Debug)]
pub enum Message<T> {
    /// A batch of records.
    Data(Vec<T>),
    /// A checkpoint barrier.
    Barrier(Barrier),
    /// An event-time watermark.
    Watermark(Watermark),
    /// The producer will send nothing more.
    End,
}

/// A control item passed along a chain between operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// A checkpoint barrier.
    Barrier(Barrier),
    /// An event-time watermark.
    Watermark(Watermark),
}

/// Per-input progress of a node with several inputs, and the decisions it implies.
///
/// Every decision is a pure function of what each input delivered, so the rules are unit
/// tested here and shared by every multi-input point (unions, the receiving side of an
/// exchange).
#[derive(Debug, Clone)]
pub struct InputSet {
    ended: Vec<bool>,
    open: usize,
    watermarks: Vec<Option<Watermark>>,
    emitted_watermark: Option<Watermark>,
    barrier_seen: Vec<Option<CheckpointId>>,
}

impl InputSet {
    /// Tracks `inputs` inputs (at least one).
    pub fn new(inputs: usize) -> Self {
        assert!(inputs >= 1, "a node has at least one input");
        Self {
            ended: vec![false; inputs],
            open: inputs,
            watermarks: vec![None; inputs],
            emitted_watermark: None,
            barrier_seen: vec![None; inputs],
        }
    }

    /// How many inputs are tracked.
    pub fn len(&self) -> usize {
        self.ended.len()
    }

    /// Always false: an input set has at least one input.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Input `i` ended. Returns true when this was the last open input, i.e. the node
    /// must now end its own output. A second end from the same input is a protocol bug.
    pub fn on_end(&mut self, i: usize) -> bool {
        assert!(!self.ended[i], "input {i} ended twice");
        self.ended[i] = true;
        self.open -= 1;
        // An ended input no longer holds the watermark back.
        self.open == 0
    }

    /// Whether every input has ended.
    pub fn all_ended(&self) -> bool {
        self.open == 0
    }

    /// Input `i` delivered watermark `w`. Returns the watermark to forward, if the
    /// minimum over the open inputs advanced.
    pub fn on_watermark(&mut self, i: usize, w: Watermark) -> Option<Watermark> {
        if self.ended[i] {
            return None;
        }
        if self.watermarks[i].is_some_and(|old| old >= w) {
            return None;
        }
        self.watermarks[i] = Some(w);
        let min = self
            .watermarks
            .iter()
            .zip(&self.ended)
            .filter(|(_, ended)| !**ended)
            .map(|(w, _)| *w)
            .min()
            .flatten()?;
        if self.emitted_watermark.is_some_and(|e| e >= min) {
            return None;
        }
        self.emitted_watermark = Some(min);
        Some(min)
    }

    /// Input `i` delivered barrier `b`. Returns true when every input that has not ended
    /// has now delivered it (the barrier is complete at this node and is forwarded once).
    pub fn on_barrier(&mut self, i: usize, b: Barrier) -> bool {
        if let Some(prev) = self.barrier_seen[i] {
            assert!(prev < b.id, "input {i} delivered {} after {}", b.id, prev);
        }
        self.barrier_seen[i] = Some(b.id);
        self.barrier_seen
            .iter()
            .zip(&self.ended)
            .all(|(seen, ended)| *ended || *seen == Some(b.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_is_forwarded_once_all_inputs_ended() {
        let mut s = InputSet::new(3);
        assert!(!s.on_end(1));
        assert!(!s.on_end(0));
        assert!(s.on_end(2));
        assert!(s.all_ended());
    }

    #[test]
    #[should_panic(expected = "ended twice")]
    fn a_second_end_from_one_input_is_a_bug() {
        let mut s = InputSet::new(2);
        s.on_end(0);
        s.on_end(0);
    }

    #[test]
    fn watermark_is_the_minimum_of_open_inputs_and_never_regresses() {
        let mut s = InputSet::new(2);
        assert_eq!(
            s.on_watermark(0, Watermark(10)),
            None,
            "input 1 has none yet"
        );
        assert_eq!(s.on_watermark(1, Watermark(5)), Some(Watermark(5)));
        assert_eq!(s.on_watermark(1, Watermark(20)), Some(Watermark(10)));
        assert_eq!(s.on_watermark(1, Watermark(15)), None, "input 1 went back");
        // Input 0 ends: only input 1 (at 20) holds the watermark now.
        s.on_end(0);
        assert_eq!(s.on_watermark(1, Watermark(30)), Some(Watermark(30)));
    }

    #[test]
    fn barrier_completes_when_every_open_input_delivered_it() {
        let mut s = InputSet::new(3);
        let b = Barrier {
            id: CheckpointId(1),
        };
        assert!(!s.on_barrier(0, b));
        assert!(!s.on_barrier(2, b));
        assert!(s.on_barrier(1, b));
        // An ended input does not hold the next barrier back.
        s.on_end(1);
        let b2 = Barrier {
            id: CheckpointId(2),
        };
        assert!(!s.on_barrier(0, b2));
        assert!(s.on_barrier(2, b2));
    }
}
