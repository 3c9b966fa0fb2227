//! The runtime: one glommio `LocalExecutor` per configured core, pinned to its CPU,
//! each running one shard of the job. This module checks the machine, creates the rings
//! between cores (one per exchange per producing/consuming core pair), starts the
//! executors, and merges their reports. The per-core loop lives in `shard.rs`.

pub mod lock;
pub(crate) mod park;
mod preflight;
mod shard;
mod spin;
mod supervise;

pub use self::supervise::{restart_strategy, supervise, Control};

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

pub use self::preflight::check as preflight;
use crate::checkpoint::protocol::{ToCoordinator, ToCore};
use crate::checkpoint::restore::{self, Restore, StartFrom};
use crate::checkpoint::runtime::Link;
use crate::checkpoint::shell::{Shell, ShellArgs};
use crate::checkpoint::{Coordinator, CoordinatorConfig};
use crate::clock::{Clock, MonotonicClock};
use crate::config::CheckpointConfig;
use crate::config::JobSpec;
use crate::dataflow::instantiate::{CkptCtx, CoreEndpoints, InstantiateArgs};
use crate::dataflow::JobGraph;
use crate::error::{EngineError, Result};
use crate::ids::{CheckpointId, CoreId};
use crate::metrics::{JobReport, MetricsHandle};
use crate::monitor::probe::CoreProbe;
use crate::monitor::{Monitor, MonitorArgs, MonitorHandle};
use crate::ring::Doorbell;

/// Stops a running job from another thread (a signal handler, a test).
#[derive(Clone, Debug)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    doorbells: Arc<Vec<Arc<Doorbell>>>,
}

impl StopHandle {
    /// Ends every source now and lets the pipeline drain: sinks finish what reached them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ring_all();
    }

    /// Abandons the run at once: shards exit without draining.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        self.ring_all();
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn ring_all(&self) {
        for d in self.doorbells.iter() {
            d.notify();
        }
    }
}

/// What every shard shares: start-up rendezvous and the abort path.
pub(crate) struct Shared {
    pub(crate) clock: MonotonicClock,
    pub(crate) ready: AtomicUsize,
    pub(crate) start_ns: Arc<AtomicU64>,
    /// Each core's probe, watched by the monitor thread.
    pub(crate) probes: Vec<Arc<CoreProbe>>,
    /// Whether operators note themselves on the probes (the stall detector runs).
    pub(crate) trace_operators: bool,
    /// How often cores publish their figures for the metrics endpoint (`None`: never).
    pub(crate) publish_ns: Option<u64>,
    pub(crate) cores: usize,
    pub(crate) handle: StopHandle,
}

/// A job ready to run: a checked spec and its graph.
pub struct Job {
    spec: JobSpec,
    graph: Arc<JobGraph>,
    handle: StopHandle,
    start_from: StartFrom,
    savepoint: Arc<AtomicBool>,
    monitor: MonitorHandle,
}

impl Job {
    /// Prepares `graph` to run as configured by `spec`.
    pub fn new(spec: JobSpec, mut graph: JobGraph) -> Self {
        graph.process = spec.process();
        let doorbells = (0..spec.cores.len())
            .map(|_| Arc::new(Doorbell::new()))
            .collect();
        Self {
            spec,
            graph: Arc::new(graph),
            handle: StopHandle {
                stop: Arc::new(AtomicBool::new(false)),
                abort: Arc::new(AtomicBool::new(false)),
                doorbells: Arc::new(doorbells),
            },
            start_from: StartFrom::Newest,
            savepoint: Arc::new(AtomicBool::new(false)),
            monitor: MonitorHandle::default(),
        }
    }

    /// The job's monitor: the metrics endpoint's address while it runs, and the stalls
    /// and memory trend it saw once the run ended (also when the run failed).
    pub fn monitor_handle(&self) -> MonitorHandle {
        self.monitor.clone()
    }

