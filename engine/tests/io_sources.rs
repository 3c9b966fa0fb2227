//! Sources and sinks that wait for IO on their core, in whole jobs on (up to) 2 cores:
//! a TCP source whose lines come from a slow test server over loopback (received
//! through the core's io_uring), and a transactional sink whose writes are acknowledged
//! by another thread after a delay. Written as a user crate would write them: only
//! public items of `rill_engine`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use rill_engine::checkpoint::restore::StartFrom;
use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::connectors::{FileSink, Generator};
use rill_engine::dataflow::{
    AsyncSink, AsyncSinkPartition, AsyncSource, AsyncSourcePartition, IoCx, Out, PartitionContext,
    Pipeline, RecoverContext, SourcePoll,
};
use rill_engine::ids::CheckpointId;
use rill_engine::runtime::{supervise, Control, Job};
use rill_engine::{EngineError, Result};

/// Jobs pin executors to the same CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

fn spec(dir: &Path, job: &str) -> JobSpec {
    let job: JobConfig = toml::from_str(job).unwrap();
    JobSpec::with_cores(dir, job, &cpus(), CoreConfig::default())
}

fn io_err(op: &'static str, e: std::io::Error) -> EngineError {
    EngineError::io(op, Path::new("tcp-test-source"), e)
}

// ---------------------------------------------------------------------------------
// The server: lines "<seq>\n" for seq in FROM..total, paced by a function of seq.
// ---------------------------------------------------------------------------------

/// A line server on loopback. A client sends `FROM <n>\n` and gets lines `n..total`,
/// each after `pace(seq)` returned, then EOF. Every connection has its own thread.
struct LineServer {
    addr: SocketAddr,
}

impl LineServer {
    fn start(total: u64, pace: Arc<dyn Fn(u64) + Send + Sync>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let pace = pace.clone();
                std::thread::spawn(move || serve(conn, total, &*pace));
            }
        });
        Self { addr }
    }
}

fn serve(conn: TcpStream, total: u64, pace: &(dyn Fn(u64) + Send + Sync)) {
    conn.set_nodelay(true).unwrap();
    let mut first = String::new();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let from: u64 = first
        .trim()
        .strip_prefix("FROM ")
        .and_then(|n| n.parse().ok())
        .expect("the client says where to start");
    let mut conn = conn;
    for seq in from..total {
        pace(seq);
        if conn.write_all(format!("{seq}\n").as_bytes()).is_err() {
            return; // The job went away (a restart): the client reconnects.
        }
    }
}

// ---------------------------------------------------------------------------------
// The source: replayable by sequence number, like a log with offsets.
// ---------------------------------------------------------------------------------

type Recv = Pin<Box<dyn Future<Output = (std::io::Result<usize>, Vec<u8>)>>>;

/// The lines of a `LineServer`, as `u64`s, through the core's io_uring.
struct TcpLines {
    addr: SocketAddr,
}

struct TcpLinesPartition {
    // Declared before `stream`: a receive in flight is dropped (abandoned) first.
    recv: Option<Recv>,
    stream: Option<TcpStream>,
    addr: SocketAddr,
    /// The next sequence number to emit (the offset).
    next: u64,
    buf: Vec<u8>,
    eof: bool,
}

impl AsyncSource<u64> for TcpLines {
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> Result<Box<dyn AsyncSourcePartition<u64>>> {
        assert_eq!(ctx.parallelism, 1, "one connection");
        Ok(Box::new(TcpLinesPartition {
            recv: None,
            stream: None,
            addr: self.addr,
            next: 0,
            buf: Vec::new(),
            eof: false,
        }))
    }
}

