//! The risk-control job (the seed's real-time risk-control case, section 6.2) as a user
//! writes it on rill:
//!
//! ```text
//! input.jsonl ─ parse ─┬─ malformed ──────────────────────────────────── dead-letter.jsonl
//!  (watermarks:        └─ valid ─ key_by(account) ─┬─ tumbling window (count, sum,
//!   ts − bound − 1)                                │   countries) ─ window rules ─┐
//!                                                  └─ per-event rules in keyed    ├ union
//!                                                     state (large, country change) ┘
//!       ─ profile lookup (async: simulated, or Redis `GET key:<account>`) ─ severity
//!       ─ alerts (CSV, exactly-once) ─ out/part-<p>-<checkpoint>.csv
//! ```
//!
//! Every transaction `{"ts": <ms>, "account": "<id>", "amount_cents": <int>, "merchant":
//! "<id>", "country": "<code>"}` is keyed by account. The window rules look at each
//! account's tumbling event-time window of `params.window_ms`: more than
//! `params.max_count` transactions (`velocity`), a sum above `params.max_sum_cents`
//! (`volume`), `params.geo_countries` or more distinct countries (`geo`). The per-event
//! rules run in keyed state on every transaction: an amount above `params.large_cents`
//! (`large`), and a country other than the account's previous transaction's within
//! `params.country_change_ms` of it (`country-change`). Each alert is then enriched with
//! the account's profile (risk tier and home country) through the async lookup, which
//! sets its severity; an alert whose severity falls to 0 is suppressed. The README gives
//! the exact semantics (the checker, `check.py`, recomputes them independently).
//!
//! The library is the pipeline ([`build`]), and its Kafka variant
//! ([`kafka::build`]: transactions from a topic, alerts to a topic, exactly-once);
//! `src/main.rs` gives both the `rill` command line through `rill_engine::app`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use rill_engine::app::Ctx;
use rill_engine::asyncio::service::Service;
use rill_engine::asyncio::AsyncError;
use rill_engine::connectors::{
    csv_field, DeadLetter, DeadLetterSink, FileLine, FileSink, FileSource,
};
use rill_engine::dataflow::windows::{Aggregate, WindowResult, WindowSpec};
use rill_engine::dataflow::{Out, Pipeline, Stream, WatermarkStrategy};
use rill_engine::Result;
use serde::Deserialize;

pub mod kafka;

/// The job's `[params]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The input file of JSON lines (relative to the job directory).
    pub input: PathBuf,
    /// How many source partitions split the input (by byte range, on line boundaries).
    pub partitions: u32,
    /// The output directory: one `part-<partition>-<checkpoint>.csv` per sink partition
    /// and checkpoint.
    pub out: PathBuf,
    /// Where malformed input lines go, each with its byte offset.
    pub dead_letter: PathBuf,
    /// The tumbling event-time window (ms); windows start at multiples of it.
    pub window_ms: u64,
    /// The watermark's bound: how far (ms) a transaction may be behind the latest one
    /// seen before it (watermark = max event time seen − bound − 1).
    pub out_of_orderness_ms: u64,
    /// How often (ms of processing time) a source partition emits its watermark.
    pub watermark_interval_ms: u64,
    /// `velocity`: more than this many transactions in one window.
    pub max_count: u64,
    /// `volume`: a window's sum of amounts above this (cents).
    pub max_sum_cents: i64,
    /// `geo`: at least this many distinct countries in one window.
    pub geo_countries: u32,
    /// `large`: one transaction above this amount (cents).
    pub large_cents: i64,
    /// `country-change`: a transaction in another country than the account's previous
    /// one, at most this far (ms of event time) from it.
    pub country_change_ms: u64,
    /// `[params.kafka]`: where the `risk-control-kafka` pipeline reads and writes (only
    /// there; the `risk-control` pipeline refuses it).
    pub kafka: Option<kafka::KafkaParams>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            input: PathBuf::from("input.jsonl"),
            partitions: 1,
            out: PathBuf::from("out"),
            dead_letter: PathBuf::from("dead-letter.jsonl"),
            window_ms: 60_000,
            out_of_orderness_ms: 5_000,
            watermark_interval_ms: 200,
            max_count: 5,
            max_sum_cents: 500_000,
            geo_countries: 3,
            large_cents: 200_000,
            country_change_ms: 60_000,
            kafka: None,
        }
    }
}

