//! The recommendation job (the seed's real-time recommendation case), as a user would
//! write it on rill: JSON lines `{"ts": <ms>, "user": "<id>", "item": "<id>", "kind":
//! "click"|"view"}` → parse (malformed lines go, with their byte offset, to the
//! dead-letter file) → `key_by(user)` → keyed state per user: the event count and the
//! user's last `history` events, updated on every event → on every `every`-th event of a
//! user, a request with that history → an async lookup of the features (category,
//! popularity) of every item in it (`[lookup]`: the simulated feature store, or Redis's
//! `GET key:<item>` holding `cat-3:720`) → the user's top-`top_n` items → one CSV line
//! `user,seq,ts,item1;item2;…` per request to an exactly-once file sink.
//!
//! Scoring is integer arithmetic only (see [`recommend`] and the README), so the Python
//! checker recomputes every recommendation exactly.
//!
//! The library is the pipeline ([`build`]); `src/main.rs` gives it the `rill` command
//! line through `rill_engine::app`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rill_engine::app::Ctx;
use rill_engine::asyncio::service::Service;
use rill_engine::asyncio::AsyncError;
use rill_engine::connectors::{
    csv_field, DeadLetter, DeadLetterSink, FileLine, FileSink, FileSource,
};
use rill_engine::dataflow::{Out, Pipeline};
use rill_engine::Result;
use serde::Deserialize;

mod join;
pub use join::{join_all, JoinAll};

/// The job's `[params]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The input file of JSON lines (relative to the job directory).
    pub input: PathBuf,
    /// How many source partitions split the input (by byte range, on line boundaries).
    /// With 1, each user's events reach its state in input order and the output is
    /// deterministic; with more, a user's events from two ranges interleave.
    pub partitions: u32,
    /// The output directory: one `part-<partition>-<checkpoint>.csv` per sink partition
    /// and checkpoint.
    pub out: PathBuf,
    /// Where malformed input lines go, each with its byte offset.
    pub dead_letter: PathBuf,
    /// How many of a user's most recent events the state keeps (K).
    pub history: u32,
    /// How many items a recommendation lists at most (N).
    pub top_n: u32,
    /// Recommend on every `every`-th event of a user (M; 1: on every event).
    pub every: u32,
    /// Weights of the kinds of event in a user's interest.
    pub click_weight: u32,
    /// See `click_weight`.
    pub view_weight: u32,
    /// How much an event one step older counts, in thousandths of the newer one.
    pub decay_permille: u32,
    /// How many categories the simulated feature store spreads items over.
    pub categories: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            input: PathBuf::from("input.jsonl"),
            partitions: 1,
            out: PathBuf::from("out"),
            dead_letter: PathBuf::from("dead-letter.jsonl"),
            history: 10,
            top_n: 3,
            every: 1,
            click_weight: 3,
            view_weight: 1,
            decay_permille: 800,
            categories: 8,
        }
    }
}

/// The largest `history`, `click_weight` and `view_weight`: keeps every score far inside
/// `u64` (interest ≤ 1000 · 1000 · 10⁶).
pub const MAX_HISTORY: u32 = 1000;
/// The largest `top_n`.
pub const MAX_TOP_N: u32 = 1000;
/// The largest weight of a kind of event.
pub const MAX_WEIGHT: u32 = 1000;
/// The largest popularity a feature may carry.
pub const MAX_POPULARITY: u32 = 1_000_000;
/// The weight of the newest event in a user's history (fixed point: 10⁶ is 1).
pub const NEWEST: u64 = 1_000_000;

/// What the user did with an item.
#[rill_engine::record]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Clicked it (stronger interest; a clicked item is not recommended again).
    Click,
    /// Saw it.
    View,
}

/// One input event.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Event {
    /// Event time, ms.
    pub ts: i64,
    /// Who.
    pub user: String,
    /// Which item.
    pub item: String,
    /// Click or view.
    pub kind: Kind,
}

/// One event in a user's history.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The item.
    pub item: String,
    /// Click or view.
    pub kind: Kind,
}

/// A user's keyed state: how many events they have had and the most recent ones.
#[rill_engine::record]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Events so far (the `seq` of the newest).
    pub events: u64,
    /// The last `history` events, newest first.
    pub recent: Vec<Seen>,
}

