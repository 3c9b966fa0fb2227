//! The Nexmark queries as built-in pipelines (`pipeline = "nexmark-qN"`), written with
//! the public pipeline API: the generator (`model`) as a watermarked source split across
//! partitions, then the query, then a discard, file or latency sink. Window sizes come
//! from `[nexmark]` (the standard 10 s, slide 2 s by default).
//!
//! - q0 pass-through of the bids; q1 prices in euros (`0.908 × price`, exact: in
//!   thousandths of a cent, printed as a decimal number of cents); q2 bids on auctions
//!   whose id is a multiple of 123;
//! - q3 local item suggestion (regular join of OR/ID/CA persons with category-10
//!   auctions); q4 average winning price per category and q6 average winning price of
//!   a seller's last 10 auctions (winning bid, as Beam's `WinningBids`: the highest bid
//!   at or above the auction's reserve with `date_time <= bid time < expires`; auctions
//!   without one have no winner; applied in expiry order);
//! - q5 hot items: per sliding window, the auctions with the most bids (ties all kept);
//!   windows start at every multiple of the slide, also before time 0;
//! - q7 highest bid: per tumbling window, the bids at the window's highest price;
//! - q8 monitor new users: persons who opened an auction in the tumbling window they
//!   registered in.

pub mod model;

use std::time::Duration;

use self::model::{Bid, Event, NexmarkParams};
use crate::checkpoint::codec::Entry;
use crate::config::{JobSpec, NexmarkConfig, NexmarkSink, PipelineKind};
use crate::connectors::{FileSink, Generator, LatencySink};
use crate::dataflow::windows::{Aggregate, Count, WindowResult, WindowSpec};
use crate::dataflow::{
    Data, JobGraph, KeyedProcess, Out, Pipeline, Stream, TimeDomain, TimerCtx, WatermarkStrategy,
};
use crate::error::Result;
use crate::state::{StateInit, ValueState};

/// The default event-time rate is the generator's rate up to this (flat-out runs keep a
/// meaningful event time: 1 M events per second of event time).
const MAX_DEFAULT_EVENT_RATE_EPS: u64 = 1_000_000;

/// The generator rate `--rate max` sets (every event due at once).
const FLAT_OUT_RATE_EPS: u64 = 1_000_000_000;

/// q1's dollar → euro rate (0.908), in thousandths: `price × 908` is the euro price in
/// thousandths of a cent, exactly.
const EUR_PER_USD_MILLI: u64 = 908;

/// The generator source with watermarks, from `[generator]` and `[nexmark]`.
pub fn source(p: &Pipeline, spec: &JobSpec) -> Stream<Event> {
    let g = spec.job.generator.clone().unwrap_or_default();
    let n = spec.job.nexmark.clone().unwrap_or_default();
    let events = (u128::from(g.rate_eps) * u128::from(g.duration_ms) / 1_000) as u64;
    let params = NexmarkParams {
        seed: n.seed,
        base_time_ms: 0,
        event_rate_eps: n
            .event_rate_eps
            .unwrap_or(g.rate_eps.min(MAX_DEFAULT_EVENT_RATE_EPS)),
    };
    // Unset event rate, not flat out: event time is the time each event
    // is due on the job clock (ms), so a window's end maps to the wall clock for latency.
    let follow_clock = n.event_rate_eps.is_none() && g.rate_eps < FLAT_OUT_RATE_EPS;
    let mut strategy = WatermarkStrategy::bounded(Duration::from_millis(n.watermark_bound_ms))
        .with_interval(Duration::from_millis(n.watermark_interval_ms));
    if let Some(idle) = n.idle_timeout_ms {
        strategy = strategy.with_idle_timeout(Duration::from_millis(idle));
    }
    let mut s = p.source_with_watermarks(
        "nexmark",
        Generator::new(g.rate_eps, events, g.warmup_ms * 1_000_000, move |t| {
            if follow_clock {
                params.event_at(t.seq, t.due_ns / 1_000_000)
            } else {
                params.event(t.seq)
            }
        }),
        Event::date_time,
        strategy,
    );
    if let Some(parts) = g.partitions {
        s = s.parallelism(parts);
    }
    s
}

