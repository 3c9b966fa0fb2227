//! Test fixtures shared by the integration tests of the engine and of the example jobs:
//! real servers started on loopback on a free port and stopped when dropped. Never a
//! mock: a missing server fails the test with how to install it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rill_engine::asyncio::redis::encode;

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
