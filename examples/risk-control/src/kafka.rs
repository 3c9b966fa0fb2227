//! The risk-control job on Kafka (pipeline `risk-control-kafka`): the same rules,
//! windows and lookup as the file job ([`crate::alerts`]), with transactions read from a
//! Kafka topic and alerts and dead letters written to Kafka topics, exactly-once by
//! default (Kafka transactions committed when a checkpoint completes).
//!
//! ```text
//! topic input_topic ─ parse ─┬─ malformed ─ topic dead_letter_topic (JSON)
//!  (watermarks)              └─ valid ─ (the file job's rules and lookup) ─ topic alerts_topic
//! ```
//!
//! Each record value is one transaction (the file job's JSON line); an alert's key is its
//! account and its value the file job's CSV row. Must not: read files (the `[params]`
//! keys `input`, `out`, `dead_letter` are the file job's, ignored here).

use std::time::Duration;

use rill_engine::app::Ctx;
use rill_engine::dataflow::Pipeline;
use rill_engine::Result;
use rill_kafka::{Delivery, KafkaRecord, KafkaSink, KafkaSource, StartFrom};
use serde::{Deserialize, Serialize};

use crate::{alerts, check_rules, format_alert, watermarks, Params, Scored, Txn};

/// `[params.kafka]`: the brokers and topics of the `risk-control-kafka` pipeline.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaParams {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    /// The transactions (one JSON object per record value). The source runs with
    /// `params.partitions` partitions, which must be at least the topic's partitions.
    pub input_topic: String,
    /// The alerts (key: the account; value: the CSV row of the file job).
    pub alerts_topic: String,
    /// Malformed records (JSON: `{"partition", "offset", "error", "line"}`).
    pub dead_letter_topic: String,
    /// `exactly-once` (Kafka transactions per checkpoint), `at-least-once` or `none`.
    pub delivery: String,
    /// Where to start without a checkpoint: `earliest`, `latest`, or a timestamp (ms
    /// since the epoch) as a decimal string.
    pub start: String,
    /// Stop at the end of the input seen at start (tests, re-runs); unbounded otherwise.
    pub bounded: bool,
    /// Prefix of the sinks' `transactional.id`s (`{prefix}-{operator}-{partition}`):
    /// unique per job, stable across its restarts.
    pub transactional_id_prefix: String,
    /// How long an idle source partition waits before polling again (ms).
    pub repoll_ms: u64,
}

impl Default for KafkaParams {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_string(),
            input_topic: "transactions".to_string(),
            alerts_topic: "alerts".to_string(),
            dead_letter_topic: "dead-letters".to_string(),
            delivery: "exactly-once".to_string(),
            start: "earliest".to_string(),
            bounded: false,
            transactional_id_prefix: "risk-control".to_string(),
            repoll_ms: 1,
        }
    }
}

/// A malformed input record, as written to the dead-letter topic.
#[rill_engine::record]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KafkaDeadLetter {
    /// The input record's Kafka partition.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Why it was rejected.
    pub error: String,
    /// Its value (invalid UTF-8 replaced).
    pub line: String,
}

/// Parses one input record.
pub fn parse(r: &KafkaRecord) -> std::result::Result<Txn, KafkaDeadLetter> {
    serde_json::from_slice::<Txn>(&r.value).map_err(|e| KafkaDeadLetter {
        partition: r.partition,
        offset: r.offset,
        error: e.to_string(),
        line: String::from_utf8_lossy(&r.value).into_owned(),
    })
}

/// A record's event time for the watermark: the transaction's `ts`, or 0 for a
/// malformed record (which then never moves the watermark).
pub fn event_time(r: &KafkaRecord) -> u64 {
    serde_json::from_slice::<Txn>(&r.value).map_or(0, |t| t.ts)
}

/// An alert as a Kafka record: key = account, value = the CSV row without its newline.
pub fn alert_record(s: &Scored) -> rill_kafka::Serialized {
    let mut row = Vec::new();
    format_alert(s, &mut row);
    if row.last() == Some(&b'\n') {
        row.pop();
    }
    (Some(s.alert.account.clone().into_bytes()), row)
}