/// The bids of the event stream.
pub fn bids(events: &Stream<Event>) -> Stream<Bid> {
    events.flat_map("bids", |e, out| {
        if let Event::Bid(b) = e {
            out.emit(b);
        }
    })
}

/// q0: every bid, unchanged.
pub fn q0(events: &Stream<Event>) -> Stream<Bid> {
    bids(events).map("q0", |b| b)
}

/// q1: (auction, bidder, euro price, date_time), the euro price `0.908 × price` kept
/// exactly as an integer number of thousandths of a euro cent (fixed point; see
/// [`q1_price`] for its decimal form).
pub fn q1(events: &Stream<Event>) -> Stream<(u64, u64, u64, u64)> {
    bids(events).map("q1", |b| {
        (
            b.auction,
            b.bidder,
            b.price * EUR_PER_USD_MILLI,
            b.date_time,
        )
    })
}

/// A q1 price (thousandths of a euro cent) as the exact decimal number of euro cents,
/// e.g. 1 234 567 → `1234.567`.
pub fn q1_price(milli_cents: u64) -> String {
    format!("{}.{:03}", milli_cents / 1_000, milli_cents % 1_000)
}

/// q2: (auction, price) of bids on auctions whose id is a multiple of 123.
pub fn q2(events: &Stream<Event>) -> Stream<(u64, u64)> {
    bids(events)
        .filter("q2", |b| b.auction % 123 == 0)
        .map("q2.project", |b| (b.auction, b.price))
}

/// Per window (keyed by its start), the records with the highest score; emitted when
/// the watermark passes the window's end. The second stage of q5 and q7.
struct TopPerWindow<R> {
    best: ValueState<i64, (u64, Vec<R>)>,
    size: u64,
}

impl<R: Clone + 'static> KeyedProcess<i64, (i64, (u64, Vec<R>)), (i64, R)> for TopPerWindow<R> {
    fn process(
        &mut self,
        ctx: &mut TimerCtx<'_, i64>,
        (_, (score, recs)): (i64, (u64, Vec<R>)),
        _out: &mut Out<'_, (i64, R)>,
    ) {
        let start = *ctx.key();
        self.best.update(
            ctx.key_ctx(),
            || (0, Vec::new()),
            |(best, all)| {
                if score > *best || all.is_empty() {
                    *best = score;
                    *all = recs;
                } else if score == *best {
                    all.extend(recs);
                }
            },
        );
        // A window ends after time 0, even one that starts before it.
        ctx.register_event_timer((start + self.size as i64 - 1) as u64);
    }

    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, i64>,
        _at: u64,
        _d: TimeDomain,
        out: &mut Out<'_, (i64, R)>,
    ) {
        let start = *ctx.key();
        if let Some((_, all)) = self.best.get(ctx.key_ctx()) {
            for r in all {
                out.emit((start, r));
            }
        }
        self.best.clear(ctx.key_ctx());
    }
}

fn top_per_window<R>(
    partials: Stream<(i64, u64, Vec<R>)>,
    name: &str,
    size: u64,
) -> Stream<(i64, R)>
where
    R: Data,
    (u32, crate::dataflow::Keyed<i64, (i64, (u64, Vec<R>))>): crate::checkpoint::codec::Record,
    (i64, (u64, Vec<R>)): Entry<K = i64, V = (u64, Vec<R>)>,
{
    partials
        .map(&format!("{name}.by-window"), |(start, score, recs)| {
            (start, (score, recs))
        })
        .key_by(&format!("{name}.window"), |x: &(i64, (u64, Vec<R>))| x.0)
        .process_with_timers(name, move |init: &mut StateInit<i64>| TopPerWindow {
            best: init.value("best"),
            size,
        })
}

/// q5: (window start, auction, bids) for the auctions with the most bids per sliding
/// window; the first windows start before time 0 (at −size + slide, …, −slide).
pub fn q5(events: &Stream<Event>, n: &NexmarkConfig) -> Stream<(i64, u64, u64)> {
    let spec = WindowSpec::sliding(
        Duration::from_millis(n.window_ms),
        Duration::from_millis(n.slide_ms),
    );
    let counts = bids(events)
        .key_by("q5.by-auction", |b: &Bid| b.auction)
        .window("q5.count", spec, |b: &Bid| b.date_time, Count)
        .map("q5.partial", |r: WindowResult<u64, u64>| {
            (r.start, r.value, vec![(r.key, r.value)])
        });
    top_per_window(counts, "q5.top", n.window_ms).map("q5.out", |(start, (auction, count))| {
        (start, auction, count)
    })
}

