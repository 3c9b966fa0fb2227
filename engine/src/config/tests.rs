//! Job directory loading: the promised error messages for bad input.

use std::fs;
use std::path::Path;

use super::*;

fn job_dir(job: &str, cores: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("job.toml"), job).unwrap();
    if !cores.is_empty() {
        fs::create_dir(dir.path().join("cores")).unwrap();
    }
    for (name, text) in cores {
        fs::write(dir.path().join("cores").join(name), text).unwrap();
    }
    dir
}

fn err(dir: &Path) -> String {
    JobSpec::load(dir).unwrap_err().to_string()
}

/// A job of the user's own binary, with its own parameters.
const ETL: &str = r#"
pipeline = "etl"
[params]
input = "input.jsonl"
partitions = 1
"#;

#[test]
fn a_job_of_its_own_binary_loads_with_empty_core_files_and_keeps_its_params() {
    let d = job_dir(ETL, &[("0.toml", "")]);
    let spec = JobSpec::load(d.path()).unwrap();
    assert_eq!(spec.job.pipeline.as_deref(), Some("etl"));
    assert_eq!(spec.job.builtin(), None);
    let params = spec.job.params.as_ref().unwrap();
    assert_eq!(params["partitions"].as_integer(), Some(1));
    assert_eq!(spec.cores.len(), 1);
    assert_eq!(spec.cores[0].config, CoreConfig::default());
    assert_eq!(spec.resolve(Path::new("out")), d.path().join("out"));
}

#[test]
fn an_unknown_key_names_the_file_the_key_and_the_valid_keys() {
    let d = job_dir(
        &format!("{ETL}\n[generator]\nrate = 5\n"),
        &[("0.toml", "")],
    );
    let e = err(d.path());
    assert!(e.contains("job.toml"), "{e}");
    assert!(e.contains("rate"), "{e}");
    assert!(e.contains("rate_eps"), "lists what is valid: {e}");

    let d = job_dir(ETL, &[("0.toml", "ring_capacty = 8\n")]);
    let e = err(d.path());
    assert!(e.contains("0.toml") && e.contains("ring_capacty"), "{e}");
    assert!(e.contains("ring_capacity"), "lists what is valid: {e}");
}

#[test]
fn a_bad_value_names_the_key_and_what_is_valid() {
    let d = job_dir(ETL, &[("0.toml", "ring_capacity = 1000\n")]);
    let e = err(d.path());
    assert!(e.contains("0.toml") && e.contains("`ring_capacity`"), "{e}");
    assert!(e.contains("power of two"), "{e}");

    let d = job_dir(ETL, &[("0.toml", "batch_max = \"big\"\n")]);
    let e = err(d.path());
    assert!(e.contains("batch_max") && e.contains("invalid type"), "{e}");

    let d = job_dir("pipeline = \"\"\n", &[("0.toml", "")]);
    let e = err(d.path());
    assert!(e.contains("`pipeline`") && e.contains("empty"), "{e}");
}

#[test]
fn a_missing_core_file_is_named() {
    let d = job_dir(&format!("cores = [0, 1]\n{ETL}"), &[("0.toml", "")]);
    let e = err(d.path());
    assert!(e.contains("1.toml") && e.contains("missing"), "{e}");

    let d = job_dir(ETL, &[]);
    let e = err(d.path());
    assert!(e.contains("cores") && e.contains("0.toml"), "{e}");

    let d = tempfile::tempdir().unwrap();
    let e = err(d.path());
    assert!(e.contains("job.toml") && e.contains("missing"), "{e}");
}

#[test]
fn a_cpu_that_does_not_exist_is_named() {
    let cpu = available_cpus().iter().max().unwrap() + 1000;
    let name = format!("{cpu}.toml");
    let d = job_dir(ETL, &[(&name, "")]);
    let e = err(d.path());
    assert!(e.contains(&name) && e.contains("does not exist"), "{e}");

    let d = job_dir(ETL, &[("zero.toml", "")]);
    let e = err(d.path());
    assert!(e.contains("zero.toml") && e.contains("not a CPU id"), "{e}");
}

