//! A `rill run` process from start to exit: one instance per job directory (a second is
//! refused, naming the first), and a job that cannot start (a core file the machine
//! cannot honour, an executor that fails to start) ends with an error instead of hanging.
//!
//! The 60 s limits below are hang detectors, not timing assertions: a process still
//! running after them is killed and the test fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::pipelines;
use rill_engine::runtime::Job;

const HANG: Duration = Duration::from_secs(60);

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

/// Kills its process when the test fails before it ended.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` to exit; kills it and fails when it is still running after `HANG`.
fn exit_of(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {HANG:?} (hung), killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `rill ARGS` to its exit under the hang detector: (status, stderr).
fn run_to_exit(args: &[&str], dir: &Path, what: &str) -> (ExitStatus, String) {
    let mut child = rill()
        .args(args)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = exit_of(&mut child, what);
    (status, reader.join().unwrap())
}

/// A latency job on the first one or two CPUs, core files from `cores` (CPU order).
fn job_dir(job: &str, cores: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    std::fs::create_dir(dir.path().join("cores")).unwrap();
    for (cpu, text) in available_cpus().iter().zip(cores) {
        std::fs::write(dir.path().join(format!("cores/{cpu}.toml")), text).unwrap();
    }
    dir
}

/// Review finding (issue 13 item 2): two `rill run` on one job directory both ran, each
/// calling the other's files corrupt. The second is refused at once, naming the first.
#[test]
fn a_second_run_on_the_same_job_directory_is_refused_naming_the_first() {
    let dir = job_dir(
        "pipeline = \"latency\"\n[generator]\nrate_eps = 1000\nduration_ms = 600000\n\
         warmup_ms = 0\n[metrics]\nlisten = \"off\"\n",
        &[""],
    );
    let mut first = Reaper(
        rill()
            .arg("run")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let stderr = first.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("rill: running") {
                let _ = tx.send(());
            }
        }
    });
    assert!(rx.recv_timeout(HANG).is_ok(), "the first run did not start");

    let (status, err) = run_to_exit(&["run"], dir.path(), "the second run");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", first.0.id())), "{err}");
    assert!(
        err.contains("rill run"),
        "names the holder's command: {err}"
    );
    assert!(err.contains(".rill/lock"), "names the lock file: {err}");

    // Commands that only read the job directory still work while it runs.
    let (status, err) = run_to_exit(&["validate"], dir.path(), "validate");
    assert!(status.success(), "{err}");

    let kill = Command::new("kill")
        .args(["-INT", &first.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(exit_of(&mut first.0, "the first run").code(), Some(130));

    // The lock ends with its holder.
    let (status, err) = run_to_exit(
        &["run", "--set", "generator.duration_ms=200"],
        dir.path(),
        "a run after the first ended",
    );
    assert!(status.success(), "{err}");
}

/// Review finding (issue 13 item 3): `io_memory_kib = 33554432` panicked inside glommio
/// (`Option::unwrap()` on `None`) and, with a second core, the process never exited.
#[test]
fn a_core_file_the_machine_cannot_honour_exits_naming_the_key() {
    let dir = job_dir(
        "pipeline = \"latency\"\n[generator]\nrate_eps = 1000\nduration_ms = 1000\n\
         warmup_ms = 0\n[metrics]\nlisten = \"off\"\n",
        &["io_memory_kib = 33554432\n", ""],
    );
    let (status, err) = run_to_exit(&["run"], dir.path(), "rill run");
    assert!(!status.success(), "{err}");
    assert!(err.contains("io_memory_kib"), "{err}");
    assert!(err.contains("1048576"), "says the bound: {err}");
}

/// An executor that cannot start (glommio panics allocating its io_uring memory; here a
/// job built in code, so no config check stopped it) ends the job with an error naming
/// the core, on every core count. It used to leave the other cores waiting at the
/// start-up rendezvous forever.
#[test]
fn an_executor_that_panics_at_start_fails_the_job_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let job: JobConfig = toml::from_str(
        "pipeline = \"latency\"\n[generator]\nrate_eps = 1000\nduration_ms = 60000\n\
         warmup_ms = 0\n[metrics]\nlisten = \"off\"\n",
    )
    .unwrap();
    let cpus: Vec<usize> = available_cpus().into_iter().take(2).collect();
    let mut spec = JobSpec::with_cores(dir.path(), job, &cpus, CoreConfig::default());
    // A size no allocator can lay out: glommio's `Layout::from_size_align(..).unwrap()`
    // panics on the executor's thread before the shard runs.
    let last = spec.cores.len() - 1;
    spec.cores[last].config.io_memory_kib = isize::MAX as usize / 1024;
    let graph = pipelines::build(&spec).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Job::new(spec, graph).run().map(|_| ()));
    });
    let result = rx
        .recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("the job still runs after {HANG:?}: it hung"));
    let e = result.expect_err("an executor that cannot start fails the job");
    let text = e.to_string();
    assert!(text.contains(&format!("cpu{}", cpus[last])), "{text}");
    assert!(
        !e.is_restartable(),
        "a core that cannot start does not start on a restart either: {text}"
    );
}

/// Review finding (issue 15, risk-control): a SIGTERM while a failed job waited to
/// restart reached no running attempt and was forgotten; the job restarted and kept
/// running, and a second signal did not end it either. The stop now outlives the
/// attempt: the delay ends and the run exits with the failure, not restarting.
#[test]
fn sigterm_during_a_restart_delay_ends_the_run_instead_of_restarting() {
    // Every lookup fails (nothing listens on port 1), so the job fails and waits ten
    // minutes to restart.
    let dir = job_dir(
        "pipeline = \"keyed-async\"\n[generator]\nrate_eps = 1000\nduration_ms = 600000\n\
         warmup_ms = 0\n[lookup]\nkind = \"redis\"\naddr = \"127.0.0.1:1\"\n\
         [restart]\nstrategy = \"fixed-delay\"\nattempts = 100\ndelay_ms = 600000\n\
         [metrics]\nlisten = \"off\"\n",
        &[""],
    );
    let mut job = Reaper(
        rill()
            .arg("run")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let stderr = job.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("restart 1 in 600000 ms") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    assert!(
        rx.recv_timeout(HANG).is_ok(),
        "the job did not fail and wait to restart"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &job.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = exit_of(&mut job.0, "the run stopped during its restart delay");
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("stopped during the restart delay"), "{err}");
    assert!(!err.contains("restart 2 in"), "{err}");
}