/// The bids at the highest price, incrementally.
struct MaxBids;

impl Aggregate<Bid> for MaxBids {
    type Acc = (u64, Vec<(u64, u64, u64)>);
    type Out = (u64, Vec<(u64, u64, u64)>);
    fn create(&self) -> Self::Acc {
        (0, Vec::new())
    }
    fn add(&self, acc: &mut Self::Acc, b: &Bid) {
        let rec = (b.auction, b.bidder, b.date_time);
        if acc.1.is_empty() || b.price > acc.0 {
            *acc = (b.price, vec![rec]);
        } else if b.price == acc.0 {
            acc.1.push(rec);
        }
    }
    fn merge(&self, into: &mut Self::Acc, other: &Self::Acc) {
        if into.1.is_empty() || other.0 > into.0 {
            *into = other.clone();
        } else if other.0 == into.0 {
            into.1.extend(other.1.iter().copied());
        }
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        acc.clone()
    }
}

/// q7: (window start, auction, bidder, price, date_time) of the bids at the highest
/// price of each tumbling window.
pub fn q7(events: &Stream<Event>, n: &NexmarkConfig) -> Stream<(i64, u64, u64, u64, u64)> {
    let spec = WindowSpec::tumbling(Duration::from_millis(n.window_ms));
    let partial = bids(events)
        .key_by("q7.by-auction", |b: &Bid| b.auction)
        .window("q7.max", spec, |b: &Bid| b.date_time, MaxBids)
        .map("q7.partial", |r| {
            let (price, recs) = r.value;
            (
                r.start,
                price,
                recs.into_iter().map(|(a, b, t)| (a, b, price, t)).collect(),
            )
        });
    top_per_window(partial, "q7.top", n.window_ms)
        .map("q7.out", |(start, (a, b, p, t))| (start, a, b, p, t))
}

/// q8's state per window of one person id: the name if they registered in it, whether
/// they opened an auction in it.
struct NewUsers {
    seen: ValueState<u64, Vec<(u64, Option<String>, bool)>>,
    size: u64,
}

impl KeyedProcess<u64, (u64, (u64, Option<String>)), (u64, u64, String)> for NewUsers {
    fn process(
        &mut self,
        ctx: &mut TimerCtx<'_, u64>,
        (_, (ts, name)): (u64, (u64, Option<String>)),
        _out: &mut Out<'_, (u64, u64, String)>,
    ) {
        let start = ts - ts % self.size;
        self.seen.update(ctx.key_ctx(), Vec::new, |v| {
            let i = match v.iter().position(|x| x.0 == start) {
                Some(i) => i,
                None => {
                    v.push((start, None, false));
                    v.len() - 1
                }
            };
            match name {
                Some(n) => v[i].1 = Some(n),
                None => v[i].2 = true,
            }
        });
        ctx.register_event_timer(start + self.size - 1);
    }

    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, u64>,
        at: u64,
        _d: TimeDomain,
        out: &mut Out<'_, (u64, u64, String)>,
    ) {
        let start = at + 1 - self.size;
        let id = *ctx.key();
        let mut v = self.seen.get(ctx.key_ctx()).unwrap_or_default();
        if let Some(i) = v.iter().position(|x| x.0 == start) {
            if let (_, Some(name), true) = &v[i] {
                out.emit((start, id, name.clone()));
            }
            v.remove(i);
        }
        if v.is_empty() {
            self.seen.clear(ctx.key_ctx());
        } else {
            self.seen.set(ctx.key_ctx(), v);
        }
    }
}