fn delivery(ctx: &Ctx<'_>, name: &str) -> Result<Delivery> {
    let d = match name {
        "exactly-once" => Some(Delivery::ExactlyOnce),
        "at-least-once" => Some(Delivery::AtLeastOnce),
        "none" => Some(Delivery::None),
        _ => None,
    };
    ctx.check(
        d.is_some(),
        "kafka.delivery",
        format!("`{name}`"),
        "exactly-once, at-least-once or none",
    )?;
    Ok(d.unwrap_or(Delivery::ExactlyOnce))
}

fn start_from(ctx: &Ctx<'_>, name: &str) -> Result<StartFrom> {
    let s = match name {
        "earliest" => Some(StartFrom::Earliest),
        "latest" => Some(StartFrom::Latest),
        ts => ts.parse::<i64>().ok().map(StartFrom::TimestampMs),
    };
    ctx.check(
        s.is_some(),
        "kafka.start",
        format!("`{name}`"),
        "earliest, latest, or a timestamp in ms since the epoch",
    )?;
    Ok(s.unwrap_or(StartFrom::Earliest))
}

/// Builds the `risk-control-kafka` pipeline from `[params]` (with `[params.kafka]`),
/// `[async]` and `[lookup]`.
pub fn build(ctx: &Ctx<'_>) -> Result<Pipeline> {
    let params: Params = ctx.params()?;
    check_rules(ctx, &params)?;
    ctx.check(
        params.kafka.is_some(),
        "kafka",
        "nothing",
        "a [params.kafka] table (brokers, topics) in the `risk-control-kafka` pipeline",
    )?;
    let k = params.kafka.clone().unwrap_or_default();
    for (key, v) in [
        ("kafka.brokers", &k.brokers),
        ("kafka.input_topic", &k.input_topic),
        ("kafka.alerts_topic", &k.alerts_topic),
        ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ("kafka.transactional_id_prefix", &k.transactional_id_prefix),
    ] {
        ctx.check(!v.is_empty(), key, "an empty string", "a name")?;
    }
    let delivery = delivery(ctx, &k.delivery)?;
    let source = KafkaSource::new(&k.brokers, &[&k.input_topic])
        .start_from(start_from(ctx, &k.start)?)
        .bounded(k.bounded)
        .repoll(Duration::from_millis(k.repoll_ms.max(1)));

    let p = ctx.pipeline();
    let parsed = p
        .source_with_watermarks("read", source, event_time, watermarks(&params))
        .parallelism(params.partitions)
        .map("parse", |r: KafkaRecord| parse(&r));
    let (valid, malformed) = parsed.split_errors("valid", "malformed");
    malformed
        .sink(
            "dead-letter",
            KafkaSink::new(
                &k.brokers,
                &k.dead_letter_topic,
                delivery,
                rill_kafka::json_value::<KafkaDeadLetter>,
            )
            .transactional_id_prefix(&k.transactional_id_prefix),
        )
        .parallelism(1);
    alerts(ctx, &params, &valid).sink(
        "alerts",
        KafkaSink::new(&k.brokers, &k.alerts_topic, delivery, alert_record)
            .transactional_id_prefix(&k.transactional_id_prefix),
    );
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Alert, Profile, Rule, Tier};

    #[test]
    fn records_parse_like_lines_and_alerts_are_keyed_rows() {
        let r = |v: &[u8]| KafkaRecord {
            topic: "t".into(),
            partition: 3,
            offset: 17,
            timestamp_ms: None,
            key: None,
            value: v.to_vec(),
        };
        let ok = r(
            br#"{"ts": 9, "account": "a", "amount_cents": 5, "merchant": "m", "country": "FR"}"#,
        );
        assert_eq!(parse(&ok).unwrap().ts, 9);
        assert_eq!(event_time(&ok), 9);
        let bad = r(b"\xffnot json");
        let d = parse(&bad).unwrap_err();
        assert_eq!((d.partition, d.offset), (3, 17));
        assert!(d.line.ends_with("not json") && !d.error.is_empty());
        assert_eq!(event_time(&bad), 0);
        let s = Scored {
            alert: Alert {
                account: "a,1".into(),
                rule: Rule::Velocity,
                ts: 0,
                value: 6,
                detail: String::new(),
                country: None,
            },
            profile: Profile {
                tier: Tier::Watch,
                home: "FR".into(),
            },
            severity: 2,
        };
        let (key, value) = alert_record(&s);
        assert_eq!(key.as_deref(), Some(&b"a,1"[..]));
        assert_eq!(value, b"\"a,1\",velocity,0,6,,watch,FR,2");
    }
}
