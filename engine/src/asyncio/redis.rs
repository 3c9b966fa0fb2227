//! A Redis client on the core's own io_uring: one pipelined connection per core (every
//! async partition on the core shares it), RESP2 encoded and decoded here, `GET`, `HGET`
//! and `HMGET`. Requests are written back to back; replies come back in request order and
//! are matched to the oldest waiting request. Driven entirely by the futures of the
//! requests (the connection has no task of its own): whichever request is polled submits
//! the pending sends and the next receive; completions wake the oldest waiting request.
//! Connecting uses a plain blocking `connect` once, when the partition is created.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use rill_storage::Uring;

use super::AsyncError;

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` (None: the null bulk string, a missing key).
    Bulk(Option<Vec<u8>>),
    /// `*n` (None: the null array).
    Array(Option<Vec<Reply>>),
}

/// Appends `args` as one RESP command.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes one reply from the front of `buf`: `Ok(Some((reply, used)))`, `Ok(None)` when
/// more bytes are needed, `Err` on a protocol violation.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err("an empty reply line".into());
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let int = || -> Result<i64, String> {
        text()
            .parse::<i64>()
            .map_err(|_| format!("not a number: {:?}", text()))
    };
    let head = end + 2;
    match kind {
        b'+' => Ok(Some((Reply::Simple(text()), head))),
        b'-' => Ok(Some((Reply::Error(text()), head))),
        b':' => Ok(Some((Reply::Int(int()?), head))),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), head)));
            }
            let n = n as usize;
            if buf.len() < head + n + 2 {
                return Ok(None);
            }
            Ok(Some((
                Reply::Bulk(Some(buf[head..head + n].to_vec())),
                head + n + 2,
            )))
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), head)));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = head;
            for _ in 0..n {
                match decode(&buf[at..])? {
                    None => return Ok(None),
                    Some((r, used)) => {
                        items.push(r);
                        at += used;
                    }
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(format!("unknown reply type byte {other:#x}")),
    }
}

type IoFut = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

struct Waiting {
    reply: Option<Result<Reply, String>>,
    waker: Option<Waker>,
    /// The request's future was dropped (timed out): its reply is read and discarded.
    abandoned: bool,
}

struct Conn {
    stream: TcpStream,
    uring: Rc<Uring>,
    out: Vec<u8>,
    sending: Option<IoFut>,
    receiving: Option<IoFut>,
    inbuf: Vec<u8>,
    /// Requests whose replies have not been read, oldest first (replies come in order).
    order: VecDeque<u64>,
    /// Every request not yet taken by its future (or abandoned and not yet answered).
    slots: HashMap<u64, Waiting>,
    next_id: u64,
    broken: Option<String>,
}

/// Wakes the oldest waiting request when a socket operation completes.
struct ConnWake(Mutex<Option<Waker>>);

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        if let Some(w) = self.0.lock().expect("conn waker").take() {
            w.wake();
        }
    }
}

/// One core's pipelined connection. Cheap to clone within the core.
#[derive(Clone)]
pub struct RedisClient {
    conn: Rc<RefCell<Conn>>,
    wake: Arc<ConnWake>,
}

impl RedisClient {
    /// Connects to `addr` (blocking, once) and drives the connection on `uring`.
    pub fn connect(addr: &str, uring: Rc<Uring>) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            conn: Rc::new(RefCell::new(Conn {
                stream,
                uring,
                out: Vec::new(),
                sending: None,
                receiving: None,
                inbuf: Vec::new(),
                order: VecDeque::new(),
                slots: HashMap::new(),
                next_id: 0,
                broken: None,
            })),
            wake: Arc::new(ConnWake(Mutex::new(None))),
        })
    }

    /// Sends one command; resolves with its reply.
    pub fn command(&self, args: &[&[u8]]) -> Request {
        let mut c = self.conn.borrow_mut();
        encode(args, &mut c.out);
        let id = c.next_id;
        c.next_id += 1;
        c.order.push_back(id);
        c.slots.insert(
            id,
            Waiting {
                reply: None,
                waker: None,
                abandoned: false,
            },
        );
        Request {
            client: self.clone(),
            id,
            done: false,
        }
    }

    /// `GET key`.
    pub fn get(&self, key: &[u8]) -> Request {
        self.command(&[b"GET", key])
    }

    /// `HGET key field`.
    pub fn hget(&self, key: &[u8], field: &[u8]) -> Request {
        self.command(&[b"HGET", key, field])
    }

    /// `HMGET key field…`.
    pub fn hmget(&self, key: &[u8], fields: &[&[u8]]) -> Request {
        let mut args: Vec<&[u8]> = vec![b"HMGET", key];
        args.extend_from_slice(fields);
        self.command(&args)
    }

    /// Requests whose replies have not arrived.
    pub fn pending(&self) -> usize {
        self.conn.borrow().order.len()
    }

    /// Moves the connection forward: submits what is to send, reads and matches replies.
    fn drive(&self) {
        let waker = Waker::from(self.wake.clone());
        let mut cx = Context::from_waker(&waker);
        let mut c = self.conn.borrow_mut();
        let fd = c.stream.as_raw_fd();
        loop {
            if c.broken.is_some() {
                break;
            }
            if let Some(f) = c.sending.as_mut() {
                match f.as_mut().poll(&mut cx) {
                    Poll::Pending => break,
                    Poll::Ready((Ok(n), mut buf)) => {
                        c.sending = None;
                        if n < buf.len() {
                            buf.drain(..n);
                            buf.extend_from_slice(&c.out);
                            c.out = buf;
                        }
                    }
                    Poll::Ready((Err(e), _)) => c.broken = Some(format!("send: {e}")),
                }
            } else if !c.out.is_empty() {
                let buf = std::mem::take(&mut c.out);
                let u = c.uring.clone();
                c.sending = Some(Box::pin(async move { u.send(fd, buf).await }));
            } else {
                break;
            }
        }
        loop {
            if c.broken.is_some() || c.order.is_empty() {
                break;
            }
            if let Some(f) = c.receiving.as_mut() {
                match f.as_mut().poll(&mut cx) {
                    Poll::Pending => break,
                    Poll::Ready((Ok(0), _)) => c.broken = Some("the server closed".into()),
                    Poll::Ready((Ok(n), buf)) => {
                        c.receiving = None;
                        c.inbuf.extend_from_slice(&buf[..n]);
                        let mut at = 0;
                        loop {
                            match decode(&c.inbuf[at..]) {
                                Ok(None) => break,
                                Ok(Some((r, used))) => {
                                    at += used;
                                    let Some(id) = c.order.pop_front() else {
                                        c.broken = Some("a reply nobody asked for".into());
                                        break;
                                    };
                                    let abandoned = c.slots.get(&id).map_or(true, |w| w.abandoned);
                                    if abandoned {
                                        c.slots.remove(&id);
                                    } else if let Some(w) = c.slots.get_mut(&id) {
                                        w.reply = Some(Ok(r));
                                        if let Some(wk) = w.waker.take() {
                                            wk.wake();
                                        }
                                    }
                                }
                                Err(e) => {
                                    c.broken = Some(format!("protocol: {e}"));
                                    break;
                                }
                            }
                        }
                        c.inbuf.drain(..at);
                    }
                    Poll::Ready((Err(e), _)) => c.broken = Some(format!("recv: {e}")),
                }
            } else {
                let u = c.uring.clone();
                let buf = vec![0u8; 64 * 1024];
                c.receiving = Some(Box::pin(async move { u.recv(fd, buf).await }));
            }
        }
        if let Some(e) = c.broken.clone() {
            for w in c.slots.values_mut() {
                if w.reply.is_none() {
                    w.reply = Some(Err(e.clone()));
                    if let Some(wk) = w.waker.take() {
                        wk.wake();
                    }
                }
            }
        }
        // The next socket completion wakes the oldest request still waiting for a reply.
        let next = c
            .order
            .iter()
            .filter_map(|id| c.slots.get(id))
            .find(|w| !w.abandoned)
            .and_then(|w| w.waker.clone());
        *self.wake.0.lock().expect("conn waker") = next;
    }
}

/// One command's reply.
pub struct Request {
    client: RedisClient,
    id: u64,
    done: bool,
}

impl Future for Request {
    type Output = Result<Reply, AsyncError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        if let Some(w) = self.client.conn.borrow_mut().slots.get_mut(&id) {
            w.waker = Some(cx.waker().clone());
        }
        self.client.drive();
        let mut c = self.client.conn.borrow_mut();
        match c.slots.get(&id) {
            None => return Poll::Ready(Err(AsyncError::Service("reply lost".into()))),
            Some(w) if w.reply.is_none() => return Poll::Pending,
            Some(_) => {}
        }
        let w = c.slots.remove(&id).expect("found above");
        drop(c);
        self.done = true;
        Poll::Ready(match w.reply.expect("checked") {
            Ok(Reply::Error(e)) => Err(AsyncError::Service(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(AsyncError::Io(io::Error::other(e))),
        })
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut c = self.client.conn.borrow_mut();
        let answered = c.slots.get(&self.id).is_some_and(|w| w.reply.is_some());
        if answered {
            c.slots.remove(&self.id);
        } else if let Some(w) = c.slots.get_mut(&self.id) {
            w.abandoned = true;
            w.waker = None;
        }
    }
}