/// A recommendation to compute: the user's history when their `seq`-th event arrived.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The user.
    pub user: String,
    /// Which of the user's events triggered it (1, 2, …).
    pub seq: u64,
    /// That event's time, ms.
    pub ts: i64,
    /// The user's recent events, newest first.
    pub history: Vec<Seen>,
}

/// An item's features, from the feature store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// Its category (`cat-3`).
    pub category: String,
    /// Its popularity, 0 to `MAX_POPULARITY`.
    pub popularity: u32,
}

/// One output row.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// The user.
    pub user: String,
    /// The user's event that triggered it.
    pub seq: u64,
    /// That event's time, ms.
    pub ts: i64,
    /// The recommended items, best first.
    pub items: Vec<String>,
}

/// How a history is scored (from `[params]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scoring {
    /// N.
    pub top_n: u32,
    /// Weight of a click.
    pub click_weight: u32,
    /// Weight of a view.
    pub view_weight: u32,
    /// Decay per step back in the history, ‰.
    pub decay_permille: u32,
}

impl From<&Params> for Scoring {
    fn from(p: &Params) -> Self {
        Self {
            top_n: p.top_n,
            click_weight: p.click_weight,
            view_weight: p.view_weight,
            decay_permille: p.decay_permille,
        }
    }
}

/// FNV-1a, 64 bits: the simulated feature store's hash (a few lines in any language, so
/// the checker computes the same features).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The features the simulated feature store gives `item` with `categories` categories:
/// `h = fnv1a64(item)`, category `cat-<h mod categories>`, popularity
/// `1 + (h >> 32) mod 1000`.
pub fn simulated_features(item: &str, categories: u32) -> Features {
    let h = fnv1a64(item.as_bytes());
    Features {
        category: format!("cat-{}", h % u64::from(categories.max(1))),
        popularity: 1 + ((h >> 32) % 1000) as u32,
    }
}

/// Parses a feature value as the Redis feature store holds it: `<category>:<popularity>`
/// (`cat-3:720`), the category non-empty, the popularity an integer 0 to
/// `MAX_POPULARITY`.
pub fn parse_features(value: &[u8]) -> std::result::Result<Features, String> {
    let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
    let (category, popularity) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` is not <category>:<popularity>"))?;
    let popularity: u32 = popularity
        .parse()
        .ok()
        .filter(|p| *p <= MAX_POPULARITY)
        .ok_or_else(|| format!("`{text}`: popularity is not an integer 0 to {MAX_POPULARITY}"))?;
    if category.is_empty() {
        return Err(format!("`{text}`: empty category"));
    }
    Ok(Features {
        category: category.to_string(),
        popularity,
    })
}

/// The distinct items of `history`, in the order they first appear (newest first): the
/// items whose features a recommendation needs.
pub fn distinct_items(history: &[Seen]) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for s in history {
        if !items.contains(&s.item) {
            items.push(s.item.clone());
        }
    }
    items
}

/// Each category's interest for a user with `history` (newest first): the event `a`
/// steps back counts `weight(kind) · f(a)`, with `f(0) = 10⁶` and
/// `f(a+1) = ⌊f(a) · decay_permille / 1000⌋`; a category sums its events.
///
/// # Panics
/// If an item of `history` has no features.
pub fn interest(
    history: &[Seen],
    features: &BTreeMap<String, Features>,
    s: &Scoring,
) -> BTreeMap<String, u64> {
    let mut interest: BTreeMap<String, u64> = BTreeMap::new();
    let mut f = NEWEST;
    for seen in history {
        let w = match seen.kind {
            Kind::Click => s.click_weight,
            Kind::View => s.view_weight,
        };
        let category = &features_of(features, &seen.item).category;
        *interest.entry(category.clone()).or_default() += u64::from(w) * f;
        f = f * u64::from(s.decay_permille) / 1000;
    }
    interest
}

fn features_of<'a>(features: &'a BTreeMap<String, Features>, item: &str) -> &'a Features {
    features
        .get(item)
        .unwrap_or_else(|| panic!("no features for item `{item}`"))
}

/// The top items for a user with `history` (newest first), given every item's features.
///
/// - The candidates are the history's items the user did not click in it (seen, not yet
///   taken up); each scores `interest(its category) · its popularity` (see [`interest`]).
/// - The top `top_n` by score, higher first, ties broken by item id (byte order, lower
///   first).
///
/// # Panics
/// If an item of `history` has no features.
pub fn recommend(
    history: &[Seen],
    features: &BTreeMap<String, Features>,
    s: &Scoring,
) -> Vec<String> {
    let interest = interest(history, features, s);
    let clicked = |item: &str| {
        history
            .iter()
            .any(|x| x.kind == Kind::Click && x.item == item)
    };
    let mut scored: Vec<(u128, String)> = distinct_items(history)
        .into_iter()
        .filter(|i| !clicked(i))
        .map(|i| {
            let ft = features_of(features, &i);
            let score = u128::from(interest[&ft.category]) * u128::from(ft.popularity);
            (score, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.truncate(s.top_n as usize);
    scored.into_iter().map(|(_, i)| i).collect()
}

/// Why an item id is refused: the output lists items separated by `;` in one CSV field,
/// so an id holds none of `,;"` nor a line break, and is not empty.
pub fn bad_item(item: &str) -> Option<&'static str> {
    if item.is_empty() {
        Some("empty item")
    } else if item.contains([',', ';', '"', '\n', '\r']) {
        Some("item contains one of , ; \" or a line break")
    } else {
        None
    }
}