/// q8: (window start, person id, name) of persons who opened an auction in the
/// tumbling window they registered in.
pub fn q8(events: &Stream<Event>, n: &NexmarkConfig) -> Stream<(u64, u64, String)> {
    let size = n.window_ms;
    events
        .flat_map("q8.people-and-sellers", |e, out| match e {
            Event::Person(p) => out.emit((p.id, (p.date_time, Some(p.name)))),
            Event::Auction(a) => out.emit((a.seller, (a.date_time, None))),
            Event::Bid(_) => {}
        })
        .key_by("q8.by-person", |x: &(u64, (u64, Option<String>))| x.0)
        .process_with_timers("q8.join", move |init: &mut StateInit<u64>| NewUsers {
            seen: init.value("seen"),
            size,
        })
}

fn finish<T: Data>(
    out: Stream<T>,
    n: &NexmarkConfig,
    line: impl Fn(&T) -> String + Send + Sync + 'static,
    event_ms: impl Fn(&T) -> Option<u64> + Send + Sync + 'static,
    warmup_ms: u64,
) {
    match n.sink {
        NexmarkSink::Discard => {
            out.sink("discard", DiscardSink);
        }
        NexmarkSink::File => {
            out.map("format", move |r| line(&r))
                .sink("out", FileSink::lines(n.out.clone()));
        }
        NexmarkSink::Latency => {
            out.sink(
                "latency",
                LatencySink::new(move |r: &T| match event_ms(r) {
                    Some(ms) => (ms.saturating_mul(1_000_000), ms >= warmup_ms),
                    None => (0, false),
                }),
            );
        }
    }
}

/// Builds Nexmark query `q` from `spec`.
pub fn build(spec: &JobSpec, q: PipelineKind) -> Result<JobGraph> {
    let n = spec.job.nexmark.clone().unwrap_or_default();
    let warm = spec.job.generator.clone().unwrap_or_default().warmup_ms;
    let p = Pipeline::new(spec.job.max_key_groups);
    let events = source(&p, spec);
    let w = n.window_ms;
    match q {
        PipelineKind::NexmarkQ0 => finish(
            q0(&events),
            &n,
            |b| format!("{},{},{},{}", b.auction, b.bidder, b.price, b.date_time),
            |b| Some(b.date_time),
            warm,
        ),
        PipelineKind::NexmarkQ1 => finish(
            q1(&events),
            &n,
            |r| format!("{},{},{},{}", r.0, r.1, q1_price(r.2), r.3),
            |r| Some(r.3),
            warm,
        ),
        PipelineKind::NexmarkQ2 => finish(
            q2(&events),
            &n,
            |r| format!("{},{}", r.0, r.1),
            // q2 drops the event time; its latency is not defined here.
            |_| None,
            warm,
        ),
        PipelineKind::NexmarkQ3 => finish(
            q3(&events),
            &n,
            |r| format!("{},{},{},{}", r.0, r.1, r.2, r.3),
            |_| None,
            warm,
        ),
        PipelineKind::NexmarkQ4 => finish(
            q4(&events),
            &n,
            |r| format!("{},{}", r.0, r.1),
            |_| None,
            warm,
        ),
        PipelineKind::NexmarkQ6 => finish(
            q6(&events),
            &n,
            |r| format!("{},{}", r.0, r.1),
            |_| None,
            warm,
        ),
        PipelineKind::NexmarkQ5 => finish(
            q5(&events, &n),
            &n,
            |r| format!("{},{},{}", r.0, r.1, r.2),
            move |r| Some((r.0 + w as i64) as u64),
            warm,
        ),
        PipelineKind::NexmarkQ7 => finish(
            q7(&events, &n),
            &n,
            |r| format!("{},{},{},{},{}", r.0, r.1, r.2, r.3, r.4),
            move |r| Some((r.0 + w as i64) as u64),
            warm,
        ),
        PipelineKind::NexmarkQ8 => finish(
            q8(&events, &n),
            &n,
            |r| format!("{},{},{}", r.0, r.1, r.2),
            move |r| Some(r.0 + w),
            warm,
        ),
        PipelineKind::Latency | PipelineKind::KeyedAsync => {
            unreachable!("not a Nexmark query")
        }
    }
    p.build(spec.default_parallelism())
}

/// Counts its records (`sink_records`) and drops them: results discarded.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardSink;

struct DiscardPartition {
    records: u64,
    metrics: crate::metrics::MetricsHandle,
}