    /// Binds the metrics endpoint as configured. Absent `[metrics]`: the default address,
    /// and a taken port is only a warning.
    fn bind_metrics(&self) -> Result<Option<std::net::TcpListener>> {
        let configured = self.spec.job.metrics.clone();
        let explicit = configured.is_some();
        let Some(addr) = configured.unwrap_or_default().addr() else {
            return Ok(None);
        };
        match std::net::TcpListener::bind(addr) {
            Ok(l) => Ok(Some(l)),
            Err(e) if !explicit => {
                tracing::warn!(
                    "metrics endpoint: {addr}: {e}; running without it (set [metrics] listen)"
                );
                Ok(None)
            }
            Err(e) => Err(EngineError::Config(crate::config::job::invalid(
                &self.spec.dir.join("job.toml"),
                "metrics.listen",
                format!("{addr:?}: {e}"),
                "a free address (port 0: any free port), or \"off\"",
            ))),
        }
    }

    /// Which checkpoint to restore from (default: the newest complete one).
    pub fn start_from(mut self, from: StartFrom) -> Self {
        self.start_from = from;
        self
    }

    /// A flag that, once set (e.g. by a signal handler), makes the running job take a
    /// savepoint: a checkpoint that retention never deletes.
    pub fn savepoint_flag(&self) -> Arc<AtomicBool> {
        self.savepoint.clone()
    }

