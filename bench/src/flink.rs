//! The Flink peer: `rill-bench run latency|keyed-async --peer flink` runs the same job on
//! Apache Flink 2.x right after rill, under the same open-loop schedule.
//!
//! The job is Java, `bench/peers/flink/RillFlinkPeer.java` (what it does and how it
//! stamps due times is described at its top), run in a local MiniCluster in a JVM of its
//! own. Flink's jars come from the PyPI package `apache-flink-libraries`, installed by
//! `bench/peers/flink/setup.sh` into a venv in a cache directory (the harness runs it
//! when the jars are missing; `RILL_FLINK_LIB` names a directory of jars to use
//! instead). The harness compiles the job with `javac` when its class files are older
//! than the source (or were compiled against other jars), into
//! `bench/peers/flink/target/` (git-ignored).
//!
//! The JVM writes each sink subtask's latencies (every measured event, ns) to a file and
//! prints one `RILL-FLINK-RESULT {json}` line; the harness reads the files into its own
//! HdrHistogram, so both systems' percentiles are computed the same way. The JVM's CPU
//! time is its rusage from `wait4`. With `pin`, the JVM is confined to rill's CPUs
//! (`sched_setaffinity` before exec; the JVM then sizes its pools to them).
//!
//! `unsafe` here: the JVM child is confined to rill's CPUs and marked to die with the
//! harness between fork and exec (`sched_setaffinity`, `prctl`), and reaped with
//! `wait4` for its CPU time.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::peer::PeerResult;
use crate::stats::{new_histogram, MAX_LATENCY_NS};

/// The job's class (and source file stem).
const MAIN_CLASS: &str = "RillFlinkPeer";

/// The `--add-opens`/`--add-exports` Flink's own launch scripts pass on Java 17 (its
/// default `env.java.opts.all`): Flink's serializers and Pekko reflect into these.
const JAVA_MODULE_FLAGS: &[&str] = &[
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
];

/// The JVM's heap: fixed, so a run does not resize it (every latency is kept in memory,
/// 8 bytes per event).
const HEAP: &str = "-Xmx2g";

/// `bench/peers/flink/`.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/flink")
}

/// The async step of a keyed-async job.
#[derive(Clone, Debug)]
pub struct FlinkAsync {
    /// `orderedWait` (true) or `unorderedWait`.
    pub ordered: bool,
    /// Requests in flight per subtask.
    pub capacity: usize,
    /// Per-request timeout, ms.
    pub timeout_ms: u64,
    /// The simulated lookup's delay, µs (0: answered at once).
    pub delay_us: u64,
}

/// Checkpointing, as rill's job has it.
#[derive(Clone, Debug)]
pub struct FlinkCheckpoints {
    /// Interval, ms.
    pub interval_ms: u64,
    /// Exactly-once (aligned unless `unaligned`) or at-least-once.
    pub exactly_once: bool,
    /// Unaligned checkpoints.
    pub unaligned: bool,
}

/// What the Flink job runs.
#[derive(Clone, Debug)]
pub struct FlinkLoad {
    /// Events per second over all source subtasks.
    pub rate_eps: u64,
    /// The schedule, ms (warm-up included).
    pub duration_ms: u64,
    /// Warm-up, ms.
    pub warmup_ms: u64,
    /// Distinct keys.
    pub keys: u64,
    /// rill's CPUs: the parallelism is their number.
    pub cpus: Vec<usize>,
    /// Confine the JVM to `cpus`.
    pub pin: bool,
    /// `Some` for keyed-async.
    pub async_io: Option<FlinkAsync>,
    /// `Some` when rill's job checkpoints periodically.
    pub checkpoints: Option<FlinkCheckpoints>,
    /// Kill the JVM after this long.
    pub timeout: Duration,
}