/// One transaction (an input line).
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Txn {
    /// Event time, ms.
    pub ts: u64,
    /// The account it is keyed by.
    pub account: String,
    /// The amount, cents.
    pub amount_cents: i64,
    /// The merchant.
    pub merchant: String,
    /// Where it happened (a country code).
    pub country: String,
}

/// A window's aggregate for one account.
#[rill_engine::record]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions in the window.
    pub count: u64,
    /// Their sum, cents.
    pub sum_cents: i128,
    /// The distinct countries, sorted.
    pub countries: Vec<String>,
}

/// Count, sum and distinct countries, incrementally (one accumulator per window pane).
#[derive(Clone, Copy, Debug, Default)]
pub struct TxnStats;

impl Aggregate<Txn> for TxnStats {
    type Acc = Stats;
    type Out = Stats;
    fn create(&self) -> Stats {
        Stats::default()
    }
    fn add(&self, acc: &mut Stats, t: &Txn) {
        acc.count += 1;
        acc.sum_cents += i128::from(t.amount_cents);
        if let Err(i) = acc.countries.binary_search(&t.country) {
            acc.countries.insert(i, t.country.clone());
        }
    }
    fn merge(&self, into: &mut Stats, other: &Stats) {
        into.count += other.count;
        into.sum_cents += other.sum_cents;
        for c in &other.countries {
            if let Err(i) = into.countries.binary_search(c) {
                into.countries.insert(i, c.clone());
            }
        }
    }
    fn result(&self, acc: &Stats) -> Stats {
        acc.clone()
    }
}

/// Which rule raised an alert.
#[rill_engine::record]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Per event: one amount above `large_cents`.
    Large,
    /// Per event: another country than the previous transaction's, soon after it.
    CountryChange,
    /// Per window: more than `max_count` transactions.
    Velocity,
    /// Per window: a sum above `max_sum_cents`.
    Volume,
    /// Per window: `geo_countries` or more distinct countries.
    Geo,
}

impl Rule {
    /// The rule's name in the output.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Large => "large",
            Rule::CountryChange => "country-change",
            Rule::Velocity => "velocity",
            Rule::Volume => "volume",
            Rule::Geo => "geo",
        }
    }

    /// The severity before the profile adjusts it.
    pub fn base_severity(self) -> i32 {
        match self {
            Rule::Large | Rule::CountryChange | Rule::Volume => 2,
            Rule::Velocity | Rule::Geo => 1,
        }
    }
}

/// An alert a rule raised, before enrichment.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// The account.
    pub account: String,
    /// The rule.
    pub rule: Rule,
    /// The transaction's event time (per-event rules) or the window's start (window
    /// rules), ms.
    pub ts: i64,
    /// The amount (`large`), the gap to the previous transaction in ms
    /// (`country-change`), the count (`velocity`), the sum (`volume`) or the number of
    /// countries (`geo`).
    pub value: i128,
    /// The country (`large`), `PREVIOUS>CURRENT` (`country-change`), the countries
    /// joined by `|` (`geo`), or empty.
    pub detail: String,
    /// The transaction's country, for per-event rules (a transaction away from the
    /// account's home country raises the severity).
    pub country: Option<String>,
}

/// How much an account is trusted.
#[rill_engine::record]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Severity − 1.
    Trusted,
    /// Severity unchanged.
    Standard,
    /// Severity + 1.
    Watch,
}

impl Tier {
    /// The tier's name (in Redis values and in the output).
    pub fn name(self) -> &'static str {
        match self {
            Tier::Trusted => "trusted",
            Tier::Standard => "standard",
            Tier::Watch => "watch",
        }
    }

    fn adjust(self) -> i32 {
        match self {
            Tier::Trusted => -1,
            Tier::Standard => 0,
            Tier::Watch => 1,
        }
    }
}

/// An account's profile, from the lookup.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Its risk tier.
    pub tier: Tier,
    /// Its home country.
    pub home: String,
}

/// The home countries the simulated lookup gives out.
pub const HOMES: [&str; 6] = ["FR", "DE", "ES", "IT", "NL", "US"];

