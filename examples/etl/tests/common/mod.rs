//! Fixtures shared by the integration tests that run the etl job through its real
//! binary: the binary, the CPUs a test may use, a generated input with the output it
//! must give, the job directory, and the committed output read back.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Output;

use rand::{Rng, SeedableRng};

/// The etl job's binary (the command line every job gets from `rill_engine::app`).
pub fn rill() -> &'static str {
    env!("CARGO_BIN_EXE_etl")
}

pub fn cpus() -> Vec<usize> {
    let mut v = rill_engine::config::available_cpus();
    v.truncate(2);
    v
}

/// What a user's rows must be: (count, running total) per accepted event, in order.
pub type Reference = BTreeMap<String, Vec<(u64, i128)>>;

/// Writes `n` input lines (about 1% malformed); returns the reference and the byte
/// offsets of the malformed lines.
pub fn write_input(path: &Path, n: usize, seed: u64) -> (Reference, Vec<u64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut reference: Reference = BTreeMap::new();
    let mut state: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut offset = 0u64;
    for i in 0..n {
        let line = if rng.gen_ratio(1, 100) {
            bad.push(offset);
            format!("{{\"ts\": {i}, \"user\": broken")
        } else {
            let user = format!("u{}", rng.gen_range(0..2_000));
            let amount: i64 = rng.gen_range(-50..1_000);
            if amount > 0 {
                let s = state.entry(user.clone()).or_default();
                s.0 += 1;
                s.1 += i128::from(amount);
                reference.entry(user.clone()).or_default().push(*s);
            }
            format!("{{\"ts\": {i}, \"user\": \"{user}\", \"amount_cents\": {amount}}}")
        };
        writeln!(f, "{line}").unwrap();
        offset += line.len() as u64 + 1;
    }
    f.flush().unwrap();
    (reference, bad)
}

/// A job directory for the etl job on `cores` (empty core files), with `extra` after
/// `pipeline = "etl"` in its job.toml.
pub fn job_dir(dir: &Path, cores: &[usize], extra: &str) {
    std::fs::create_dir_all(dir.join("cores")).unwrap();
    for e in std::fs::read_dir(dir.join("cores")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for c in cores {
        std::fs::write(dir.join("cores").join(format!("{c}.toml")), "").unwrap();
    }
    std::fs::write(
        dir.join("job.toml"),
        format!("pipeline = \"etl\"\n{extra}\n"),
    )
    .unwrap();
}

/// The committed output: each user's rows in the order their partition wrote them.
pub fn committed(dir: &Path) -> Reference {
    let mut got: Reference = BTreeMap::new();
    for f in rill_engine::connectors::committed_files(&dir.join("out")).unwrap() {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let (rest, total) = line.rsplit_once(',').unwrap();
            let (user, count) = rest.rsplit_once(',').unwrap();
            got.entry(user.to_string())
                .or_default()
                .push((count.parse().unwrap(), total.parse().unwrap()));
        }
    }
    got
}

/// A run's exit status, stderr and stdout, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stderr\n{}\n--- stdout\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}