impl FlinkLoad {
    /// The Flink job that mirrors rill's resolved job `spec` (a `latency` or `keyed-async`
    /// pipeline), on `cpus`. What the Java job cannot mirror is an error that says so.
    pub fn from_spec(
        spec: &rill_engine::config::JobSpec,
        cpus: Vec<usize>,
        pin: bool,
    ) -> Result<Self> {
        use rill_engine::config::asyncio::{
            CapacitySetting, DistributionSetting, LookupKind, ModeSetting, RetrySetting,
        };
        use rill_engine::config::CheckpointMode;
        let job = &spec.job;
        let pipeline = job.pipeline_name();
        let g = job.generator.clone().unwrap_or_default();
        if g.partitions.is_some() || g.sink_cost_ns > 0 {
            bail!(
                "--peer flink: generator.partitions and generator.sink_cost_ns are not mirrored \
                 by the Flink job"
            );
        }
        let (keys, async_io) = match pipeline {
            "latency" => (g.keys, None),
            "keyed-async" => {
                let a = job.async_io.clone().unwrap_or_default();
                let l = job.lookup.clone().unwrap_or_default();
                let capacity = match a.capacity {
                    CapacitySetting::Fixed(n) => n,
                    CapacitySetting::Auto(_) => bail!(
                        "--peer flink: async.capacity = \"auto\" has no Flink counterpart; set a \
                         number (--set async.capacity=100)"
                    ),
                };
                if a.retry != RetrySetting::None || a.breaker_failures > 0 {
                    bail!("--peer flink: async retries and the circuit breaker are not mirrored");
                }
                if l.kind != LookupKind::Simulated || l.distribution != DistributionSetting::Fixed {
                    bail!(
                        "--peer flink: only the simulated lookup with a fixed delay is mirrored \
                         (lookup.kind = \"simulated\", lookup.distribution = \"fixed\")"
                    );
                }
                let keys = job.source.as_ref().and_then(|s| s.keys).unwrap_or(g.keys);
                (
                    keys,
                    Some(FlinkAsync {
                        ordered: a.mode == ModeSetting::Ordered,
                        capacity,
                        timeout_ms: a.timeout_ms,
                        delay_us: l.delay_us,
                    }),
                )
            }
            other => bail!("--peer flink runs the latency and keyed-async jobs, not {other}"),
        };
        let checkpoints = job.checkpoint.as_ref().and_then(|c| {
            c.interval_ms.map(|interval_ms| FlinkCheckpoints {
                interval_ms,
                exactly_once: c.mode == CheckpointMode::ExactlyOnce,
                unaligned: c.unaligned,
            })
        });
        Ok(Self {
            rate_eps: g.rate_eps,
            duration_ms: g.duration_ms,
            warmup_ms: g.warmup_ms,
            keys,
            timeout: Duration::from_millis(g.duration_ms) * 2 + Duration::from_secs(180),
            cpus,
            pin,
            async_io,
            checkpoints,
        })
    }
}

/// Whether the peer can run here: `Some` says what is missing (`java` or `javac`).
pub fn java_missing() -> Option<String> {
    for tool in ["java", "javac"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!(
                "`{tool}` is not installed (the Flink peer needs a JDK 11+; Debian: apt-get \
                 install default-jdk-headless)"
            ));
        }
    }
    None
}

/// The directory of Flink's jars: `RILL_FLINK_LIB`, else what `setup.sh` installed (it
/// installs them when missing).
pub fn flink_lib() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RILL_FLINK_LIB") {
        let dir = PathBuf::from(dir);
        if jars(&dir)?.iter().any(|j| is_dist(j)) {
            return Ok(dir);
        }
        bail!(
            "RILL_FLINK_LIB={}: no flink-dist-*.jar there",
            dir.display()
        );
    }
    let script = peer_dir().join("setup.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): Flink's jars (PyPI apache-flink-libraries) could not be installed",
            script.display(),
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(text.lines().last().unwrap_or("").trim());
    if !jars(&dir)?.iter().any(|j| is_dist(j)) {
        bail!(
            "{} printed {}, which has no flink-dist-*.jar",
            script.display(),
            dir.display()
        );
    }
    Ok(dir)
}

fn is_dist(jar: &Path) -> bool {
    jar.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("flink-dist"))
}

/// The jars the job needs from `lib`: flink-dist and the logging jars.
fn jars(lib: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(lib)
        .with_context(|| format!("read {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".jar") && (n.starts_with("flink-dist") || n.starts_with("log4j"))
            })
        })
        .collect();
    v.sort();
    Ok(v)
}