/// 64-bit FNV-1a (the simulated lookup's hash: simple enough to recompute anywhere).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Profile {
    /// The profile the simulated lookup gives `account`: with h = FNV-1a(account), tier
    /// `[trusted, standard, standard, watch][h % 4]`, home `HOMES[(h / 4) % 6]`.
    pub fn simulated(account: &str) -> Self {
        let h = fnv1a(account.as_bytes());
        let tier = [Tier::Trusted, Tier::Standard, Tier::Standard, Tier::Watch][(h % 4) as usize];
        Self {
            tier,
            home: HOMES[((h / 4) % HOMES.len() as u64) as usize].to_string(),
        }
    }

    /// Parses a stored profile, `<tier>,<home>` (Redis's value of `key:<account>`).
    pub fn parse(value: &[u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
        let (tier, home) = text
            .split_once(',')
            .ok_or_else(|| format!("`{text}` is not `<tier>,<home>`"))?;
        let tier = match tier {
            "trusted" => Tier::Trusted,
            "standard" => Tier::Standard,
            "watch" => Tier::Watch,
            other => {
                return Err(format!(
                    "tier `{other}` in `{text}` is not trusted, standard or watch"
                ))
            }
        };
        if home.is_empty() {
            return Err(format!("`{text}` has no home country"));
        }
        Ok(Self {
            tier,
            home: home.to_string(),
        })
    }
}

/// An alert with its profile and severity: one output row.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scored {
    /// The alert.
    pub alert: Alert,
    /// The account's profile.
    pub profile: Profile,
    /// Its severity (1 or more; alerts at 0 or below are suppressed).
    pub severity: i32,
}

/// The severity of `alert` for an account with `profile`: the rule's base (2 for
/// `large`, `country-change`, `volume`; 1 for `velocity`, `geo`), plus the tier's
/// adjustment (trusted − 1, standard 0, watch + 1), plus 1 when a per-event alert's
/// transaction is away from home.
pub fn severity(alert: &Alert, profile: &Profile) -> i32 {
    let abroad = alert.country.as_ref().is_some_and(|c| *c != profile.home);
    alert.rule.base_severity() + profile.tier.adjust() + i32::from(abroad)
}

/// The thresholds of the rules (a copy of the relevant `[params]`).
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    max_count: u64,
    max_sum_cents: i64,
    geo_countries: u32,
    large_cents: i64,
    country_change_ms: u64,
}

impl From<&Params> for Rules {
    fn from(p: &Params) -> Self {
        Self {
            max_count: p.max_count,
            max_sum_cents: p.max_sum_cents,
            geo_countries: p.geo_countries,
            large_cents: p.large_cents,
            country_change_ms: p.country_change_ms,
        }
    }
}

/// What the per-event rules remember of an account's previous transaction.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Last {
    /// Its event time, ms.
    pub ts: u64,
    /// Its country.
    pub country: String,
}

impl Rules {
    /// The window rules on one account's window.
    pub fn on_window(&self, r: WindowResult<String, Stats>, out: &mut Out<'_, Alert>) {
        let alert = |rule, value, detail| Alert {
            account: r.key.clone(),
            rule,
            ts: r.start,
            value,
            detail,
            country: None,
        };
        let s = &r.value;
        if s.count > self.max_count {
            out.emit(alert(Rule::Velocity, i128::from(s.count), String::new()));
        }
        if s.sum_cents > i128::from(self.max_sum_cents) {
            out.emit(alert(Rule::Volume, s.sum_cents, String::new()));
        }
        if s.countries.len() >= self.geo_countries as usize {
            out.emit(alert(
                Rule::Geo,
                s.countries.len() as i128,
                s.countries.join("|"),
            ));
        }
    }

    /// The per-event rules on transaction `t`, given the account's previous one.
    pub fn on_event(&self, t: &Txn, last: Option<&Last>, out: &mut Out<'_, Alert>) {
        if t.amount_cents > self.large_cents {
            out.emit(Alert {
                account: t.account.clone(),
                rule: Rule::Large,
                ts: t.ts as i64,
                value: i128::from(t.amount_cents),
                detail: t.country.clone(),
                country: Some(t.country.clone()),
            });
        }
        if let Some(prev) = last {
            let gap = prev.ts.abs_diff(t.ts);
            if prev.country != t.country && gap <= self.country_change_ms {
                out.emit(Alert {
                    account: t.account.clone(),
                    rule: Rule::CountryChange,
                    ts: t.ts as i64,
                    value: i128::from(gap),
                    detail: format!("{}>{}", prev.country, t.country),
                    country: Some(t.country.clone()),
                });
            }
        }
    }
}

/// Parses one input line.
pub fn parse(line: &FileLine) -> std::result::Result<Txn, DeadLetter> {
    serde_json::from_slice::<Txn>(&line.line).map_err(|e| DeadLetter {
        offset: line.offset,
        line: line.line.clone(),
        error: e.to_string(),
    })
}