    /// Uses `flag` as the savepoint flag (see `savepoint_flag`).
    pub fn with_savepoint_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.savepoint = flag;
        self
    }

    /// Restores (when checkpointing), lets sinks settle an earlier run's output, and
    /// builds every core's link to the coordinator.
    fn prepare_checkpoints(
        &self,
        clock: MonotonicClock,
    ) -> Result<(Vec<Option<ShardCkpt>>, Option<u64>)> {
        let n = self.spec.cores.len();
        let Some(cfg) = self.spec.job.checkpoint.clone() else {
            self.graph.recover_sinks(&self.spec.dir, false, None)?;
            return Ok(((0..n).map(|_| None).collect(), None));
        };
        let dir = self
            .spec
            .checkpoint_log_dir()
            .expect("a [checkpoint] table has a log directory");
        let earlier = crate::doctor::read_digest(&self.spec.dir)
            .ok()
            .and_then(|d| d.newest_checkpoint)
            .map(|id| restore::EarlierRun {
                digest: crate::doctor::digest_path(&self.spec.dir),
                newest_checkpoint: CheckpointId(id),
            });
        let remote_url = self.spec.checkpoint_url();
        let process = self.spec.process();
        let mut newest_in_store = None;
        let mut start_from = self.start_from;
        let mut global = None;
        if let (Some(url), false) = (&remote_url, process.is_single()) {
            // A job of several processes: restore the newest checkpoint complete for the
            // whole job, whatever this process has locally.
            let job_url = cfg.remote_url().expect("an s3:// dir").to_string();
            let mut own = rill_storage::Remote::open(url)?;
            let job = rill_storage::Remote::open(&job_url)?;
            let p = crate::checkpoint::remote::prepare_global(
                &mut own,
                &job,
                process,
                &dir,
                self.start_from,
            )?;
            if !p.aborted.is_empty() {
                eprintln!(
                    "rill: process {process}: checkpoints {:?} of an earlier run of this process \
                     never completed for the job; aborted them in {job_url}",
                    p.aborted.iter().map(|c| c.0).collect::<Vec<_>>()
                );
            }
            if let Some((id, bytes)) = p.downloaded {
                eprintln!(
                    "rill: downloaded checkpoint {} from {url} into {} ({bytes} bytes of log)",
                    id.0,
                    dir.display()
                );
            }
            newest_in_store = p.newest_used;
            start_from = match p.restore {
                Some(id) => StartFrom::Id(id),
                None => StartFrom::Fresh,
            };
            global = Some(crate::checkpoint::shell::GlobalArgs {
                job_url,
                process,
                timeout: Duration::from_millis(cfg.timeout_ms),
            });
        } else if let Some(url) = &remote_url {
            let mut store = rill_storage::Remote::open(url)?;
            let p = crate::checkpoint::remote::prepare(&mut store, &dir, self.start_from, |w| {
                eprintln!("rill: warning: {w}")
            })?;
            if !p.dropped_local.is_empty() {
                eprintln!(
                    "rill: local checkpoint manifests {:?} are not in {url} (they never \
                     completed); removed",
                    p.dropped_local.iter().map(|c| c.0).collect::<Vec<_>>()
                );
            }
            if let Some((id, bytes)) = p.downloaded {
                eprintln!(
                    "rill: downloaded checkpoint {} from {url} into {} ({bytes} bytes of log)",
                    id.0,
                    dir.display()
                );
            }
            newest_in_store = p.newest_in_store;
        }
        let earlier = earlier.filter(|_| global.is_none());
        let restore = restore::load(&dir, start_from, earlier.as_ref(), |w| {
            eprintln!("rill: warning: {w}")
        })?;
        if let Some(r) = &restore {
            r.check(&self.graph)?;
        }
        let restored = restore.as_ref().map(|r| r.id);
        if let Some(r) = &restore {
            // Said at start, so that a run that never reaches its report (killed, or
            // failing) still tells what it started from.
            eprintln!(
                "rill: restoring checkpoint {} (taken on {} core{}) onto {} core{}",
                r.id.0,
                r.meta.cores,
                if r.meta.cores == 1 { "" } else { "s" },
                self.spec.cores.len(),
                if self.spec.cores.len() == 1 { "" } else { "s" },
            );
        }
        self.graph.recover_sinks(&self.spec.dir, true, restored)?;
        rill_storage::layout::create_dir_durable(&dir)?;
        if let Err(e) = crate::checkpoint::history::compact(&dir) {
            tracing::warn!("compacting the checkpoint history: {e}");
        }
        let restore = restore.map(Arc::new);
        let after_store = newest_in_store.map_or(0, |c| c.0 + 1);
        let first_id = CheckpointId(if global.is_some() {
            // Several processes: right after the newest id any process used in the store,
            // so that a restarted process takes part in the very checkpoint the others
            // wait for (an id this process triggered but never put in the store is free
            // again: nothing of it was committed or decided).
            after_store.max(1)
        } else {
            crate::checkpoint::history::next_id(&dir).max(after_store)
        });
        let coord = Coordinator::new(
            CoordinatorConfig {
                interval: cfg.interval(),
                timeout: Duration::from_millis(cfg.timeout_ms),
                min_pause: Duration::from_millis(cfg.min_pause_ms),
                max_concurrent: cfg.max_concurrent,
                tolerable_failures: cfg.tolerable_failures,
            },
            n,
            first_id,
            clock.now_ns(),
        );
        let mut to = Vec::with_capacity(n);
        let mut from = Vec::with_capacity(n);
        let mut links = Vec::with_capacity(n);
        for i in 0..n {
            if i == 0 {
                to.push(None);
                from.push(None);
                links.push(None);
                continue;
            }
            let (tp, tc) = crate::ring::channel::<ToCore>(256);
            let (fp, fc) = crate::ring::channel::<ToCoordinator>(256);
            to.push(Some((tp, self.handle.doorbells[i].clone())));
            from.push(Some(fc));
            links.push(Some(Link::Remote {
                to: fp,
                from: tc,
                coordinator: self.handle.doorbells[0].clone(),
                backlog: Vec::new(),
            }));
        }
        let shell = Shell::new(ShellArgs {
            coord,
            to,
            from,
            dir: dir.clone(),
            doorbell: self.handle.doorbells[0].clone(),
            savepoint: self.savepoint.clone(),
            max_key_groups: self.graph.max_key_groups(),
            sources: self.graph.sources(),
            retained: cfg.retained,
            remote: remote_url,
            global,
        });
        links[0] = Some(Link::Coordinator(Box::new(shell)));
        let shards = links
            .into_iter()
            .map(|l| {
                Some(ShardCkpt {
                    dir: dir.clone(),
                    config: cfg.clone(),
                    link: l.expect("a link per core"),
                    restore: restore.clone(),
                })
            })
            .collect();
        Ok((shards, restored.map(|r| r.0)))
    }

    /// A handle that stops this job from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.handle.clone()
    }

    /// Runs the job to the end of its input (or until stopped) and reports.
    pub fn run(self) -> Result<JobReport> {
        // The clock starts first, so that the report's time to first output counts the
        // start-up checks and the restore.
        let clock = MonotonicClock::new(Instant::now());
        preflight(&self.spec)?;
        let placement: Arc<[usize]> = self.spec.placement(self.graph.max_parallelism())?.into();
        let mut endpoints = self.make_rings(&placement);
        let (mut ckpts, restored) = self.prepare_checkpoints(clock)?;
        let listener = self.bind_metrics()?;
        let threshold_ms = self
            .spec
            .job
            .diagnostics
            .clone()
            .unwrap_or_default()
            .stall_threshold_ms;
        let threshold = (threshold_ms > 0).then(|| Duration::from_millis(threshold_ms));
        let publish_ns = listener
            .as_ref()
            .map(|_| self.spec.job.metrics.clone().unwrap_or_default().publish_ms * 1_000_000);
        let shared = Arc::new(Shared {
            clock,
            ready: AtomicUsize::new(0),
            start_ns: Arc::new(AtomicU64::new(0)),
            probes: (0..self.spec.cores.len())
                .map(|_| Arc::new(CoreProbe::default()))
                .collect(),
            trace_operators: threshold.is_some(),
            publish_ns,
            cores: self.spec.cores.len(),
            handle: self.handle.clone(),
        });
        let monitor = Monitor::start(MonitorArgs {
            probes: shared.probes.clone(),
            cpus: self.spec.cores.iter().map(|c| c.cpu.0).collect(),
            names: self.graph.nodes.iter().map(|n| n.name.clone()).collect(),
            threshold,
            listener,
            clock,
            start_ns: shared.start_ns.clone(),
            handle: self.monitor.clone(),
        })
        .map_err(|e| EngineError::Executor {
            core: self.spec.cores[0].cpu,
            reason: format!("starting the monitor thread: {e}"),
        })?;
        if let Some(addr) = self.monitor.metrics_addr() {
            tracing::info!("metrics: http://{addr}/metrics");
        }
        let started = Instant::now();
        let mut handles = Vec::with_capacity(self.spec.cores.len());
        let mut shard_started = Vec::with_capacity(self.spec.cores.len());
        for (i, core) in self.spec.cores.iter().enumerate() {
            let cfg = core.config.clone();
            let args = ShardArgs {
                index: i,
                spec: self.spec.clone(),
                graph: self.graph.clone(),
                placement: placement.clone(),
                endpoints: std::mem::take(&mut endpoints[i]),
                shared: shared.clone(),
                ckpt: ckpts[i].take(),
            };
            let builder = LocalExecutorBuilder::new(Placement::Fixed(core.cpu.0))
                .name(&format!("rill-{}", core.cpu))
                .spin_before_park(cfg.spin_before_park())
                .ring_depth(cfg.io_uring_depth)
                .io_memory(cfg.io_memory_kib * 1024)
                .preempt_timer(Duration::from_micros(cfg.preempt_timer_us));
            let guard = CoreGuard {
                handle: self.handle.clone(),
                started: Arc::new(AtomicBool::new(false)),
                returned: std::cell::Cell::new(false),
            };
            shard_started.push(guard.started.clone());
            let spawned = builder.spawn(move || async move {
                guard.started.store(true, Ordering::SeqCst);
                let r = shard::run(args).await;
                guard.returned.set(true);
                r
            });
            match spawned {
                Ok(h) => handles.push((core, h)),
                Err(e) => {
                    self.handle.abort();
                    for (_, h) in handles {
                        let _ = h.join();
                    }
                    return Err(EngineError::Executor {
                        core: core.cpu,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let mut reports = Vec::new();
        let mut first_error: Option<EngineError> = None;
        for ((core, h), shard_started) in handles.into_iter().zip(shard_started) {
            let result = h.join().map_err(|e| {
                if shard_started.load(Ordering::SeqCst) {
                    EngineError::Executor {
                        core: core.cpu,
                        reason: e.to_string(),
                    }
                } else {
                    EngineError::Preflight {
                        problem: format!(
                            "the executor for {} ({}) could not start: {e}",
                            core.cpu,
                            core.file.display()
                        ),
                        fix: "see the panic or error above; check io_uring_depth and \
                              io_memory_kib of that core file against the machine"
                            .into(),
                    }
                }
            });
            match result.and_then(|r| r) {
                Ok(report) => reports.push(report),
                // A shard that stopped because another failed reports `Stopped`; the
                // first real failure is the one to tell.
                Err(EngineError::Stopped) => {}
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        let seen = monitor.finish();
        if let Some(e) = first_error {
            return Err(e);
        }
        if reports.len() != self.spec.cores.len() {
            return Err(EngineError::Stopped);
        }
        let start_ns = shared.start_ns.load(Ordering::SeqCst);
        let elapsed = Duration::from_nanos(shared.clock.now_ns().saturating_sub(start_ns))
            .min(started.elapsed());
        let first = reports
            .iter()
            .map(|r| r.first_arrival_ns)
            .filter(|t| *t > 0)
            .min();
        let mut report = JobReport::merge(reports, start_ns, elapsed, self.handle.is_stopped());
        report.restored_from = restored;
        report.first_output = first.map(Duration::from_nanos);
        report.monitor = seen;
        Ok(report)
    }

    /// One ring per exchange per (producing core, consuming core) pair of different
    /// cores, sized by the consuming core's `ring_capacity`.
    fn make_rings(&self, placement: &[usize]) -> Vec<CoreEndpoints> {
        let mut endpoints: Vec<CoreEndpoints> = (0..self.spec.cores.len())
            .map(|_| CoreEndpoints::default())
            .collect();
        for (id, node) in self.graph.nodes.iter().enumerate() {
            let Some(x) = &node.exchange else { continue };
            let producers = self.graph.cores_of(node.upstreams[0], placement);
            let consumers = self.graph.cores_of(id, placement);
            for &a in &producers {
                for &b in &consumers {
                    if a == b {
                        continue;
                    }
                    let (p, c) = x.make_ring(self.spec.cores[b].config.ring_capacity);
                    endpoints[a].producers.insert((id, b), p);
                    endpoints[b].consumers.insert((id, a), c);
                }
            }
        }
        endpoints
    }
}

/// Ends the whole job when a core's executor thread ends without its shard returning:
/// glommio failed to start the executor (an error, or a panic such as the one it raises
/// when the io_uring memory cannot be allocated) or the shard unwound. It lives in the
/// closure glommio runs the shard from, so it is dropped on every way out of the thread.
/// Without it the other cores would wait forever at the start-up rendezvous, or for this
/// core's end-of-stream.
struct CoreGuard {
    handle: StopHandle,
    /// Set once the executor runs the shard: a failure before is a failure to start.
    started: Arc<AtomicBool>,
    /// Set when the shard returned (with its own result; it aborts on its own errors).
    returned: std::cell::Cell<bool>,
}

impl Drop for CoreGuard {
    fn drop(&mut self) {
        if !self.returned.get() {
            self.handle.abort();
        }
    }
}

/// One core's share of checkpointing, handed to its executor.
pub(crate) struct ShardCkpt {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) config: CheckpointConfig,
    pub(crate) link: Link,
    pub(crate) restore: Option<Arc<Restore>>,
}

/// What one executor receives.
pub(crate) struct ShardArgs {
    pub(crate) index: usize,
    pub(crate) spec: JobSpec,
    pub(crate) graph: Arc<JobGraph>,
    pub(crate) placement: Arc<[usize]>,
    pub(crate) endpoints: CoreEndpoints,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ckpt: Option<ShardCkpt>,
}

impl ShardArgs {
    fn instantiate_args<'a>(
        &'a mut self,
        metrics: MetricsHandle,
        ckpt: Option<CkptCtx>,
        core_ids: &'a [CoreId],
        probe: Option<Arc<CoreProbe>>,
    ) -> InstantiateArgs<'a> {
        let core = &self.spec.cores[self.index];
        InstantiateArgs {
            graph: &self.graph,
            core: self.index,
            core_id: core.cpu,
            config: &core.config,
            placement: Rc::from(&self.placement[..]),
            endpoints: std::mem::take(&mut self.endpoints),
            doorbells: &self.shared.handle.doorbells,
            job_dir: &self.spec.dir,
            clock: self.shared.clock,
            metrics,
            stop: self.shared.handle.stop.clone(),
            core_ids,
            ckpt,
            probe,
        }
    }
}