fn classpath(parts: &[PathBuf]) -> OsString {
    std::env::join_paths(parts).unwrap_or_default()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Compiles the job when its classes are missing, older than the source, or were
/// compiled against other jars; returns the classes directory.
pub fn compile(lib: &Path) -> Result<PathBuf> {
    let dir = peer_dir();
    let source = dir.join(format!("{MAIN_CLASS}.java"));
    let classes = dir.join("target/classes");
    let stamp = classes.join("compiled-against.txt");
    let cp = classpath(&jars(lib)?);
    let cp_text = cp.to_string_lossy().to_string();
    let fresh = match (
        mtime(&classes.join(format!("{MAIN_CLASS}.class"))),
        mtime(&source),
    ) {
        (Some(c), Some(s)) => {
            c >= s && std::fs::read_to_string(&stamp).is_ok_and(|t| t.trim() == cp_text)
        }
        _ => false,
    };
    if fresh {
        return Ok(classes);
    }
    if mtime(&source).is_none() {
        bail!("{}: missing", source.display());
    }
    // Into a directory of our own, then renamed: two harnesses compiling at once do not
    // see each other's half-written classes.
    let tmp = dir.join(format!("target/classes.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    eprintln!("rill-bench: compiling {}", source.display());
    let out = Command::new("javac")
        .arg("-nowarn")
        .arg("-d")
        .arg(&tmp)
        .arg("-cp")
        .arg(&cp)
        .arg(&source)
        .output()
        .context("run javac")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "javac {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(tmp.join("compiled-against.txt"), &cp_text)?;
    let _ = std::fs::remove_dir_all(&classes);
    std::fs::rename(&tmp, &classes)
        .with_context(|| format!("rename {} to {}", tmp.display(), classes.display()))?;
    Ok(classes)
}

/// The `RILL-FLINK-RESULT` line.
#[derive(Debug, Deserialize)]
struct JobResult {
    flink_version: String,
    java_version: String,
    parallelism: usize,
    sunk: u64,
    samples: u64,
    start_ns: u64,
    last_arrival_ns: u64,
    end_lag_ms: f64,
    checkpoints_completed: u64,
    latency_files: Vec<PathBuf>,
}

/// Reads little-endian u64 latencies (ns) into `h`.
fn read_latencies(file: &Path, h: &mut Histogram<u64>) -> Result<u64> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    if bytes.len() % 8 != 0 {
        bail!("{}: {} bytes, not whole u64s", file.display(), bytes.len());
    }
    for c in bytes.chunks_exact(8) {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h.saturating_record(v.clamp(1, MAX_LATENCY_NS));
    }
    Ok(bytes.len() as u64 / 8)
}

/// The arguments of the Java job for `load`, writing into `work`.
fn job_args(load: &FlinkLoad, work: &Path) -> Vec<String> {
    let mut a = vec![
        format!(
            "pipeline={}",
            if load.async_io.is_some() {
                "keyed-async"
            } else {
                "latency"
            }
        ),
        format!("rate={}", load.rate_eps),
        format!("duration_ms={}", load.duration_ms),
        format!("warmup_ms={}", load.warmup_ms),
        format!("keys={}", load.keys.max(1)),
        format!("parallelism={}", load.cpus.len().max(1)),
        format!("out={}", work.join("out").display()),
    ];
    if let Some(x) = &load.async_io {
        a.push(format!(
            "mode={}",
            if x.ordered { "ordered" } else { "unordered" }
        ));
        a.push(format!("capacity={}", x.capacity.max(1)));
        a.push(format!("timeout_ms={}", x.timeout_ms));
        a.push(format!("delay_us={}", x.delay_us));
    }
    if let Some(c) = &load.checkpoints {
        a.push(format!("checkpoint_ms={}", c.interval_ms));
        a.push(format!("exactly_once={}", c.exactly_once));
        a.push(format!("unaligned={}", c.unaligned));
        a.push(format!(
            "checkpoint_dir={}",
            work.join("checkpoints").display()
        ));
    }
    a
}

/// Confines the calling (child, pre-exec) process to `cpus`.
fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity only
    // touch it and the calling process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The last `n` lines of `file`, for an error.
fn tail(file: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Flink's jars and the compiled job, ready to run.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The directory of Flink's jars.
    pub lib: PathBuf,
    /// The job's classes.
    pub classes: PathBuf,
}

/// Checks for a JDK, installs Flink's jars when missing and compiles the job when stale.
pub fn prepare() -> Result<Prepared> {
    if let Some(m) = java_missing() {
        bail!("--peer flink: {m}");
    }
    let lib = flink_lib()?;
    let classes = compile(&lib)?;
    Ok(Prepared { lib, classes })
}

/// Runs the job on Flink under `load`.
pub fn run_flink(load: &FlinkLoad, prepared: &Prepared) -> Result<PeerResult> {
    let (lib, classes) = (prepared.lib.clone(), prepared.classes.clone());
    let work = tempfile::Builder::new()
        .prefix("rill-bench-flink-")
        .tempdir()
        .context("create the Flink peer's work directory")?;
    let mut cp = vec![classes];
    cp.extend(jars(&lib)?);
    let stdout_file = work.path().join("stdout.txt");
    let stderr_file = work.path().join("stderr.txt");
    let mut cmd = Command::new("java");
    cmd.args(JAVA_MODULE_FLAGS)
        .arg(HEAP)
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            peer_dir().join("log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(classpath(&cp))
        .arg(MAIN_CLASS)
        .args(job_args(load, work.path()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file)?)
        .stderr(std::fs::File::create(&stderr_file)?);
    if load.pin {
        let cpus = load.cpus.clone();
        // SAFETY: only async-signal-safe calls (sched_setaffinity, prctl) between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                set_affinity(&cpus)
            });
        }
    } else {
        // SAFETY: as above.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let child = cmd.spawn().context("start java")?;
    let pid = child.id() as libc::pid_t;
    let (status, rusage) = wait_with_timeout(pid, load.timeout)?;
    let wall = started.elapsed();
    let Some(status) = status else {
        bail!(
            "the Flink job did not finish within {:.0} s and was killed; its log ends:\n{}",
            load.timeout.as_secs_f64(),
            tail(&stderr_file, 30)
        );
    };
    let stdout = std::fs::read_to_string(&stdout_file).unwrap_or_default();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RILL-FLINK-RESULT "));
    let (true, Some(line)) = (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        line,
    ) else {
        bail!(
            "the Flink job failed (wait status {status:#x}); its log ends:\n{}",
            tail(&stderr_file, 40)
        );
    };
    let r: JobResult = serde_json::from_str(line)
        .with_context(|| format!("the Flink job's result line: {line}"))?;
    let mut latency = new_histogram();
    let mut read = 0;
    for f in &r.latency_files {
        read += read_latencies(f, &mut latency)?;
    }
    if read != r.samples {
        bail!(
            "the Flink job reported {} samples but its files hold {read}",
            r.samples
        );
    }
    let window_ns =
        r.last_arrival_ns.saturating_sub(r.start_ns) as f64 - load.warmup_ms as f64 * 1e6;
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(rusage.ru_utime) + tv(rusage.ru_stime);
    let mut details = BTreeMap::new();
    details.insert("flink_version".into(), r.flink_version.clone());
    details.insert("java_version".into(), r.java_version.clone());
    details.insert(
        "checkpoints_completed".into(),
        r.checkpoints_completed.to_string(),
    );
    details.insert("parallelism".into(), r.parallelism.to_string());
    Ok(PeerResult {
        throughput_eps: if window_ns > 0.0 {
            latency.len() as f64 * 1e9 / window_ns
        } else {
            0.0
        },
        latency,
        sunk: r.sunk,
        cpu_s: vec![("jvm".into(), cpu)],
        process_cpu_s: Some(cpu),
        wall,
        pinned: load.pin,
        end_lag_ms: Some(r.end_lag_ms),
        details,
    })
}

/// Waits for `pid` (a child of ours) up to `timeout`, then kills it. Returns its wait
/// status (`None`: killed at the timeout) and its resource usage.
fn wait_with_timeout(
    pid: libc::pid_t,
    timeout: Duration,
) -> Result<(Option<libc::c_int>, libc::rusage)> {
    let started = Instant::now();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: a zeroed rusage is valid; wait4 fills it for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on our own child's pid with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            return Ok((Some(status), ru));
        }
        if r < 0 {
            return Err(anyhow!(
                "wait for the Flink JVM: {}",
                std::io::Error::last_os_error()
            ));
        }
        if started.elapsed() > timeout {
            // SAFETY: signals our own child, then reaps it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut ru);
            }
            return Ok((None, ru));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_files_are_read_whole_and_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("l.bin");
        let mut bytes = Vec::new();
        for v in [0u64, 1_000, 2_000_000, u64::MAX] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&f, &bytes).unwrap();
        let mut h = new_histogram();
        assert_eq!(read_latencies(&f, &mut h).unwrap(), 4);
        assert_eq!(h.len(), 4);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_NS);
        std::fs::write(&f, &bytes[..7]).unwrap();
        assert!(read_latencies(&f, &mut h).is_err());
    }

    /// The shipped scenario `name` resolved with `sets`, as a run would have it.
    fn spec(name: &str, sets: &[&str]) -> rill_engine::config::JobSpec {
        let scenario = crate::scenario::Scenario::find(name).unwrap();
        let settings = crate::scenario::Settings {
            job_sets: sets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        scenario.materialise(&settings).unwrap().spec
    }

    #[test]
    fn the_flink_job_mirrors_rills_settings_or_says_what_it_cannot() {
        let l = FlinkLoad::from_spec(&spec("keyed-async", &[]), vec![0], true).unwrap();
        let a = l.async_io.unwrap();
        assert!(a.ordered);
        assert_eq!((a.capacity, a.timeout_ms, a.delay_us), (100, 10_000, 1_000));
        assert_eq!(l.keys, 1_000, "keyed-async takes [source] keys");
        assert!(l.checkpoints.is_none());
        let l = FlinkLoad::from_spec(
            &spec(
                "keyed-async",
                &[
                    "async.mode=\"unordered\"",
                    "async.capacity=7",
                    "lookup.delay_us=0",
                    "checkpoint.interval_ms=1000",
                    "generator.rate_eps=1234",
                ],
            ),
            vec![0, 1],
            false,
        )
        .unwrap();
        let a = l.async_io.unwrap();
        assert!(!a.ordered);
        assert_eq!((a.capacity, a.delay_us), (7, 0));
        let c = l.checkpoints.unwrap();
        assert_eq!(c.interval_ms, 1_000);
        assert!(c.exactly_once && !c.unaligned);
        assert_eq!(l.rate_eps, 1_234);
        let l = FlinkLoad::from_spec(&spec("latency", &[]), vec![0], true).unwrap();
        assert!(l.async_io.is_none());
        assert_eq!(l.keys, 10_000);
        for (sets, want) in [
            (&["async.capacity=\"auto\""][..], "auto"),
            (&["lookup.kind=\"redis\""][..], "simulated"),
            (&["lookup.distribution=\"uniform\""][..], "fixed"),
            (&["async.retry=\"fixed\""][..], "retries"),
        ] {
            let e = FlinkLoad::from_spec(&spec("keyed-async", sets), vec![0], true)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{sets:?}: {e}");
        }
    }

    #[test]
    fn job_arguments_follow_the_load() {
        let load = FlinkLoad {
            rate_eps: 1000,
            duration_ms: 2000,
            warmup_ms: 500,
            keys: 10,
            cpus: vec![0, 1],
            pin: false,
            async_io: Some(FlinkAsync {
                ordered: false,
                capacity: 7,
                timeout_ms: 100,
                delay_us: 0,
            }),
            checkpoints: Some(FlinkCheckpoints {
                interval_ms: 250,
                exactly_once: true,
                unaligned: false,
            }),
            timeout: Duration::from_secs(1),
        };
        let a = job_args(&load, Path::new("/w"));
        for want in [
            "pipeline=keyed-async",
            "parallelism=2",
            "mode=unordered",
            "capacity=7",
            "delay_us=0",
            "checkpoint_ms=250",
            "checkpoint_dir=/w/checkpoints",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        let plain = FlinkLoad {
            async_io: None,
            checkpoints: None,
            ..load
        };
        let a = job_args(&plain, Path::new("/w"));
        assert!(a.contains(&"pipeline=latency".to_string()));
        assert!(!a.iter().any(|x| x.starts_with("checkpoint_ms")));
    }
}