impl<T: 'static> crate::dataflow::Sink<T> for DiscardSink {
    fn partition(
        &self,
        ctx: &crate::dataflow::PartitionContext<'_>,
    ) -> Result<Box<dyn crate::dataflow::SinkPartition<T>>> {
        Ok(Box::new(DiscardPartition {
            records: 0,
            metrics: ctx.metrics.clone(),
        }))
    }
}

impl<T> crate::dataflow::SinkPartition<T> for DiscardPartition {
    #[inline]
    fn write(&mut self, _rec: T) -> Result<()> {
        self.records += 1;
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        self.metrics
            .add("sink_records", std::mem::take(&mut self.records));
        Ok(())
    }
}

/// q3: (name, city, state, auction id) for auctions of category 10 by sellers from OR,
/// ID or CA (a regular join of persons and auctions on seller id).
pub fn q3(events: &Stream<Event>) -> Stream<(String, String, String, u64)> {
    let people = events
        .flat_map("q3.people", |e, out| {
            if let Event::Person(p) = e {
                if matches!(p.state.as_str(), "OR" | "ID" | "CA") {
                    out.emit((p.id, p.name, p.city, p.state));
                }
            }
        })
        .key_by("q3.by-id", |p: &(u64, String, String, String)| p.0);
    let auctions = events
        .flat_map("q3.auctions", |e, out| {
            if let Event::Auction(a) = e {
                if a.category == 10 {
                    out.emit((a.id, a.seller));
                }
            }
        })
        .key_by("q3.by-seller", |a: &(u64, u64)| a.1);
    people.join("q3.join", &auctions, None, |_k, p, a| {
        (p.1.clone(), p.2.clone(), p.3.clone(), a.0)
    })
}

/// An auction's facts for closing it: (seller, category, date_time, expires, reserve).
type AuctionFacts = (u64, u64, u64, u64, u64);

/// Whether a bid (time, price) can win an auction (Beam's `WinningBids`): placed while
/// the auction is open, `date_time <= time < expires`, at or above the reserve.
fn valid_bid(f: &AuctionFacts, ts: u64, price: u64) -> bool {
    ts >= f.2 && ts < f.3 && price >= f.4
}

/// Per auction: its facts, the best valid bid so far, bids that came before the
/// auction, and whether it closed.
struct ClosedAuctions {
    auction: ValueState<u64, (AuctionFacts, Option<u64>, bool)>,
    early: ValueState<u64, Vec<(u64, u64)>>,
}

type ClosedIn = (u64, crate::dataflow::joins::Side<AuctionFacts, (u64, u64)>);

/// (auction id, seller, category, expires, final price).
type Closed = (u64, u64, u64, u64, u64);

impl KeyedProcess<u64, ClosedIn, Closed> for ClosedAuctions {
    fn process(&mut self, ctx: &mut TimerCtx<'_, u64>, (_, v): ClosedIn, _o: &mut Out<'_, Closed>) {
        use crate::dataflow::joins::Side;
        let kc = ctx.key_ctx();
        match v {
            Side::Left(facts) => {
                let early = self.early.get(kc).unwrap_or_default();
                self.early.clear(kc);
                let best = early
                    .iter()
                    .filter(|(t, p)| valid_bid(&facts, *t, *p))
                    .map(|(_, p)| *p)
                    .max();
                self.auction.set(kc, (facts, best, false));
                // Closed once no bid before the expiry can still come (expires > date_time).
                ctx.register_event_timer(facts.3 - 1);
            }
            Side::Right((ts, price)) => match self.auction.get(kc) {
                Some((f, best, false)) => {
                    if valid_bid(&f, ts, price) {
                        let best = Some(best.map_or(price, |b| b.max(price)));
                        self.auction.set(kc, (f, best, false));
                    }
                }
                Some((_, _, true)) => {}
                None => self.early.update(kc, Vec::new, |v| v.push((ts, price))),
            },
        }
    }

    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, u64>,
        _at: u64,
        _d: TimeDomain,
        out: &mut Out<'_, Closed>,
    ) {
        let id = *ctx.key();
        let kc = ctx.key_ctx();
        if let Some((f, best, false)) = self.auction.get(kc) {
            if let Some(price) = best {
                out.emit((id, f.0, f.1, f.3, price));
            }
            // Keep a closed marker so later bids are dropped instead of buffered.
            self.auction.set(kc, (f, None, true));
        }
    }
}