/// Parses one input line.
pub fn parse(line: &FileLine) -> std::result::Result<Event, DeadLetter> {
    let dead = |error: String| DeadLetter {
        offset: line.offset,
        line: line.line.clone(),
        error,
    };
    let e = serde_json::from_slice::<Event>(&line.line).map_err(|e| dead(e.to_string()))?;
    if e.user.is_empty() {
        return Err(dead("empty user".into()));
    }
    if let Some(why) = bad_item(&e.item) {
        return Err(dead(why.into()));
    }
    Ok(e)
}

/// Formats one output row, `user,seq,ts,item1;item2;…`, newline included.
pub fn format_row(r: &Recommendation, out: &mut Vec<u8>) {
    use std::io::Write;
    csv_field(&r.user, out);
    // Writing to a Vec cannot fail.
    let _ = write!(out, ",{},{},{}", r.seq, r.ts, r.items.join(";"));
    out.push(b'\n');
}

/// Adds the user's event to their profile; returns the request to make, if this is
/// their `every`-th event.
pub fn observe(profile: &mut Profile, e: &Event, history: usize, every: u64) -> Option<Request> {
    profile.events += 1;
    profile.recent.insert(
        0,
        Seen {
            item: e.item.clone(),
            kind: e.kind,
        },
    );
    profile.recent.truncate(history);
    (profile.events % every == 0).then(|| Request {
        user: e.user.clone(),
        seq: profile.events,
        ts: e.ts,
        history: profile.recent.clone(),
    })
}

