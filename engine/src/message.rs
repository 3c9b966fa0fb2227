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
    /// The final checkpoint of the job (its input is done). It is always aligned, also
    /// with unaligned checkpoints on: a record processed after it would land in output
    /// that no checkpoint ever commits.
    pub last: bool,
}

impl Barrier {
    /// The barrier of periodic checkpoint or savepoint `id`.
    pub fn new(id: CheckpointId) -> Self {
        Self { id, last: false }
    }
}

/// An event-time watermark: no record with an event time (ms) at or below `0` follows.
/// `Watermark::IDLE` is the idle marker: the input that sent it is quiet and must not
/// hold the minimum back until it sends a real watermark again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watermark(pub u64);

impl Watermark {
    /// The idle marker (never a real watermark: real ones stay below it).
    pub const IDLE: Watermark = Watermark(u64::MAX);
    /// The highest real watermark (everything is complete: the end of a bounded input).
    pub const MAX: Watermark = Watermark(u64::MAX - 1);

    /// Whether this is the idle marker rather than a time.
    pub fn is_idle(self) -> bool {
        self == Self::IDLE
    }
}

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

/// What a node must forward after one of its inputs ended: a barrier or watermark that
/// only the ended input was holding back, and whether its own output ends now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forward {
    /// A barrier now complete at this node.
    pub barrier: Option<Barrier>,
    /// A watermark the node's output advances to.
    pub watermark: Option<Watermark>,
    /// Every input has ended.
    pub end: bool,
}

impl Forward {
    /// The control items to forward, barrier first.
    pub fn controls(&self) -> impl Iterator<Item = Control> {
        self.barrier
            .map(Control::Barrier)
            .into_iter()
            .chain(self.watermark.map(Control::Watermark))
    }
}

/// Per-input progress of a node with several inputs, and the decisions it implies.
///
/// Every decision is a pure function of what each input delivered, so the rules are unit
/// tested here and shared by every multi-input point (unions, both sides of an
/// exchange). A barrier is complete when every open input has delivered it (or a later
/// one); a watermark is the minimum over the open inputs that are not idle; an ended or
/// idle input holds nothing back. When every open input is idle the node forwards
/// `Watermark::IDLE` once; when one becomes active again the node forwards its current
/// watermark (never a lower one than it forwarded before).
#[derive(Debug, Clone)]
pub struct InputSet {
    ended: Vec<bool>,
    open: usize,
    watermarks: Vec<Option<Watermark>>,
    idle: Vec<bool>,
    out_idle: bool,
    emitted_watermark: Option<Watermark>,
    /// The highest barrier each input delivered.
    barriers: Vec<Option<Barrier>>,
    forwarded_barrier: Option<CheckpointId>,
}