/// The winning bid of every auction: the highest bid at or above its reserve placed at or
/// after its creation and before its expiry, emitted when the watermark reaches the
/// expiry − 1 (auctions without such a bid emit nothing).
pub fn closed_auctions(events: &Stream<Event>) -> Stream<Closed> {
    use crate::dataflow::joins::Side;
    events
        .flat_map("closed.split", |e, out| match e {
            Event::Auction(a) => out.emit((
                a.id,
                Side::Left((a.seller, a.category, a.date_time, a.expires, a.reserve)),
            )),
            Event::Bid(b) => out.emit((b.auction, Side::Right((b.date_time, b.price)))),
            Event::Person(_) => {}
        })
        .key_by("closed.by-auction", |x: &ClosedIn| x.0)
        .process_with_timers("closed", |init: &mut StateInit<u64>| ClosedAuctions {
            auction: init.value("auction"),
            early: init.value("early"),
        })
}

/// Closed auctions per key, applied in (expiry, auction id) order when the watermark
/// passes the expiry, so the running results do not depend on arrival order.
struct InExpiryOrder {
    pending: ValueState<u64, Vec<(u64, u64, u64)>>,
    prices: ValueState<u64, Vec<u64>>,
    /// Keep only the last `keep` prices (`usize::MAX`: all, as a count and sum).
    keep: usize,
}

impl KeyedProcess<u64, (u64, Closed), (u64, u64)> for InExpiryOrder {
    fn process(
        &mut self,
        ctx: &mut TimerCtx<'_, u64>,
        (_, c): (u64, Closed),
        _o: &mut Out<'_, (u64, u64)>,
    ) {
        self.pending
            .update(ctx.key_ctx(), Vec::new, |v| v.push((c.3, c.0, c.4)));
        ctx.register_event_timer(c.3);
    }

    fn on_timer(
        &mut self,
        ctx: &mut TimerCtx<'_, u64>,
        at: u64,
        _d: TimeDomain,
        out: &mut Out<'_, (u64, u64)>,
    ) {
        let key = *ctx.key();
        let kc = ctx.key_ctx();
        let mut pending = self.pending.get(kc).unwrap_or_default();
        let mut due: Vec<_> = pending.iter().copied().filter(|p| p.0 <= at).collect();
        pending.retain(|p| p.0 > at);
        due.sort_unstable();
        if pending.is_empty() {
            self.pending.clear(kc);
        } else {
            self.pending.set(kc, pending);
        }
        let mut prices = self.prices.get(kc).unwrap_or_default();
        for (_, _, price) in due {
            if self.keep == usize::MAX {
                // Running average over all: kept as [count, sum].
                if prices.is_empty() {
                    prices = vec![0, 0];
                }
                prices[0] += 1;
                prices[1] += price;
                out.emit((key, prices[1] / prices[0]));
            } else {
                prices.push(price);
                if prices.len() > self.keep {
                    prices.remove(0);
                }
                out.emit((key, prices.iter().sum::<u64>() / prices.len() as u64));
            }
        }
        self.prices.set(kc, prices);
    }
}

/// q4: (category, average winning price so far), updated per closed auction.
pub fn q4(events: &Stream<Event>) -> Stream<(u64, u64)> {
    closed_auctions(events)
        .map("q4.by", |c| (c.2, c))
        .key_by("q4.by-category", |x: &(u64, Closed)| x.0)
        .process_with_timers("q4.avg", |init: &mut StateInit<u64>| InExpiryOrder {
            pending: init.value("pending"),
            prices: init.value("prices"),
            keep: usize::MAX,
        })
}

/// q6: (seller, average winning price of the seller's last 10 closed auctions).
pub fn q6(events: &Stream<Event>) -> Stream<(u64, u64)> {
    closed_auctions(events)
        .map("q6.by", |c| (c.1, c))
        .key_by("q6.by-seller", |x: &(u64, Closed)| x.0)
        .process_with_timers("q6.avg", |init: &mut StateInit<u64>| InExpiryOrder {
            pending: init.value("pending"),
            prices: init.value("prices"),
            keep: 10,
        })
}