/// A line's event time for the watermark: the transaction's `ts`, or 0 for a malformed
/// line (which then never moves the watermark).
pub fn event_time(line: &FileLine) -> u64 {
    serde_json::from_slice::<Txn>(&line.line).map_or(0, |t| t.ts)
}

/// Formats one output row, newline included:
/// `account,rule,ts,value,detail,tier,home,severity`.
pub fn format_alert(s: &Scored, out: &mut Vec<u8>) {
    let a = &s.alert;
    csv_field(&a.account, out);
    // Writing to a Vec cannot fail.
    let _ = write!(out, ",{},{},{},", a.rule.name(), a.ts, a.value);
    csv_field(&a.detail, out);
    out.push(b',');
    out.extend_from_slice(s.profile.tier.name().as_bytes());
    out.push(b',');
    csv_field(&s.profile.home, out);
    let _ = writeln!(out, ",{}", s.severity);
}

/// Checks the `[params]` both pipelines share (the rules, windows and watermarks).
pub fn check_rules(ctx: &Ctx<'_>, params: &Params) -> Result<()> {
    ctx.check(
        params.partitions > 0,
        "partitions",
        params.partitions,
        "1 or more",
    )?;
    ctx.check(
        params.window_ms > 0,
        "window_ms",
        params.window_ms,
        "1 or more (ms)",
    )?;
    ctx.check(
        params.watermark_interval_ms > 0,
        "watermark_interval_ms",
        params.watermark_interval_ms,
        "1 or more (ms)",
    )?;
    ctx.check(
        params.geo_countries > 0,
        "geo_countries",
        params.geo_countries,
        "1 or more",
    )
}

/// The watermark strategy of `[params]`: bounded out-of-orderness, emitted every
/// `watermark_interval_ms`.
pub fn watermarks(params: &Params) -> WatermarkStrategy {
    WatermarkStrategy::bounded(Duration::from_millis(params.out_of_orderness_ms))
        .with_interval(Duration::from_millis(params.watermark_interval_ms))
}

/// Builds the risk-control pipeline from the job's `[params]`, `[async]` and `[lookup]`.
pub fn build(ctx: &Ctx<'_>) -> Result<Pipeline> {
    let params: Params = ctx.params()?;
    ctx.check(
        params.kafka.is_none(),
        "kafka",
        "a [params.kafka] table",
        "none in the `risk-control` pipeline (it reads `input`; `pipeline = \"risk-control-kafka\"` reads Kafka)",
    )?;
    check_rules(ctx, &params)?;
    ctx.check(
        !params.input.as_os_str().is_empty(),
        "input",
        "an empty path",
        "a file path",
    )?;
    let p = ctx.pipeline();
    let parsed = p
        .source_with_watermarks(
            "read",
            FileSource::new(&params.input),
            event_time,
            watermarks(&params),
        )
        .parallelism(params.partitions)
        .map("parse", |l: FileLine| parse(&l));
    let (valid, malformed) = parsed.split_errors("valid", "malformed");
    malformed
        .sink("dead-letter", DeadLetterSink::new(&params.dead_letter))
        .parallelism(1);
    alerts(ctx, &params, &valid).sink("alerts", FileSink::new(&params.out, format_alert));
    Ok(p)
}