#[test]
fn partition_lists_must_cover_every_partition_once() {
    let cpus = available_cpus();
    let job = "pipeline = \"latency\"\nparallelism = 2\n";
    let d = job_dir(job, &[(&format!("{}.toml", cpus[0]), "partitions = [0]\n")]);
    let e = err(d.path());
    assert!(e.contains("no core owns partition 1"), "{e}");

    let d = job_dir(
        job,
        &[(&format!("{}.toml", cpus[0]), "partitions = [0, 1]\n")],
    );
    let spec = JobSpec::load(d.path()).unwrap();
    assert_eq!(spec.placement(2).unwrap(), vec![0, 0]);
}

#[test]
fn default_placement_is_round_robin_over_cores() {
    let spec = JobSpec::builtin_default(&[0, 1], &[]).unwrap();
    assert_eq!(spec.placement(5).unwrap(), vec![0, 1, 0, 1, 0]);
    assert_eq!(spec.default_parallelism(), 2);
}

#[test]
fn overrides_set_nested_keys_with_toml_values() {
    let spec = JobSpec::builtin_default(
        &[0],
        &["generator.rate_eps=2500".into(), "generator.keys=7".into()],
    )
    .unwrap();
    let g = spec.job.generator.unwrap();
    assert_eq!((g.rate_eps, g.keys), (2500, 7));
    let e = JobSpec::builtin_default(&[0], &["generator.rate_eps=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("generator.rate_eps"), "{e}");
    let e = JobSpec::builtin_default(&[0], &["nonsense".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("table.key=value"), "{e}");
}

/// Review finding: `01.toml` and `1.toml` both named CPU 1 and pinned two executors to it.
#[test]
fn a_cpu_is_named_by_one_canonical_file() {
    let cpu = available_cpus()[0];
    let d = job_dir(ETL, &[(&format!("0{cpu}.toml"), "")]);
    let e = err(d.path());
    assert!(
        e.contains(&format!("0{cpu}.toml")) && e.contains("non-canonical"),
        "{e}"
    );
}

/// Review finding: parallelism above the key groups was an operator error with exit 1.
#[test]
fn parallelism_above_the_key_groups_is_a_config_error() {
    let cpu = available_cpus()[0];
    let core = format!("{cpu}.toml");
    let d = job_dir(
        "pipeline = \"latency\"\n[generator]\npartitions = 200\n",
        &[(&core, "")],
    );
    let e = err(d.path());
    assert!(
        e.contains("job.toml") && e.contains("generator.partitions"),
        "{e}"
    );
    let d = job_dir("max_key_groups = 4\nparallelism = 5\n", &[(&core, "")]);
    let e = err(d.path());
    assert!(
        e.contains("`parallelism`") && e.contains("max_key_groups (4)"),
        "{e}"
    );
    let e = JobSpec::builtin_default(&[0], &["generator.duration_ms=9223372036854775807".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("generator.duration_ms"), "{e}");
}

#[test]
fn segment_preallocation_is_a_checkpoint_key_within_its_range() {
    let ok = job_dir(
        "[checkpoint]\nsegment_preallocate_mib = 1\n",
        &[("0.toml", "")],
    );
    let spec = JobSpec::load(ok.path()).unwrap();
    let cfg = spec.job.checkpoint.clone().unwrap();
    assert_eq!(cfg.log_config().segment_bytes, 1 << 20);
    assert_eq!(
        CheckpointConfig::default().log_config().segment_bytes,
        4 << 20
    );
    for bad in ["0", "1025"] {
        let dir = job_dir(
            &format!("[checkpoint]\nsegment_preallocate_mib = {bad}\n"),
            &[("0.toml", "")],
        );
        let e = err(dir.path());
        assert!(
            e.contains("checkpoint.segment_preallocate_mib") && e.contains("1 ..= 1024"),
            "{e}"
        );
    }
}

#[test]
fn an_s3_checkpoint_dir_has_a_local_log_dir_and_bad_locations_are_named() {
    let ok = job_dir(
        "[checkpoint]\ndir = \"s3://my-bucket/jobs/a\"\n",
        &[("0.toml", "")],
    );
    let cfg = JobSpec::load(ok.path()).unwrap().job.checkpoint.unwrap();
    assert_eq!(cfg.remote_url(), Some("s3://my-bucket/jobs/a"));
    assert_eq!(cfg.local_path(), Path::new(".rill/checkpoint-log"));
    let ok = job_dir(
        "[checkpoint]\ndir = \"s3://my-bucket\"\nlocal_dir = \"/var/lib/rill/log\"\n",
        &[("0.toml", "")],
    );
    let cfg = JobSpec::load(ok.path()).unwrap().job.checkpoint.unwrap();
    assert_eq!(cfg.local_path(), Path::new("/var/lib/rill/log"));
    let local = CheckpointConfig::default();
    assert_eq!(
        (local.remote_url(), local.local_path()),
        (None, "checkpoints".into())
    );
    for (job, key, says) in [
        ("dir = \"s3://B/x\"", "checkpoint.dir", "bucket name"),
        ("dir = \"s3://bkt/a/../b\"", "checkpoint.dir", "'..'"),
        (
            "dir = \"gs://bkt/x\"",
            "checkpoint.dir",
            "no other object store",
        ),
        (
            "local_dir = \"log\"",
            "checkpoint.local_dir",
            "write-ahead directory of an s3://",
        ),
        (
            "dir = \"s3://bkt\"\nlocal_dir = \"\"",
            "checkpoint.local_dir",
            "a directory path",
        ),
    ] {
        let dir = job_dir(&format!("[checkpoint]\n{job}\n"), &[("0.toml", "")]);
        let e = err(dir.path());
        assert!(e.contains(key) && e.contains(says), "{job}: {e}");
    }
}

#[test]
fn process_is_i_of_n_with_its_own_log_and_prefix_and_bad_values_are_named() {
    let ok = job_dir(
        "process = \"1/3\"\n[checkpoint]\ndir = \"s3://my-bucket/jobs/a\"\n",
        &[("0.toml", "")],
    );
    let spec = JobSpec::load(ok.path()).unwrap();
    assert_eq!(spec.process(), crate::ids::Process { index: 1, count: 3 });
    assert_eq!(
        spec.checkpoint_url().as_deref(),
        Some("s3://my-bucket/jobs/a/process-1-of-3")
    );
    assert_eq!(
        spec.checkpoint_log_dir().unwrap(),
        ok.path().join(".rill/checkpoint-log/process-1-of-3")
    );
    let single = job_dir("[checkpoint]\ndir = \"s3://bkt/j\"\n", &[("0.toml", "")]);
    let spec = JobSpec::load(single.path()).unwrap();
    assert!(spec.process().is_single());
    assert_eq!(spec.checkpoint_url().as_deref(), Some("s3://bkt/j"));
    for (job, key, says) in [
        ("process = \"3/3\"", "process", "below the count"),
        ("process = \"0/0\"", "process", "at least 1"),
        ("process = \"x\"", "process", "of the form i/N"),
        ("process = 2", "process", ""),
        (
            "process = \"0/2\"\n[checkpoint]\ndir = \"ckpts\"",
            "checkpoint.dir",
            "s3://bucket/prefix",
        ),
    ] {
        let dir = job_dir(&format!("{job}\n"), &[("0.toml", "")]);
        let e = err(dir.path());
        assert!(e.contains(key) && e.contains(says), "{job}: {e}");
    }
}

/// The error of loading `job` (with one empty core file) or of `core` as that core file.
fn job_err(job: &str) -> String {
    let cpu = available_cpus()[0];
    err(job_dir(job, &[(&format!("{cpu}.toml"), "")]).path())
}

fn core_err(core: &str) -> String {
    let cpu = available_cpus()[0];
    err(job_dir(
        "pipeline = \"latency\"\n",
        &[(&format!("{cpu}.toml"), core)],
    )
    .path())
}

/// Asserts that `e` names `key` and says what is valid (`valid`).
fn says(e: &str, key: &str, valid: &str) {
    assert!(e.contains(&format!("`{key}`")), "does not name {key}: {e}");
    assert!(e.contains(valid), "does not say {valid:?}: {e}");
}

/// Review finding (issue 13 item 3): `io_memory_kib = 33554432` panicked inside glommio
/// and hung the process; every numeric key of a core file is bounded by what can work.
#[test]
fn core_file_numbers_are_bounded_and_the_bound_is_named() {
    let e = core_err("io_memory_kib = 33554432\n");
    assert!(e.contains(".toml"), "{e}");
    says(&e, "io_memory_kib", "64 ..= 1048576");
    says(
        &core_err("preempt_timer_us = 9223372036854775807\n"),
        "preempt_timer_us",
        "1 ..= 10000000",
    );
}

/// Review finding (issue 13 item 3): time keys of `[checkpoint]` and `[restart]` took
/// i64::MAX.
#[test]
fn checkpoint_and_restart_times_are_bounded() {
    const MAX: &str = "9223372036854775807";
    for key in [
        "interval_ms",
        "timeout_ms",
        "min_pause_ms",
        "aligned_timeout_ms",
    ] {
        let e = job_err(&format!("[checkpoint]\n{key} = {MAX}\n"));
        says(&e, &format!("checkpoint.{key}"), "86400000");
    }
    for key in [
        "delay_ms",
        "initial_backoff_ms",
        "max_backoff_ms",
        "reset_after_ms",
    ] {
        for strategy in ["fixed-delay", "exponential-delay"] {
            let e = job_err(&format!(
                "[restart]\nstrategy = \"{strategy}\"\n{key} = {MAX}\n"
            ));
            says(&e, &format!("restart.{key}"), "86400000");
        }
    }
}

/// Review finding (issue 13 item 3): the async and lookup numbers, the generator's sink
/// cost and the Nexmark times had no upper bound.
#[test]
fn async_lookup_generator_and_nexmark_numbers_are_bounded() {
    const MAX: &str = "9223372036854775807";
    let ka = "pipeline = \"keyed-async\"\n";
    for (key, valid) in [
        ("capacity", "1 ..= 1048576"),
        ("capacity_max", "1 ..= 1048576"),
        ("timeout_ms", "86400000"),
        ("retry_delay_ms", "86400000"),
        ("retry_max_delay_ms", "86400000"),
        ("breaker_cooldown_ms", "86400000"),
    ] {
        let e = job_err(&format!("{ka}[async]\n{key} = {MAX}\n"));
        says(&e, &format!("async.{key}"), valid);
    }
    for (key, valid) in [
        ("delay_us", "60000000"),
        ("delay_max_us", "60000000"),
        ("pool_threads", "1 ..= 10000"),
    ] {
        let e = job_err(&format!("{ka}[lookup]\n{key} = {MAX}\n"));
        says(&e, &format!("lookup.{key}"), valid);
    }
    says(
        &job_err(&format!("{ka}[lookup]\nsigma = 1e300\n")),
        "lookup.sigma",
        "0.0 ..= 10.0",
    );
    says(
        &job_err(&format!("[generator]\nsink_cost_ns = {MAX}\n")),
        "generator.sink_cost_ns",
        "0 ..= 1000000000",
    );
    let q7 = "pipeline = \"nexmark-q7\"\n[nexmark]\n";
    for key in [
        "window_ms",
        "watermark_bound_ms",
        "watermark_interval_ms",
        "idle_timeout_ms",
    ] {
        let e = job_err(&format!("{q7}{key} = {MAX}\n"));
        says(&e, &format!("nexmark.{key}"), "86400000");
    }
    says(
        &job_err(&format!("{q7}event_rate_eps = {MAX}\n")),
        "nexmark.event_rate_eps",
        "1 ..= 1000000000",
    );
}

/// Review finding (issue 13 item 3): `capacity = "lots"` said "untagged enum
/// CapacitySetting".
#[test]
fn a_bad_async_capacity_says_what_is_valid() {
    for bad in ["\"lots\"", "-3", "1.5"] {
        let e = job_err(&format!(
            "pipeline = \"keyed-async\"\n[async]\ncapacity = {bad}\n"
        ));
        assert!(e.contains("capacity"), "{e}");
        assert!(e.contains("a positive integer or \"auto\""), "{e}");
        assert!(!e.contains("untagged"), "{e}");
    }
}

/// Review finding (issue 13 item 7): keys a pipeline does not read were accepted and
/// ignored. Each is refused, naming the key and the pipelines it applies to.
#[test]
fn keys_a_pipeline_ignores_are_refused_naming_the_pipelines_that_read_them() {
    let own = "pipeline = \"my-job\"\n";
    let ka = "pipeline = \"keyed-async\"\n";
    let q0 = "pipeline = \"nexmark-q0\"\n";
    let lat = "pipeline = \"latency\"\n";
    for (job, key, applies) in [
        (
            format!("{own}[nexmark]\nseed = 1\n"),
            "nexmark",
            "nexmark-q0",
        ),
        (
            format!("{own}[generator]\nrate_eps = 5\n"),
            "generator",
            "latency",
        ),
        (
            format!("{own}[source]\nkeys = 3\n"),
            "source",
            "keyed-async",
        ),
        (
            format!("{lat}[source]\nkeys = 3\n"),
            "source",
            "keyed-async",
        ),
        (format!("{lat}[async]\n"), "async", "keyed-async"),
        (format!("{lat}[lookup]\n"), "lookup", "keyed-async"),
        (format!("{lat}[params]\nx = 1\n"), "params", "own binary"),
        (format!("{q0}[params]\n"), "params", "own binary"),
        (
            format!("{q0}[generator]\nkeys = 3\n"),
            "generator.keys",
            "latency",
        ),
        (
            format!("{q0}[generator]\nsink_cost_ns = 10\n"),
            "generator.sink_cost_ns",
            "keyed-async",
        ),
        (format!("{q0}[source]\nkeys = 3\n"), "source", "keyed-async"),
        (
            format!("{q0}[nexmark]\nsink = \"discard\"\nout = \"x\"\n"),
            "nexmark.out",
            "sink = \"file\"",
        ),
    ] {
        let e = job_err(&job);
        assert!(e.contains(&format!("`{key}`")), "{job}: {e}");
        assert!(e.contains(applies), "{job}: does not name {applies}: {e}");
    }
    let e = core_err("async_capacity = 8\n");
    assert!(
        e.contains("`async_capacity`") && e.contains("keyed-async"),
        "{e}"
    );
    // What each pipeline reads is still accepted.
    for ok in [
        format!("{own}[params]\nx = 1\n[async]\n[lookup]\nkind = \"redis\"\n"),
        format!("{ka}[source]\nkeys = 3\n[generator]\nkeys = 4\nsink_cost_ns = 1\n"),
        format!("{q0}[generator]\nrate_eps = 10\n[nexmark]\nsink = \"file\"\nout = \"x\"\n"),
        format!("{lat}[generator]\nkeys = 4\nsink_cost_ns = 1\n"),
    ] {
        let cpu = available_cpus()[0];
        let d = job_dir(&ok, &[(&format!("{cpu}.toml"), "")]);
        JobSpec::load(d.path()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}
