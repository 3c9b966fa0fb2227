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

const ETL: &str = r#"
pipeline = "etl"
[source]
path = "input.jsonl"
partitions = 1
[sink]
dir = "out"
dead_letter = "dead-letter.jsonl"
"#;

#[test]
fn the_documented_etl_job_loads_with_empty_core_files() {
    let d = job_dir(ETL, &[("0.toml", "")]);
    let spec = JobSpec::load(d.path()).unwrap();
    assert_eq!(spec.job.pipeline, PipelineKind::Etl);
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

    let d = job_dir(
        &ETL.replace("partitions = 1", "partitions = 0"),
        &[("0.toml", "")],
    );
    let e = err(d.path());
    assert!(
        e.contains("source.partitions") && e.contains("1 or more"),
        "{e}"
    );

    let d = job_dir("pipeline = \"nexmark-q99\"\n", &[("0.toml", "")]);
    let e = err(d.path());
    assert!(
        e.contains("pipeline") && e.contains("latency") && e.contains("etl"),
        "{e}"
    );
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
        &ETL.replace("partitions = 1", "partitions = 200"),
        &[(&core, "")],
    );
    let e = err(d.path());
    assert!(
        e.contains("job.toml") && e.contains("source.partitions"),
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
