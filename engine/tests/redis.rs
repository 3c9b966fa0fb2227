//! The Redis client on the core's io_uring against a real `redis-server` the tests start
//! on loopback (a free port, no persistence). Without `redis-server` these tests fail
//! with how to install it: they never skip silently.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rill_engine::asyncio::redis::{RedisClient, Reply};
use rill_engine::config::{available_cpus, CoreConfig, JobConfig, JobSpec};
use rill_engine::pipelines;
use rill_engine::runtime::Job;
use rill_testkit::Redis;

fn cpus() -> Vec<usize> {
    available_cpus().into_iter().take(2).collect()
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The test polls every future each round; wake-ups need not do anything.
struct Noop;

impl std::task::Wake for Noop {
    fn wake(self: std::sync::Arc<Self>) {}
}

fn b(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

#[test]
fn resp_codec_round_trips_every_reply_kind_and_waits_for_partial_input() {
    use rill_engine::asyncio::redis::decode;
    let whole = b"*3\r\n$3\r\nfoo\r\n$-1\r\n:7\r\n";
    let (r, used) = decode(whole).unwrap().unwrap();
    assert_eq!(used, whole.len());
    assert_eq!(
        r,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"foo".to_vec())),
            Reply::Bulk(None),
            Reply::Int(7)
        ]))
    );
    for cut in 0..whole.len() {
        assert_eq!(decode(&whole[..cut]).unwrap(), None, "cut at {cut}");
    }
    assert_eq!(
        decode(b"-ERR wrong\r\n").unwrap().unwrap().0,
        Reply::Error("ERR wrong".into())
    );
    assert!(decode(b"?x\r\n").is_err());
}

#[test]
fn get_hget_hmget_pipelined_on_the_cores_io_uring() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Redis::start();
    let mut cmds = Vec::new();
    for i in 0..500 {
        cmds.push(vec![b("SET"), b(format!("k{i}")), b(format!("v{i}"))]);
    }
    cmds.push(vec![
        b("HSET"),
        b("user:1"),
        b("segment"),
        b("gold"),
        b("age"),
        b("42"),
    ]);
    server.run(&cmds);

    let uring = Rc::new(rill_storage::Uring::new(64).unwrap());
    let client = RedisClient::connect(&server.addr, uring.clone()).unwrap();
    type Fut = Pin<Box<dyn Future<Output = Result<Reply, rill_engine::asyncio::AsyncError>>>>;
    let mut futs: Vec<(usize, Fut)> = (0..500)
        .map(|i| (i, Box::pin(client.get(format!("k{i}").as_bytes())) as Fut))
        .collect();
    futs.push((1000, Box::pin(client.get(b"missing"))));
    futs.push((1001, Box::pin(client.hget(b"user:1", b"segment"))));
    futs.push((1002, Box::pin(client.hmget(b"user:1", &[b"age", b"nope"]))));
    assert_eq!(client.pending(), 503, "all written back to back");
    let waker = Waker::from(std::sync::Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut got = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(30);
    while !futs.is_empty() {
        assert!(Instant::now() < give_up, "replies did not arrive");
        uring.poll();
        futs.retain_mut(|(i, f)| match f.as_mut().poll(&mut cx) {
            Poll::Ready(r) => {
                got.push((*i, r.unwrap()));
                false
            }
            Poll::Pending => true,
        });
    }
    got.sort_by_key(|g| g.0);
    for (i, r) in &got[..500] {
        assert_eq!(*r, Reply::Bulk(Some(b(format!("v{i}")))));
    }
    assert_eq!(got[500].1, Reply::Bulk(None));
    assert_eq!(got[501].1, Reply::Bulk(Some(b("gold"))));
    assert_eq!(
        got[502].1,
        Reply::Array(Some(vec![Reply::Bulk(Some(b("42"))), Reply::Bulk(None)]))
    );
}

#[test]
fn keyed_async_against_redis_looks_up_every_event() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Redis::start();
    let keys = 200;
    let cmds: Vec<_> = (0..keys)
        .map(|k| vec![b("SET"), b(format!("key:{k}")), b(format!("value-{k}"))])
        .collect();
    server.run(&cmds);
    let job: JobConfig = toml::from_str(&format!(
        "pipeline = \"keyed-async\"\n[generator]\nrate_eps = 20000\nduration_ms = 300\n\
         warmup_ms = 50\n[source]\nkeys = {keys}\n[async]\ncapacity = 50\n\
         [lookup]\nkind = \"redis\"\naddr = \"{}\"\n",
        server.addr
    ))
    .unwrap();
    job.validate(Path::new("job.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::with_cores(dir.path(), job, &cpus(), CoreConfig::default());
    let graph = pipelines::build(&spec).unwrap();
    // A missing key or a broken connection fails the job: every event was looked up.
    let r = Job::new(spec, graph).run().unwrap();
    assert_eq!(r.counter("sink_records"), 6_000);
    assert_eq!(r.counter("async_attempts"), 6_000);
}