/// The job after its source, for both pipelines: valid transactions -> key_by(account)
/// -> window rules and per-event rules -> the profile lookup -> scored alerts.
pub fn alerts(ctx: &Ctx<'_>, params: &Params, valid: &Stream<Txn>) -> Stream<Scored> {
    let rules = Rules::from(params);
    let by_account = valid.key_by("by-account", |t: &Txn| t.account.clone());

    let window = WindowSpec::tumbling(Duration::from_millis(params.window_ms));
    let window_alerts = by_account
        .window("window", window, |t: &Txn| t.ts, TxnStats)
        .flat_map("window-rules", move |r, out: &mut Out<'_, Alert>| {
            rules.on_window(r, out)
        });
    let event_alerts = by_account.process("event-rules", move |init| {
        let last = init.value::<Last>("last");
        move |ctx, t: Txn, out: &mut Out<'_, Alert>| {
            rules.on_event(&t, last.get(ctx).as_ref(), out);
            last.set(
                ctx,
                Last {
                    ts: t.ts,
                    country: t.country,
                },
            );
        }
    });

    let lookup = ctx.lookup();
    window_alerts
        .union("all-alerts", &event_alerts)
        .async_flat_map("profile", ctx.async_options(), move |actx| {
            let mut service = Service::new(&lookup, actx);
            move |a: Alert| {
                let fut = service.get(a.account.clone(), a);
                async move {
                    let (alert, value) = fut.await?;
                    // Redis holds the profile; the simulated service computes it.
                    let profile = match value {
                        Some(v) => Profile::parse(&v).map_err(|e| {
                            AsyncError::Service(format!(
                                "profile of account `{}`: {e}",
                                alert.account
                            ))
                        })?,
                        None => Profile::simulated(&alert.account),
                    };
                    let severity = severity(&alert, &profile);
                    Ok(if severity > 0 {
                        vec![Scored {
                            alert,
                            profile,
                            severity,
                        }]
                    } else {
                        Vec::new()
                    })
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_what_is_not_a_transaction_and_keeps_its_offset() {
        let ok = FileLine {
            offset: 0,
            line: br#"{"ts": 1, "account": "a", "amount_cents": 5, "merchant": "m", "country": "FR", "x": 1}"#.to_vec(),
        };
        assert_eq!(parse(&ok).unwrap().amount_cents, 5);
        assert_eq!(event_time(&ok), 1);
        for bad in [
            &b"not json"[..],
            b"",
            br#"{"ts": 1, "account": "a", "amount_cents": 5, "merchant": "m"}"#,
            br#"{"ts": -1, "account": "a", "amount_cents": 5, "merchant": "m", "country": "FR"}"#,
            br#"{"ts": 1.5, "account": "a", "amount_cents": 5, "merchant": "m", "country": "FR"}"#,
        ] {
            let l = FileLine {
                offset: 42,
                line: bad.to_vec(),
            };
            let d = parse(&l).unwrap_err();
            assert_eq!(d.offset, 42);
            assert!(!d.error.is_empty());
            assert_eq!(event_time(&l), 0);
        }
    }

    #[test]
    fn stats_merge_like_adding_every_transaction() {
        let t = |c: &str, a| Txn {
            ts: 0,
            account: "a".into(),
            amount_cents: a,
            merchant: "m".into(),
            country: c.into(),
        };
        let agg = TxnStats;
        let (mut x, mut y, mut all) = (agg.create(), agg.create(), agg.create());
        for (i, txn) in [t("FR", 5), t("DE", -2), t("FR", 7), t("US", 1)]
            .iter()
            .enumerate()
        {
            agg.add(if i % 2 == 0 { &mut x } else { &mut y }, txn);
            agg.add(&mut all, txn);
        }
        agg.merge(&mut x, &y);
        assert_eq!(x, all);
        assert_eq!(all.count, 4);
        assert_eq!(all.sum_cents, 11);
        assert_eq!(all.countries, ["DE", "FR", "US"]);
    }

    #[test]
    fn profiles_parse_and_the_simulated_one_is_fixed_by_the_account() {
        assert_eq!(
            Profile::parse(b"watch,FR").unwrap(),
            Profile {
                tier: Tier::Watch,
                home: "FR".into()
            }
        );
        for bad in [&b"watch"[..], b"gold,FR", b"trusted,", b"\xff,FR"] {
            assert!(Profile::parse(bad).is_err());
        }
        // FNV-1a test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Profile::simulated("a17"), Profile::simulated("a17"));
        let tiers: std::collections::BTreeSet<&str> = (0..100)
            .map(|i| Profile::simulated(&format!("a{i}")).tier.name())
            .collect();
        assert_eq!(tiers.len(), 3, "every tier occurs");
    }

    #[test]
    fn severity_adds_tier_and_abroad_and_rows_are_csv() {
        let alert = Alert {
            account: "a,1".into(),
            rule: Rule::Large,
            ts: 10,
            value: 300_000,
            detail: "DE".into(),
            country: Some("DE".into()),
        };
        let home = |tier| Profile {
            tier,
            home: "FR".into(),
        };
        assert_eq!(severity(&alert, &home(Tier::Watch)), 4);
        assert_eq!(severity(&alert, &home(Tier::Trusted)), 2);
        let velocity = Alert {
            rule: Rule::Velocity,
            country: None,
            ..alert.clone()
        };
        assert_eq!(severity(&velocity, &home(Tier::Trusted)), 0);
        let mut out = Vec::new();
        format_alert(
            &Scored {
                alert,
                profile: home(Tier::Standard),
                severity: 3,
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a,1\",large,10,300000,DE,standard,FR,3\n"
        );
    }
}
