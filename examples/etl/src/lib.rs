//! The etl job (the seed's real-time ETL case), as a user would write it on rill: JSON
//! lines `{"ts": <ms>, "user": "<id>", "amount_cents": <int>}` → parse (malformed lines
//! go, with their byte offset, to the dead-letter file; the job goes on) → keep
//! `amount_cents > 0` → `key_by(user)` → per-user count and running total in keyed state
//! → one CSV line per accepted event, `user,count,total_cents`, under `params.out`. With
//! `params.enrich`, an async lookup (`[async]`, `[lookup]`: the simulated service, or
//! Redis's `GET key:<user>`) adds each user's segment: `user,count,total,segment`.
//!
//! The library is the pipeline ([`build`]); `src/main.rs` gives it the `rill` command
//! line through `rill_engine::app`.

use std::path::PathBuf;

use rill_engine::app::Ctx;
use rill_engine::asyncio::service::Service;
use rill_engine::connectors::{
    csv_field, DeadLetter, DeadLetterSink, FileLine, FileSink, FileSource,
};
use rill_engine::dataflow::{Out, Pipeline};
use rill_engine::Result;
use serde::Deserialize;

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
    /// Add each user's segment through the async lookup of `[async]` and `[lookup]`.
    pub enrich: Option<Enrich>,
}

/// `[params.enrich]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enrich {
    /// How many segments the simulated lookup spreads users over.
    pub segments: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            input: PathBuf::from("input.jsonl"),
            partitions: 1,
            out: PathBuf::from("out"),
            dead_letter: PathBuf::from("dead-letter.jsonl"),
            enrich: None,
        }
    }
}

impl Default for Enrich {
    fn default() -> Self {
        Self { segments: 4 }
    }
}

/// One input event.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EtlEvent {
    /// Event time, ms.
    pub ts: i64,
    /// The user it belongs to.
    pub user: String,
    /// The amount, in cents.
    pub amount_cents: i64,
}

/// One output row.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserTotal {
    /// The user.
    pub user: String,
    /// How many accepted events this user has had so far.
    pub count: u64,
    /// The sum of their amounts so far, cents.
    pub total_cents: i128,
    /// The user's segment, when the job enriches (`params.enrich`).
    pub segment: Option<String>,
}

/// The segment the simulated lookup gives `user` out of `segments` (deterministic).
pub fn segment_of(user: &str, segments: u32) -> String {
    format!(
        "SEG-{}",
        rill_engine::keys::stable_hash(&user) % u64::from(segments.max(1))
    )
}

/// Parses one input line.
pub fn parse(line: &FileLine) -> std::result::Result<EtlEvent, DeadLetter> {
    serde_json::from_slice::<EtlEvent>(&line.line).map_err(|e| DeadLetter {
        offset: line.offset,
        line: line.line.clone(),
        error: e.to_string(),
    })
}

/// Formats one output row, newline included.
pub fn format_row(t: &UserTotal, out: &mut Vec<u8>) {
    use std::io::Write;
    csv_field(&t.user, out);
    // Writing to a Vec cannot fail.
    let _ = write!(out, ",{},{}", t.count, t.total_cents);
    if let Some(s) = &t.segment {
        out.push(b',');
        csv_field(s, out);
    }
    out.push(b'\n');
}

/// Builds the etl pipeline from the job's `[params]` (and `[async]`, `[lookup]` with
/// `params.enrich`).
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
    if let Some(e) = &params.enrich {
        ctx.check(e.segments > 0, "enrich.segments", e.segments, "1 or more")?;
    }
    let p = ctx.pipeline();
    let parsed = p
        .source("read", FileSource::new(&params.input))
        .parallelism(params.partitions)
        .map("parse", |l: FileLine| parse(&l));
    let (valid, malformed) = parsed.split_errors("valid", "malformed");
    malformed
        .sink("dead-letter", DeadLetterSink::new(&params.dead_letter))
        .parallelism(1);
    let totals = valid
        .filter("positive", |e: &EtlEvent| e.amount_cents > 0)
        .key_by("by-user", |e: &EtlEvent| e.user.clone())
        .process("totals", |init| {
            let count = init.value::<u64>("count");
            let total = init.value::<i128>("total_cents");
            move |ctx, e: EtlEvent, out: &mut Out<'_, UserTotal>| {
                let count = count.update(
                    ctx,
                    || 0,
                    |c| {
                        *c += 1;
                        *c
                    },
                );
                let total_cents = total.update(
                    ctx,
                    || 0,
                    |t| {
                        *t += i128::from(e.amount_cents);
                        *t
                    },
                );
                out.emit(UserTotal {
                    user: e.user,
                    count,
                    total_cents,
                    segment: None,
                });
            }
        });
    let rows = match &params.enrich {
        None => totals,
        Some(en) => {
            let segments = en.segments;
            let opts = ctx.async_options();
            let lookup = ctx.lookup();
            totals.async_map("enrich", opts, move |ctx| {
                let mut service = Service::new(&lookup, ctx);
                move |t: UserTotal| {
                    let fut = service.get(t.user.clone(), t);
                    async move {
                        let (mut t, value) = fut.await?;
                        // Redis holds the segment; the simulated service computes it.
                        t.segment = Some(match value {
                            Some(v) => String::from_utf8_lossy(&v).into_owned(),
                            None => segment_of(&t.user, segments),
                        });
                        Ok(t)
                    }
                }
            })
        }
    };
    rows.sink("csv", FileSink::new(&params.out, format_row));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_what_is_not_an_event_and_keeps_its_offset() {
        let ok = FileLine {
            offset: 0,
            line: br#"{"ts": 1, "user": "a", "amount_cents": 5, "extra": true}"#.to_vec(),
        };
        assert_eq!(parse(&ok).unwrap().amount_cents, 5);
        for bad in [
            &b"not json"[..],
            b"",
            br#"{"ts": 1, "user": "a"}"#,
            br#"{"ts": "x", "user": "a", "amount_cents": 1}"#,
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
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        format_row(
            &UserTotal {
                user: "a,\"b\"".into(),
                count: 2,
                total_cents: -3,
                segment: None,
            },
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "\"a,\"\"b\"\"\",2,-3\n");
        let mut out = Vec::new();
        format_row(
            &UserTotal {
                user: "u1".into(),
                count: 1,
                total_cents: 7,
                segment: None,
            },
            &mut out,
        );
        assert_eq!(out, b"u1,1,7\n");
        let mut out = Vec::new();
        format_row(
            &UserTotal {
                user: "u1".into(),
                count: 1,
                total_cents: 7,
                segment: Some("SEG-3".into()),
            },
            &mut out,
        );
        assert_eq!(out, b"u1,1,7,SEG-3\n");
    }
}