impl InputSet {
    /// Tracks `inputs` inputs (at least one).
    pub fn new(inputs: usize) -> Self {
        assert!(inputs >= 1, "a node has at least one input");
        Self {
            ended: vec![false; inputs],
            open: inputs,
            watermarks: vec![None; inputs],
            idle: vec![false; inputs],
            out_idle: false,
            emitted_watermark: None,
            barriers: vec![None; inputs],
            forwarded_barrier: None,
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

    /// Whether every input has ended.
    pub fn all_ended(&self) -> bool {
        self.open == 0
    }

    fn open_inputs(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.ended.len()).filter(|i| !self.ended[*i])
    }

    /// The watermark to forward if the minimum over open inputs advanced.
    fn advance_watermark(&mut self) -> Option<Watermark> {
        let mut min: Option<Watermark> = None;
        let mut active = false;
        for i in self.open_inputs() {
            if self.idle[i] {
                continue;
            }
            active = true;
            let w = self.watermarks[i]?;
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        if !active {
            if self.open == 0 || self.out_idle {
                return None;
            }
            self.out_idle = true;
            return Some(Watermark::IDLE);
        }
        let min = min?;
        if self.out_idle {
            self.out_idle = false;
            let w = self.emitted_watermark.map_or(min, |e| e.max(min));
            self.emitted_watermark = Some(w);
            return Some(w);
        }
        if self.emitted_watermark.is_some_and(|e| e >= min) {
            return None;
        }
        self.emitted_watermark = Some(min);
        Some(min)
    }

    /// The barrier to forward if every open input has now delivered one newer than the
    /// last forwarded.
    fn complete_barrier(&mut self) -> Option<Barrier> {
        let mut min: Option<Barrier> = None;
        for i in self.open_inputs() {
            let b = self.barriers[i]?;
            min = Some(min.map_or(b, |m| if b.id < m.id { b } else { m }));
        }
        let min = min?;
        if self.forwarded_barrier.is_some_and(|f| f >= min.id) {
            return None;
        }
        self.forwarded_barrier = Some(min.id);
        Some(min)
    }

    /// Whether input `i` delivered barrier `id` (or a later one), or ended.
    pub fn has_delivered(&self, i: usize, id: CheckpointId) -> bool {
        self.ended[i] || self.barriers[i].is_some_and(|b| b.id >= id)
    }

    /// Input `i` ended. A second end from the same input is a protocol bug.
    pub fn on_end(&mut self, i: usize) -> Forward {
        assert!(!self.ended[i], "input {i} ended twice");
        self.ended[i] = true;
        self.open -= 1;
        if self.open == 0 {
            return Forward {
                end: true,
                ..Forward::default()
            };
        }
        Forward {
            barrier: self.complete_barrier(),
            watermark: self.advance_watermark(),
            end: false,
        }
    }

    /// Input `i` delivered watermark `w`. Returns the watermark to forward, if the
    /// minimum over the open inputs advanced.
    pub fn on_watermark(&mut self, i: usize, w: Watermark) -> Option<Watermark> {
        if self.ended[i] {
            return None;
        }
        if w.is_idle() {
            if self.idle[i] {
                return None;
            }
            self.idle[i] = true;
            return self.advance_watermark();
        }
        let was_idle = std::mem::replace(&mut self.idle[i], false);
        if !was_idle && self.watermarks[i].is_some_and(|old| old >= w) {
            return None;
        }
        if self.watermarks[i].map_or(true, |old| old < w) {
            self.watermarks[i] = Some(w);
        }
        self.advance_watermark()
    }

    /// Input `i` delivered barrier `b` (barriers on one input arrive in increasing
    /// order). Returns the barrier to forward once every open input has delivered it or
    /// a later one; each barrier is forwarded at most once.
    pub fn on_barrier(&mut self, i: usize, b: Barrier) -> Option<Barrier> {
        if let Some(prev) = self.barriers[i].map(|p| p.id) {
            assert!(prev < b.id, "input {i} delivered {} after {}", b.id, prev);
        }
        self.barriers[i] = Some(b);
        self.complete_barrier()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_is_forwarded_once_all_inputs_ended() {
        let mut s = InputSet::new(3);
        assert!(!s.on_end(1).end);
        assert!(!s.on_end(0).end);
        assert!(s.on_end(2).end);
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
    fn an_idle_input_does_not_hold_the_minimum_back() {
        let mut s = InputSet::new(3);
        assert_eq!(s.on_watermark(0, Watermark(10)), None);
        assert_eq!(s.on_watermark(1, Watermark(20)), None, "input 2 has none");
        // Input 2 goes idle before ever sending a watermark: 0 and 1 decide.
        assert_eq!(s.on_watermark(2, Watermark::IDLE), Some(Watermark(10)));
        assert_eq!(s.on_watermark(2, Watermark::IDLE), None, "idle once");
        assert_eq!(s.on_watermark(0, Watermark(30)), Some(Watermark(20)));
        // Input 2 wakes up behind the others: the output does not go back.
        assert_eq!(s.on_watermark(2, Watermark(5)), None);
        assert_eq!(
            s.on_watermark(0, Watermark(40)),
            None,
            "held by input 2 at 5"
        );
        assert_eq!(
            s.on_watermark(2, Watermark(25)),
            None,
            "input 1 at 20 holds it"
        );
        assert_eq!(s.on_watermark(1, Watermark(50)), Some(Watermark(25)));
    }

    #[test]
    fn all_inputs_idle_forwards_idle_once_and_reactivation_never_regresses() {
        let mut s = InputSet::new(2);
        assert_eq!(s.on_watermark(0, Watermark(10)), None);
        assert_eq!(s.on_watermark(1, Watermark(12)), Some(Watermark(10)));
        assert_eq!(s.on_watermark(0, Watermark::IDLE), Some(Watermark(12)));
        assert_eq!(s.on_watermark(1, Watermark::IDLE), Some(Watermark::IDLE));
        assert_eq!(s.on_watermark(0, Watermark::IDLE), None);
        // Input 0 wakes with an old watermark: the output re-activates at 12, not 10.
        assert_eq!(s.on_watermark(0, Watermark(11)), Some(Watermark(12)));
        assert_eq!(s.on_watermark(0, Watermark(15)), Some(Watermark(15)));
        // The last open input ending while the other is idle ends the node instead.
        assert_eq!(s.on_watermark(1, Watermark::IDLE), None);
        s.on_end(0);
        assert!(s.on_end(1).end);
    }

    #[test]
    fn barrier_completes_when_every_open_input_delivered_it() {
        let mut s = InputSet::new(3);
        let b = |id| Barrier::new(CheckpointId(id));
        assert_eq!(s.on_barrier(0, b(1)), None);
        assert_eq!(s.on_barrier(2, b(1)), None);
        assert_eq!(s.on_barrier(1, b(1)), Some(b(1)));
        // An ended input does not hold the next barrier back.
        s.on_end(1);
        assert_eq!(s.on_barrier(0, b(2)), None);
        assert_eq!(s.on_barrier(2, b(2)), Some(b(2)));
    }

    #[test]
    fn an_input_ahead_by_several_barriers_does_not_skip_any() {
        let mut s = InputSet::new(2);
        let b = |id| Barrier::new(CheckpointId(id));
        assert_eq!(s.on_barrier(0, b(3)), None);
        assert_eq!(s.on_barrier(0, b(4)), None);
        assert_eq!(s.on_barrier(1, b(3)), Some(b(3)));
        assert_eq!(s.on_barrier(1, b(4)), Some(b(4)));
    }

    #[test]
    fn an_ending_input_releases_what_it_held_back() {
        let mut s = InputSet::new(2);
        let b1 = Barrier::new(CheckpointId(1));
        assert_eq!(s.on_barrier(0, b1), None);
        assert_eq!(s.on_watermark(0, Watermark(10)), None);
        assert_eq!(s.on_watermark(1, Watermark(5)), Some(Watermark(5)));
        let f = s.on_end(1);
        assert_eq!(f.barrier, Some(b1));
        assert_eq!(f.watermark, Some(Watermark(10)));
        assert!(!f.end);
        assert_eq!(
            f.controls().collect::<Vec<_>>(),
            vec![Control::Barrier(b1), Control::Watermark(Watermark(10))]
        );
        assert!(s.on_end(0).end);
    }
}