impl AsyncSourcePartition<u64> for TcpLinesPartition {
    fn poll_next(
        &mut self,
        cx: &mut IoCx<'_>,
        max: usize,
        out: &mut Out<'_, u64>,
    ) -> Result<SourcePoll> {
        if self.stream.is_none() {
            // Connecting and the request line are one-off blocking calls on loopback.
            let mut s = TcpStream::connect(self.addr).map_err(|e| io_err("connect", e))?;
            s.write_all(format!("FROM {}\n", self.next).as_bytes())
                .map_err(|e| io_err("send", e))?;
            self.stream = Some(s);
        }
        loop {
            let mut emitted = 0;
            while emitted < max {
                let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
                    break;
                };
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let seq: u64 = std::str::from_utf8(&line[..nl])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("the server sends numbers");
                assert_eq!(seq, self.next, "lines arrive in order");
                self.next += 1;
                out.emit(seq);
                emitted += 1;
            }
            if emitted > 0 {
                return Ok(SourcePoll::Emitted(emitted));
            }
            if self.eof {
                return Ok(SourcePoll::Done);
            }
            if self.recv.is_none() {
                let uring = cx.uring()?;
                let fd = self.stream.as_ref().expect("connected above").as_raw_fd();
                self.recv = Some(Box::pin(async move { uring.recv(fd, vec![0; 4096]).await }));
            }
            let recv = self.recv.as_mut().expect("started above");
            let Poll::Ready((n, buf)) = recv.as_mut().poll(cx.context()) else {
                // The receive's completion wakes this partition (and its core).
                return Ok(SourcePoll::Pending);
            };
            self.recv = None;
            let n = n.map_err(|e| io_err("recv", e))?;
            if n == 0 {
                self.eof = true;
            }
            self.buf.extend_from_slice(&buf[..n]);
        }
    }

    fn offset(&self) -> u64 {
        self.next
    }

    fn seek(&mut self, offset: u64) -> Result<()> {
        self.recv = None;
        self.stream = None;
        self.buf.clear();
        self.eof = false;
        self.next = offset;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Measuring the core's thread.
// ---------------------------------------------------------------------------------

/// The thread id of the core the TCP source runs on (set by a chained map).
static SOURCE_TID: AtomicI64 = AtomicI64::new(0);

fn note_tid() {
    // /proc/thread-self resolves to /proc/<pid>/task/<tid> of the calling thread.
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    let tid: i64 = link
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("/proc/thread-self names the thread id");
    SOURCE_TID.store(tid, Ordering::SeqCst);
}

/// CPU time (user + system) of thread `tid` of this process, ns.
fn thread_cpu_ns(tid: i64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at state (3rd).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = 100; // USER_HZ, fixed at 100 on Linux for /proc.
    ticks * 1_000_000_000 / hz
}

fn read_out(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for f in rill_engine::connectors::committed_files(dir).unwrap() {
        v.extend(
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    v
}

/// The TCP source waits for data while the generator on the same core runs: the server
/// withholds everything after line 0 until every generator record went through the
/// core, which can only happen if the waiting source leaves the core to the other
/// partition (a blocking receive would hold the core until the server gave up, a minute
/// later, and the test would fail). Then the lines trickle in and the source's core
/// must sleep in between: its CPU time over that phase stays far below the wall time.
#[test]
fn a_waiting_tcp_source_leaves_its_core_to_the_other_partition_and_sleeps() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const GEN: u64 = 20_000;
    const LINES: u64 = 40;
    static GEN_SEEN: AtomicU64 = AtomicU64::new(0);
    GEN_SEEN.store(0, Ordering::SeqCst);
    SOURCE_TID.store(0, Ordering::SeqCst);
    let gave_up = Arc::new(AtomicBool::new(false));
    // (cpu ns, wall ns) of the source's core over the trickling phase.
    let measured = Arc::new(Mutex::new(None::<(u64, u64)>));
    let pace = {
        let (gave_up, measured) = (gave_up.clone(), measured.clone());
        let start = Mutex::new(None::<(u64, Instant)>);
        Arc::new(move |seq: u64| {
            if seq == 1 {
                let t0 = Instant::now();
                while GEN_SEEN.load(Ordering::SeqCst) < GEN
                    || SOURCE_TID.load(Ordering::SeqCst) == 0
                {
                    if t0.elapsed() > Duration::from_secs(60) {
                        gave_up.store(true, Ordering::SeqCst);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let tid = SOURCE_TID.load(Ordering::SeqCst);
                *start.lock().unwrap() = Some((thread_cpu_ns(tid), Instant::now()));
            }
            if seq >= 1 {
                std::thread::sleep(Duration::from_millis(25));
            }
            if seq == LINES - 1 {
                let (cpu0, t0) = start.lock().unwrap().expect("phase two started");
                let cpu = thread_cpu_ns(SOURCE_TID.load(Ordering::SeqCst)) - cpu0;
                *measured.lock().unwrap() = Some((cpu, t0.elapsed().as_nanos() as u64));
            }
        }) as Arc<dyn Fn(u64) + Send + Sync>
    };
    let server = LineServer::start(LINES, pace);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    let p = Pipeline::new(spec.job.max_key_groups);
    let tcp = p
        .source("tcp", TcpLines { addr: server.addr })
        .parallelism(1)
        .map("tcp-core", |seq: u64| {
            note_tid();
            format!("t{seq}")
        });
    // Partition 0 of both sources: placed on the same core.
    let gen = p
        .source("gen", Generator::new(100_000, GEN, 0, |t| t.seq))
        .parallelism(1)
        .map("gen-seen", |seq: u64| {
            GEN_SEEN.fetch_add(1, Ordering::SeqCst);
            format!("g{seq}")
        });
    tcp.union("both", &gen)
        .sink("out", FileSink::lines("out"))
        .parallelism(1);
    let graph = p.build(spec.default_parallelism()).unwrap();
    Job::new(spec, graph).run().unwrap();

    assert!(
        !gave_up.load(Ordering::SeqCst),
        "the generator's records did not get through while the TCP source waited: \
         the waiting source blocked its core"
    );
    let mut got = read_out(&dir.path().join("out"));
    got.sort();
    let mut want: Vec<String> = (0..LINES)
        .map(|s| format!("t{s}"))
        .chain((0..GEN).map(|s| format!("g{s}")))
        .collect();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert_eq!(
        got, want,
        "every line and every generated record exactly once"
    );
    let (cpu, wall) = measured.lock().unwrap().expect("measured");
    eprintln!(
        "source core over the trickle: cpu {:.1} ms of wall {:.1} ms",
        cpu as f64 / 1e6,
        wall as f64 / 1e6
    );
    // A core that spun or polled while waiting would use about all of the wall time.
    assert!(
        cpu * 4 < wall,
        "the waiting source's core used {cpu} ns of CPU in {wall} ns: it did not sleep"
    );
}

// ---------------------------------------------------------------------------------
// A transactional sink whose writes another thread acknowledges after a delay.
// ---------------------------------------------------------------------------------

/// What the remote side holds: every transaction with its records, the checkpoint it
/// was prepared for, whether it was committed, and the epoch that fences old writers.
#[derive(Default)]
struct Store {
    epoch: u64,
    /// By (partition, txn).
    txns: BTreeMap<(u32, u64), Txn>,
    /// Writes that found their transaction fenced.
    fenced: u64,
}

/// One transaction on the remote side.
#[derive(Default)]
struct Txn {
    records: Vec<u64>,
    /// The checkpoint it was prepared for.
    prepared: Option<u64>,
    committed: bool,
}

enum Req {
    Write {
        part: u32,
        txn: u64,
        epoch: u64,
        records: Vec<u64>,
    },
    Prepare {
        part: u32,
        txn: u64,
        epoch: u64,
        checkpoint: u64,
    },
    Commit {
        part: u32,
        epoch: u64,
        upto: u64,
    },
}

/// The remote service: one thread, requests in order, each acknowledged after `delay`
/// by calling the requester's waker.
#[derive(Clone)]
struct Remote {
    store: Arc<Mutex<Store>>,
    tx: mpsc::Sender<(Req, Arc<AtomicBool>, Waker)>,
}

impl Remote {
    fn start(delay: Duration) -> Self {
        let store = Arc::new(Mutex::new(Store::default()));
        let (tx, rx) = mpsc::channel::<(Req, Arc<AtomicBool>, Waker)>();
        let s = store.clone();
        std::thread::spawn(move || {
            for (req, done, waker) in rx {
                std::thread::sleep(delay);
                let mut st = s.lock().unwrap();
                let current = st.epoch;
                match req {
                    Req::Write {
                        part,
                        txn,
                        epoch,
                        records,
                    } => {
                        if epoch == current {
                            st.txns
                                .entry((part, txn))
                                .or_default()
                                .records
                                .extend(records);
                        } else {
                            st.fenced += 1;
                        }
                    }
                    Req::Prepare {
                        part,
                        txn,
                        epoch,
                        checkpoint,
                    } => {
                        if epoch == current {
                            st.txns.entry((part, txn)).or_default().prepared = Some(checkpoint);
                        } else {
                            st.fenced += 1;
                        }
                    }
                    Req::Commit { part, epoch, upto } => {
                        if epoch == current {
                            for ((p, _), t) in st.txns.iter_mut() {
                                if *p == part && t.prepared.is_some_and(|c| c <= upto) {
                                    t.committed = true;
                                }
                            }
                        } else {
                            st.fenced += 1;
                        }
                    }
                }
                drop(st);
                done.store(true, Ordering::SeqCst);
                waker.wake();
            }
        });
        Self { store, tx }
    }

    /// The records of committed transactions.
    fn committed(&self) -> Vec<u64> {
        let st = self.store.lock().unwrap();
        st.txns
            .values()
            .filter(|t| t.committed)
            .flat_map(|t| t.records.iter().copied())
            .collect()
    }
}

/// A two-phase-commit sink on `Remote`: at most one request in flight per partition,
/// records batched while it is.
struct RemoteSink {
    remote: Remote,
    /// `poll_ready` returned `Pending` (backpressure) this many times.
    stalls: Arc<AtomicU64>,
}

struct RemotePartition {
    remote: Remote,
    part: u32,
    epoch: u64,
    txn: u64,
    batch: Vec<u64>,
    in_flight: Option<Arc<AtomicBool>>,
    /// The request after the writes at a barrier: (checkpoint, sent).
    preparing: Option<(u64, bool)>,
    committing: Option<(u64, bool)>,
    stalls: Arc<AtomicU64>,
}

const BATCH: usize = 8;

impl AsyncSink<u64> for RemoteSink {
    fn open_partition(
        &self,
        ctx: &PartitionContext<'_>,
    ) -> Result<Box<dyn AsyncSinkPartition<u64>>> {
        assert!(ctx.transactional, "the test runs with checkpoints");
        let epoch = self.remote.store.lock().unwrap().epoch;
        Ok(Box::new(RemotePartition {
            remote: self.remote.clone(),
            part: ctx.partition.0,
            epoch,
            txn: 0,
            batch: Vec::new(),
            in_flight: None,
            preparing: None,
            committing: None,
            stalls: self.stalls.clone(),
        }))
    }

    fn recover_output(&self, ctx: &RecoverContext<'_>) -> Result<()> {
        // Fence the writers of the earlier attempt, commit what the restored checkpoint
        // prepared, drop everything else (the restore produces it again).
        let mut st = self.remote.store.lock().unwrap();
        st.epoch += 1;
        let restored = ctx.restored.map(|c| c.0);
        st.txns.retain(|_, t| {
            let keep = t.prepared.is_some_and(|c| restored.is_some_and(|r| c <= r));
            if keep {
                t.committed = true;
            }
            keep || t.committed
        });
        Ok(())
    }
}

impl RemotePartition {
    /// Whether the request in flight (if any) was acknowledged; clears it.
    fn acked(&mut self) -> bool {
        match &self.in_flight {
            None => true,
            Some(done) if done.load(Ordering::SeqCst) => {
                self.in_flight = None;
                true
            }
            Some(_) => false,
        }
    }

    fn send(&mut self, req: Req, cx: &IoCx<'_>) {
        let done = Arc::new(AtomicBool::new(false));
        self.in_flight = Some(done.clone());
        self.remote
            .tx
            .send((req, done, cx.waker().clone()))
            .expect("the remote runs");
    }

    fn send_batch(&mut self, cx: &IoCx<'_>) {
        let records = std::mem::take(&mut self.batch);
        let req = Req::Write {
            part: self.part,
            txn: self.txn,
            epoch: self.epoch,
            records,
        };
        self.send(req, cx);
    }
}

impl AsyncSinkPartition<u64> for RemotePartition {
    fn poll_ready(&mut self, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        if self.batch.len() < BATCH {
            return Poll::Ready(Ok(()));
        }
        if !self.acked() {
            self.stalls.fetch_add(1, Ordering::Relaxed);
            return Poll::Pending; // The acknowledgement wakes us.
        }
        self.send_batch(cx);
        Poll::Ready(Ok(()))
    }

    fn write(&mut self, rec: u64) -> Result<()> {
        assert!(self.preparing.is_none(), "no write during a pre-commit");
        self.batch.push(rec);
        Ok(())
    }

    fn poll_pre_commit(
        &mut self,
        id: CheckpointId,
        cx: &mut IoCx<'_>,
    ) -> Poll<Result<Vec<std::fs::File>>> {
        if self.preparing.is_none() {
            self.preparing = Some((id.0, false));
        }
        loop {
            if !self.acked() {
                return Poll::Pending;
            }
            if !self.batch.is_empty() {
                self.send_batch(cx);
                continue;
            }
            match self.preparing {
                Some((c, false)) => {
                    let req = Req::Prepare {
                        part: self.part,
                        txn: self.txn,
                        epoch: self.epoch,
                        checkpoint: c,
                    };
                    self.send(req, cx);
                    self.preparing = Some((c, true));
                }
                Some((_, true)) => {
                    // Prepared: later records go to the next transaction.
                    self.preparing = None;
                    self.txn += 1;
                    return Poll::Ready(Ok(Vec::new()));
                }
                None => unreachable!("set above"),
            }
        }
    }

    fn poll_commit(&mut self, id: CheckpointId, cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        loop {
            if !self.acked() {
                return Poll::Pending;
            }
            match self.committing {
                None => {
                    let req = Req::Commit {
                        part: self.part,
                        epoch: self.epoch,
                        upto: id.0,
                    };
                    self.send(req, cx);
                    self.committing = Some((id.0, true));
                }
                Some(_) => {
                    self.committing = None;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    fn poll_finish(&mut self, _cx: &mut IoCx<'_>) -> Poll<Result<()>> {
        // Everything was pre-committed at the final barrier.
        assert!(self.batch.is_empty(), "records after the final barrier");
        if !self.acked() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

/// A TCP source and a remote two-phase-commit sink with their IO in flight across
/// checkpoints; the job fails once in the middle and restarts from its newest
/// checkpoint: the source seeks (reconnects from its offset), the sink's earlier writers
/// are fenced and what the restored checkpoint prepared is committed. The committed
/// output holds every line exactly once, and the sink applied backpressure while its
/// writes were in flight.
#[test]
fn io_in_flight_across_checkpoints_and_a_restore_keeps_output_exactly_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const LINES: u64 = 3_000;
    static ARMED: AtomicBool = AtomicBool::new(true);
    ARMED.store(true, Ordering::SeqCst);
    // Bursts of 100 lines, 5 ms apart: the source waits between them with a receive in
    // flight, and checkpoints (every 20 ms) fall in those waits.
    let pace: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(|seq: u64| {
        if seq % 100 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let server = LineServer::start(LINES, pace);
    let remote = Remote::start(Duration::from_millis(1));
    let stalls = Arc::new(AtomicU64::new(0));
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "[checkpoint]\ninterval_ms = 20\n[restart]\nstrategy = \"fixed-delay\"\nattempts = 2\ndelay_ms = 10\n",
    );
    let addr = server.addr;
    let (remote2, stalls2) = (remote.clone(), stalls.clone());
    let build = move |spec: &JobSpec| {
        let p = Pipeline::new(spec.job.max_key_groups);
        p.source("tcp", TcpLines { addr })
            .parallelism(1)
            .map("maybe-fail", |seq: u64| {
                if seq == 2_000 && ARMED.swap(false, Ordering::SeqCst) {
                    panic!("injected failure at line {seq}");
                }
                seq
            })
            .key_by("by-line", |s: &u64| *s)
            .process("identity", |_init| {
                move |_ctx, s: u64, out: &mut Out<'_, u64>| out.emit(s)
            })
            .sink(
                "remote",
                RemoteSink {
                    remote: remote2.clone(),
                    stalls: stalls2.clone(),
                },
            );
        p.build(spec.default_parallelism())
    };
    let report = supervise(
        &spec,
        &build,
        StartFrom::Newest,
        &Control::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(report.restarts, 1, "the injected failure restarted the job");
    assert!(
        report.restored_from.is_some(),
        "the restart restored a checkpoint"
    );
    let mut got = remote.committed();
    got.sort_unstable();
    let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
    let missing = (0..LINES).filter(|s| got.binary_search(s).is_err()).count();
    assert_eq!((missing, dups), (0, 0), "nothing lost, nothing duplicated");
    assert_eq!(got, (0..LINES).collect::<Vec<_>>());
    assert!(
        stalls.load(Ordering::Relaxed) > 0,
        "the sink never had to wait for a write in flight"
    );
}