/// Builds the recommendation pipeline from the job's `[params]`, `[async]` and
/// `[lookup]`.
pub fn build(ctx: &Ctx<'_>) -> Result<Pipeline> {
    let params: Params = ctx.params()?;
    ctx.check(
        params.partitions > 0,
        "partitions",
        params.partitions,
        "1 or more",
    )?;
    ctx.check(
        !params.input.as_os_str().is_empty(),
        "input",
        "an empty path",
        "a file path",
    )?;
    let within = |key: &str, v: u32, lo: u32, hi: u32| {
        ctx.check(
            (lo..=hi).contains(&v),
            key,
            v,
            &format!("an integer {lo} to {hi}"),
        )
    };
    within("history", params.history, 1, MAX_HISTORY)?;
    within("top_n", params.top_n, 1, MAX_TOP_N)?;
    ctx.check(params.every > 0, "every", params.every, "1 or more")?;
    within("click_weight", params.click_weight, 0, MAX_WEIGHT)?;
    within("view_weight", params.view_weight, 0, MAX_WEIGHT)?;
    within("decay_permille", params.decay_permille, 0, 1000)?;
    ctx.check(
        params.categories > 0,
        "categories",
        params.categories,
        "1 or more",
    )?;
    // Read unconditionally: the job always has its async lookup, so both tables are its.
    let opts = ctx.async_options();
    let lookup = ctx.lookup();

    let p = ctx.pipeline();
    let parsed = p
        .source("read", FileSource::new(&params.input))
        .parallelism(params.partitions)
        .map("parse", |l: FileLine| parse(&l));
    let (valid, malformed) = parsed.split_errors("valid", "malformed");
    malformed
        .sink("dead-letter", DeadLetterSink::new(&params.dead_letter))
        .parallelism(1);
    let (history, every) = (params.history as usize, u64::from(params.every));
    let requests =
        valid
            .key_by("by-user", |e: &Event| e.user.clone())
            .process("interest", move |init| {
                let profile = init.value::<Profile>("profile");
                move |ctx, e: Event, out: &mut Out<'_, Request>| {
                    let request =
                        profile.update(ctx, Profile::default, |p| observe(p, &e, history, every));
                    if let Some(r) = request {
                        out.emit(r);
                    }
                }
            });
    let scoring = Scoring::from(&params);
    let categories = params.categories;
    requests
        .async_map("recommend", opts, move |actx| {
            let mut service = Service::new(&lookup, actx);
            move |r: Request| {
                // One lookup per distinct item, all in flight at once (pipelined on the
                // partition's Redis connection, or concurrent timers).
                let calls: Vec<_> = distinct_items(&r.history)
                    .into_iter()
                    .map(|item| service.get(&item, item.clone()))
                    .collect();
                async move {
                    let mut features = BTreeMap::new();
                    for answer in join_all(calls).await {
                        let (item, value) = answer?;
                        // Redis holds the features; the simulated store computes them.
                        let f = match value {
                            Some(v) => parse_features(&v).map_err(|e| {
                                AsyncError::Service(format!("features of `{item}`: {e}"))
                            })?,
                            None => simulated_features(&item, categories),
                        };
                        features.insert(item, f);
                    }
                    Ok(Recommendation {
                        items: recommend(&r.history, &features, &scoring),
                        user: r.user,
                        seq: r.seq,
                        ts: r.ts,
                    })
                }
            }
        })
        .sink("csv", FileSink::new(&params.out, format_row));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(item: &str, kind: Kind) -> Seen {
        Seen {
            item: item.into(),
            kind,
        }
    }

    fn feats(list: &[(&str, &str, u32)]) -> BTreeMap<String, Features> {
        list.iter()
            .map(|(i, c, p)| {
                (
                    i.to_string(),
                    Features {
                        category: c.to_string(),
                        popularity: *p,
                    },
                )
            })
            .collect()
    }

    const S: Scoring = Scoring {
        top_n: 3,
        click_weight: 3,
        view_weight: 1,
        decay_permille: 500,
    };

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_click_raises_its_category_and_the_clicked_item_is_not_recommended() {
        // Newest first: a click on x (cat A), then views of y (A), z (B), w (B).
        let h = [
            seen("x", Kind::Click),
            seen("y", Kind::View),
            seen("z", Kind::View),
            seen("w", Kind::View),
        ];
        let f = feats(&[
            ("x", "A", 10),
            ("y", "A", 10),
            ("z", "B", 10),
            ("w", "B", 30),
        ]);
        // interest A = 3·10⁶ + 1·5·10⁵ = 3.5·10⁶; B = 2.5·10⁵ + 1.25·10⁵ = 3.75·10⁵.
        // y: 3.5·10⁷, w: 1.125·10⁷, z: 3.75·10⁶.
        assert_eq!(recommend(&h, &f, &S), ["y", "w", "z"]);
        let two = Scoring { top_n: 2, ..S };
        assert_eq!(recommend(&h, &f, &two), ["y", "w"]);
    }

    #[test]
    fn ties_go_to_the_lower_item_id_and_repeats_count_once_as_candidates() {
        let h = [
            seen("b", Kind::View),
            seen("a", Kind::View),
            seen("b", Kind::View),
        ];
        let f = feats(&[("a", "A", 5), ("b", "A", 5)]);
        assert_eq!(recommend(&h, &f, &S), ["a", "b"]);
        // A click anywhere in the history removes the item.
        let h = [seen("a", Kind::View), seen("a", Kind::Click)];
        assert!(recommend(&h, &feats(&[("a", "A", 5)]), &S).is_empty());
    }

    #[test]
    fn the_decay_is_floored_at_every_step() {
        // 10⁶ · 333/1000 = 333000, · 333/1000 = 110889, · 333/1000 = 36926.037 → 36926.
        let s = Scoring {
            decay_permille: 333,
            ..S
        };
        let h = [
            seen("a", Kind::View),
            seen("b", Kind::Click),
            seen("c", Kind::View),
            seen("d", Kind::View),
            seen("e", Kind::Click),
        ];
        let f = feats(&[
            ("a", "A", 1),
            ("b", "B", 1),
            ("c", "C", 1),
            ("d", "D", 1),
            ("e", "D", 1),
        ]);
        let want: BTreeMap<String, u64> = [
            ("A", 1_000_000),
            ("B", 3 * 333_000),
            ("C", 110_889),
            // 36926 + 3 · ⌊36926 · 333/1000⌋ = 36926 + 3 · 12296
            ("D", 36_926 + 3 * 12_296),
        ]
        .into_iter()
        .map(|(c, v)| (c.to_string(), v))
        .collect();
        assert_eq!(interest(&h, &f, &s), want);
        // No decay at all: only the newest event counts.
        let zero = Scoring {
            decay_permille: 0,
            ..S
        };
        assert_eq!(interest(&h, &f, &zero)["A"], 1_000_000);
        assert_eq!(interest(&h, &f, &zero)["D"], 0);
    }

    #[test]
    fn observe_keeps_the_last_k_newest_first_and_asks_every_m_events() {
        let mut p = Profile::default();
        let ev = |i: &str| Event {
            ts: 7,
            user: "u".into(),
            item: i.into(),
            kind: Kind::View,
        };
        assert!(observe(&mut p, &ev("a"), 2, 2).is_none());
        let r = observe(&mut p, &ev("b"), 2, 2).unwrap();
        assert_eq!((r.seq, r.ts), (2, 7));
        assert!(observe(&mut p, &ev("c"), 2, 2).is_none());
        let r = observe(&mut p, &ev("d"), 2, 2).unwrap();
        assert_eq!(r.seq, 4);
        let items: Vec<_> = r.history.iter().map(|s| s.item.as_str()).collect();
        assert_eq!(items, ["d", "c"]);
    }

    #[test]
    fn simulated_features_and_redis_values() {
        let f = simulated_features("i42", 8);
        let h = fnv1a64(b"i42");
        assert_eq!(f.category, format!("cat-{}", h % 8));
        assert_eq!(u64::from(f.popularity), 1 + (h >> 32) % 1000);
        assert_eq!(
            parse_features(b"cat-3:720").unwrap(),
            Features {
                category: "cat-3".into(),
                popularity: 720
            }
        );
        assert_eq!(parse_features(b"a:b:0").unwrap().category, "a:b");
        for bad in [
            &b"cat-3"[..],
            b"cat-3:",
            b":5",
            b"cat:-1",
            b"cat:1000001",
            b"\xff:1",
        ] {
            assert!(parse_features(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_rejects_what_is_not_an_event_and_keeps_its_offset() {
        let ok = FileLine {
            offset: 0,
            line: br#"{"ts": 1, "user": "a", "item": "i1", "kind": "click", "x": 1}"#.to_vec(),
        };
        assert_eq!(parse(&ok).unwrap().kind, Kind::Click);
        for bad in [
            &b"not json"[..],
            b"",
            br#"{"ts": 1, "user": "a", "item": "i1"}"#,
            br#"{"ts": 1, "user": "a", "item": "i1", "kind": "buy"}"#,
            br#"{"ts": "1", "user": "a", "item": "i1", "kind": "view"}"#,
            br#"{"ts": 1, "user": "a", "item": "i;1", "kind": "view"}"#,
            br#"{"ts": 1, "user": "", "item": "i1", "kind": "view"}"#,
        ] {
            let l = FileLine {
                offset: 42,
                line: bad.to_vec(),
            };
            let d = parse(&l).unwrap_err();
            assert_eq!(d.offset, 42);
            assert!(!d.error.is_empty());
        }
    }

    #[test]
    fn rows_quote_the_user_only_when_needed() {
        let mut out = Vec::new();
        format_row(
            &Recommendation {
                user: "a,\"b\"".into(),
                seq: 2,
                ts: -3,
                items: vec!["i1".into(), "i2".into()],
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a,\"\"b\"\"\",2,-3,i1;i2\n"
        );
        let mut out = Vec::new();
        format_row(
            &Recommendation {
                user: "u1".into(),
                seq: 1,
                ts: 7,
                items: vec![],
            },
            &mut out,
        );
        assert_eq!(out, b"u1,1,7,\n");
    }
}
