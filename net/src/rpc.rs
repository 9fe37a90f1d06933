//! Internal calls over one WebSocket connection per pair of nodes.
//!
//! An internal HTTP/1.1 exchange (hyper's client, actix's server) costs both ends more than
//! twice the CPU of a message on one multiplexed connection (docs/performance.md, "What HTTP
//! costs per exchange, against a framed connection"). The writer sends every message queued
//! in one write, the reader splits what one read brought, and no request head is built or
//! parsed.
//!
//! The connection is a WebSocket (RFC 6455) opened with `GET /internal/rpc` on the node's own
//! address, the cluster secret checked like on any internal route: actix hands a handler the
//! raw connection only for a WebSocket upgrade. Each binary message is one call or one
//! answer, tagged with the call's id, so answers come back in any order. A call carries what
//! an internal HTTP request would: method, path, a few headers and a body; an answer carries
//! status, headers and body.
//!
//! Failures look as they do on an HTTP hop: a refused or failed connection fails the call at
//! once, and a broken connection fails every call waiting on it; a call without an answer
//! within its timeout fails as a timeout; the next call opens a new connection.

use actix_http::ws::{hash_key, OpCode, Parser};
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use bytes::{Buf, BufMut};
use futures::StreamExt;
use model::routing::Method;
use model::wire::SECRET;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

/// The path a connection is opened on.
pub const RPC_PATH: &str = "/internal/rpc";

/// Largest message either end accepts (a batch_init step's fan-out is about 2 MiB).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The key of the opening request; any 16 bytes in base64 will do (RFC 6455 §4.1: the key
/// shows the server understood the upgrade, and every connection of ours is to a peer).
const WS_KEY: &str = "d2Vic2hvcC1ycGMta2V5MQ==";

/// A call: what an internal HTTP request would carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// GET or POST.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// An answer: what an HTTP response would carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Why a call got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No connection could be opened (refused, timed out, upgrade refused).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The connection broke, or was closed, before the answer came.
    #[error("connection closed: {0}")]
    Closed(String),
    /// No answer within the call's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

// A message: the call id (u64), then for a call the method (u8: 0 GET, 1 POST) and the
// path (u16 length), for an answer the status (u16); then the header count (u8), each
// header's name (u8 length) and value (u16 length); the rest is the body.

fn put_headers(out: &mut BytesMut, headers: &[(String, String)]) {
    out.put_u8(headers.len() as u8);
    for (n, v) in headers {
        out.put_u8(n.len() as u8);
        out.put_slice(n.as_bytes());
        out.put_u16(v.len() as u16);
        out.put_slice(v.as_bytes());
    }
}

fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, String> {
    if buf.len() < n {
        return Err(format!("message cut short: {} bytes where {n} were due", buf.len()));
    }
    Ok(buf.split_to(n))
}

fn take_str(buf: &mut Bytes, n: usize) -> Result<String, String> {
    String::from_utf8(take(buf, n)?.to_vec()).map_err(|_| "text that is not UTF-8".to_string())
}

fn take_u8(buf: &mut Bytes) -> Result<u8, String> {
    Ok(take(buf, 1)?.get_u8())
}

fn take_u16(buf: &mut Bytes) -> Result<u16, String> {
    Ok(take(buf, 2)?.get_u16())
}

fn take_headers(buf: &mut Bytes) -> Result<Vec<(String, String)>, String> {
    let n = take_u8(buf)?;
    (0..n)
        .map(|_| {
            let name_len = take_u8(buf)? as usize;
            let name = take_str(buf, name_len)?;
            let value_len = take_u16(buf)? as usize;
            Ok((name, take_str(buf, value_len)?))
        })
        .collect()
}

fn checked(headers: &[(String, String)], path: &str) -> Result<(), String> {
    if headers.len() > u8::MAX as usize || path.len() > u16::MAX as usize {
        return Err("too many headers or too long a path".into());
    }
    match headers.iter().find(|(n, v)| n.len() > u8::MAX as usize || v.len() > u16::MAX as usize) {
        Some((n, _)) => Err(format!("header {n:.40} too long")),
        None => Ok(()),
    }
}

/// Appends call `id` to `out`; refuses what the format cannot hold.
pub fn encode_request(id: u64, r: &Request, out: &mut BytesMut) -> Result<(), String> {
    checked(&r.headers, &r.path)?;
    out.put_u64(id);
    out.put_u8(match r.method {
        Method::Get => 0,
        Method::Post => 1,
    });
    out.put_u16(r.path.len() as u16);
    out.put_slice(r.path.as_bytes());
    put_headers(out, &r.headers);
    out.put_slice(&r.body);
    Ok(())
}

/// Reads a call back.
pub fn decode_request(mut buf: Bytes) -> Result<(u64, Request), String> {
    let id = take(&mut buf, 8)?.get_u64();
    let method = match take_u8(&mut buf)? {
        0 => Method::Get,
        1 => Method::Post,
        m => return Err(format!("unknown method {m}")),
    };
    let path_len = take_u16(&mut buf)? as usize;
    let path = take_str(&mut buf, path_len)?;
    let headers = take_headers(&mut buf)?;
    Ok((id, Request { method, path, headers, body: buf }))
}

/// Appends the answer to call `id` to `out`; refuses what the format cannot hold.
pub fn encode_response(id: u64, r: &Response, out: &mut BytesMut) -> Result<(), String> {
    checked(&r.headers, "")?;
    out.put_u64(id);
    out.put_u16(r.status);
    put_headers(out, &r.headers);
    out.put_slice(&r.body);
    Ok(())
}

/// Reads an answer back.
pub fn decode_response(mut buf: Bytes) -> Result<(u64, Response), String> {
    let id = take(&mut buf, 8)?.get_u64();
    let status = take_u16(&mut buf)?;
    let headers = take_headers(&mut buf)?;
    Ok((id, Response { status, headers, body: buf }))
}

/// One message as a WebSocket binary frame (a client's frames are masked, RFC 6455 §5.3).
fn frame(message: &[u8], masked: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 14);
    Parser::write_message(&mut out, message, OpCode::Binary, true, masked);
    out.freeze()
}

/// The whole messages `buf` holds, taken off it, and whether a closing frame followed them;
/// an error for anything but whole binary messages, pings, pongs and the closing frame.
fn messages(buf: &mut BytesMut, server: bool) -> Result<(Vec<Bytes>, bool), String> {
    let mut out = Vec::new();
    loop {
        match Parser::parse(buf, server, MAX_MESSAGE).map_err(|e| e.to_string())? {
            None => return Ok((out, false)),
            Some((true, OpCode::Binary, payload)) => out.push(payload.map(BytesMut::freeze).unwrap_or_default()),
            Some((_, OpCode::Close, _)) => return Ok((out, true)),
            Some((_, OpCode::Ping | OpCode::Pong, _)) => {}
            Some((fin, op, _)) => return Err(format!("unexpected frame {op:?} (fin {fin})")),
        }
    }
}

/// Tells a node's connections to end, at shutdown: a connection that stays open would keep
/// the server's graceful stop waiting. Clones share one signal.
#[derive(Clone, Default)]
pub struct Closing(Arc<(AtomicBool, Notify)>);

impl Closing {
    /// Ends every connection served under this signal (after the calls in progress).
    pub fn close(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.0 .0.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// Serves a connection opened on `req` (the caller has checked the secret): each call is
/// answered by `answer`, on this thread, as soon as it arrives. The connection ends when the
/// client closes it or `closing` fires, after the calls in progress are answered.
pub fn serve<F, Fut>(
    req: &HttpRequest,
    mut payload: actix_web::web::Payload,
    closing: Closing,
    answer: F,
) -> HttpResponse
where
    F: Fn(Request) -> Fut + 'static,
    Fut: Future<Output = Response> + 'static,
{
    if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
        return HttpResponse::BadRequest().body(format!("rpc: {e}"));
    }
    let key = req.headers().get(actix_web::http::header::SEC_WEBSOCKET_KEY).expect("verified").as_bytes();
    let accept = hash_key(key);
    let (out, answers) = futures::channel::mpsc::unbounded::<Result<Bytes, actix_web::Error>>();
    let answer = std::rc::Rc::new(answer);
    actix_web::rt::spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            let chunk = tokio::select! {
                chunk = payload.next() => chunk,
                _ = closing.wait() => None,
            };
            let Some(Ok(chunk)) = chunk else { break };
            buf.extend_from_slice(&chunk);
            let (calls, closed) = match messages(&mut buf, true) {
                Ok(m) => m,
                Err(e) => {
                    log::warn!("rpc: {e}; closing the connection");
                    break;
                }
            };
            for message in calls {
                let (id, call) = match decode_request(message) {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("rpc: unreadable call: {e}");
                        continue;
                    }
                };
                let (answer, out) = (answer.clone(), out.clone());
                actix_web::rt::spawn(async move {
                    let response = answer(call).await;
                    let mut message = BytesMut::new();
                    if let Err(e) = encode_response(id, &response, &mut message) {
                        log::warn!("rpc: answer to call {id} not sent: {e}");
                        message.clear();
                        let failed = Response { status: 500, headers: Vec::new(), body: Bytes::from(e) };
                        encode_response(id, &failed, &mut message).expect("a bare answer encodes");
                    }
                    let _ = out.unbounded_send(Ok(frame(&message, false)));
                });
            }
            if closed {
                break;
            }
        }
        // The answers still being made hold their own senders: the stream ends after them.
    });
    HttpResponse::SwitchingProtocols()
        .upgrade("websocket")
        .insert_header((actix_web::http::header::SEC_WEBSOCKET_ACCEPT, &accept[..]))
        .streaming(answers)
}

type Waiting = HashMap<u64, oneshot::Sender<Result<Response, String>>>;

/// One open connection: calls waiting for their answers (`None` once it broke).
struct Conn {
    out: mpsc::UnboundedSender<Bytes>,
    waiting: Mutex<Option<Waiting>>,
    next: AtomicU64,
    /// Set when a call on it timed out: new calls open another connection, the calls on
    /// this one still get their answers, and it closes when the last of them is done.
    retired: AtomicBool,
}

impl Conn {
    /// Whether new calls may use it.
    fn open(&self) -> bool {
        !self.retired.load(Ordering::Relaxed) && self.waiting.lock().unwrap().is_some()
    }

    /// Marks the connection broken and fails every call waiting on it.
    fn fail_all(&self, why: &str) {
        let waiting = self.waiting.lock().unwrap().take();
        for (_, done) in waiting.into_iter().flatten() {
            let _ = done.send(Err(why.to_string()));
        }
    }

    fn forget(&self, id: u64) {
        if let Some(w) = self.waiting.lock().unwrap().as_mut() {
            w.remove(&id);
        }
    }
}

/// Forgets a call whose caller stopped waiting (timed out).
struct Forget<'a>(&'a Conn, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// A client of one node: one connection, opened on the first call and again after it
/// broke. Its tasks run on the runtime of the call that opened it.
pub struct Client {
    authority: String,
    secret: String,
    nodelay: bool,
    connect_timeout: Duration,
    current: Mutex<Option<Arc<Conn>>>,
    connecting: tokio::sync::Mutex<()>,
    /// Told whether the peer accepted the secret, each time a connection opens.
    standing: Option<crate::standing::SecretStanding>,
}

impl Client {
    /// A client of the node at `authority` (`host:port`). `nodelay` turns Nagle's algorithm
    /// off; opening a connection gives up after `connect_timeout`.
    pub fn new(authority: &str, secret: &str, nodelay: bool, connect_timeout: Duration) -> Client {
        Client {
            authority: authority.to_string(),
            secret: secret.to_string(),
            nodelay,
            connect_timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            standing: None,
        }
    }

    /// This client, telling `standing` whether the peer accepted the secret each time it
    /// opens a connection.
    pub fn reporting_to(mut self, standing: &crate::standing::SecretStanding) -> Client {
        self.standing = Some(standing.clone());
        self
    }

    /// Makes a call and waits at most `timeout` for its answer, opening the connection
    /// included.
    ///
    /// A call that times out retires the connection, as an HTTP client drops a connection
    /// whose request timed out: the peer may be gone without a word (a host that vanished
    /// sends no reset), and a new connection fails fast where the old one would time out
    /// every call; a peer that was only slow answers the calls already on their way.
    pub async fn call(&self, request: &Request, timeout: Duration) -> Result<Response, Error> {
        let result = tokio::time::timeout(timeout, self.exchange(request)).await;
        result.unwrap_or_else(|_| {
            if let Some(c) = self.current.lock().unwrap().as_ref() {
                c.retired.store(true, Ordering::Relaxed);
            }
            Err(Error::Timeout(timeout))
        })
    }

    async fn exchange(&self, request: &Request) -> Result<Response, Error> {
        let mut message = BytesMut::new();
        let conn = self.connection().await?;
        let id = conn.next.fetch_add(1, Ordering::Relaxed);
        encode_request(id, request, &mut message).map_err(Error::Closed)?;
        let (done, answered) = oneshot::channel();
        match conn.waiting.lock().unwrap().as_mut() {
            Some(w) => w.insert(id, done),
            None => return Err(Error::Closed("connection broke".into())),
        };
        let _forget = Forget(&conn, id);
        if conn.out.send(frame(&message, true)).is_err() {
            return Err(Error::Closed("connection writer stopped".into()));
        }
        match answered.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(why)) => Err(Error::Closed(why)),
            Err(_) => Err(Error::Closed("connection dropped the call".into())),
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, Error> {
        if let Some(c) = self.current.lock().unwrap().as_ref().filter(|c| c.open()) {
            return Ok(c.clone());
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.current.lock().unwrap().as_ref().filter(|c| c.open()) {
            return Ok(c.clone());
        }
        let conn = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .unwrap_or_else(|_| Err(Error::Connect(format!("no connection within {:?}", self.connect_timeout))))?;
        *self.current.lock().unwrap() = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<Arc<Conn>, Error> {
        let failed = |e: std::io::Error| Error::Connect(e.to_string());
        let mut stream = TcpStream::connect(&self.authority).await.map_err(failed)?;
        stream.set_nodelay(self.nodelay).map_err(failed)?;
        let opening = format!(
            "GET {RPC_PATH} HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: {WS_KEY}\r\n{SECRET}: {}\r\n\r\n",
            self.authority, self.secret
        );
        stream.write_all(opening.as_bytes()).await.map_err(failed)?;
        // The answer's head, and whatever came after it (the first messages).
        let mut buf = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 << 10 {
                return Err(Error::Connect("answer head too long".into()));
            }
            if stream.read_buf(&mut buf).await.map_err(failed)? == 0 {
                return Err(Error::Connect("closed before answering the upgrade".into()));
            }
        };
        let head = buf.split_to(head_end);
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or_default();
        if let (Some(standing), Some(status)) =
            (&self.standing, status_line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()))
        {
            standing.answered(&self.authority, status);
        }
        if !status_line.starts_with("HTTP/1.1 101") {
            return Err(Error::Connect(format!("upgrade refused: {status_line}")));
        }
        let accept = std::str::from_utf8(&hash_key(WS_KEY.as_bytes())).expect("base64").to_string();
        let accepted = head.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept)
        });
        if !accepted {
            return Err(Error::Connect("upgrade answered without the WebSocket key's proof".into()));
        }
        let (rd, wr) = stream.into_split();
        let (out, queued) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            out,
            waiting: Mutex::new(Some(HashMap::new())),
            next: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        });
        tokio::spawn(write_loop(wr, queued, Arc::downgrade(&conn)));
        tokio::spawn(read_loop(rd, buf, Arc::downgrade(&conn)));
        Ok(conn)
    }
}

/// Sends the queued frames, everything queued at once in one write; ends when the client
/// is dropped (closing the connection) or a write fails.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut queued: mpsc::UnboundedReceiver<Bytes>,
    conn: Weak<Conn>,
) {
    let mut buf = BytesMut::new();
    while let Some(f) = queued.recv().await {
        buf.extend_from_slice(&f);
        while let Ok(f) = queued.try_recv() {
            buf.extend_from_slice(&f);
        }
        if let Err(e) = wr.write_all(&buf).await {
            if let Some(c) = conn.upgrade() {
                c.fail_all(&format!("write failed: {e}"));
            }
            return;
        }
        buf.clear();
    }
}

/// Hands each answer to its call; at the end of the connection fails the calls still
/// waiting.
async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, mut buf: BytesMut, conn: Weak<Conn>) {
    let why = loop {
        let (answers, closed) = match messages(&mut buf, false) {
            Ok(m) => m,
            Err(e) => break format!("unreadable answer: {e}"),
        };
        let Some(c) = conn.upgrade() else { return };
        for message in answers {
            match decode_response(message) {
                Ok((id, response)) => {
                    let done = c.waiting.lock().unwrap().as_mut().and_then(|w| w.remove(&id));
                    if let Some(done) = done {
                        let _ = done.send(Ok(response));
                    }
                }
                Err(e) => log::warn!("rpc: unreadable answer from {:?}: {e}", rd.peer_addr().ok()),
            }
        }
        drop(c);
        if closed {
            break "closed by the server".to_string();
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(64 << 10);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "closed by the server".to_string(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    if let Some(c) = conn.upgrade() {
        c.fail_all(&why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            method: Method::Post,
            path: "/internal/replicate?x=1".into(),
            headers: vec![("x-webshop-epoch".into(), "7".into()), ("content-type".into(), "a/b".into())],
            body: Bytes::from_static(b"\x00\x01body"),
        }
    }

    #[test]
    fn messages_read_back_as_written() {
        let mut out = BytesMut::new();
        encode_request(42, &request(), &mut out).unwrap();
        assert_eq!(decode_request(out.freeze()).unwrap(), (42, request()));
        let r = Response { status: 421, headers: vec![("x-a".into(), "b".into())], body: Bytes::from_static(b"{}") };
        let mut out = BytesMut::new();
        encode_response(u64::MAX, &r, &mut out).unwrap();
        assert_eq!(decode_response(out.freeze()).unwrap(), (u64::MAX, r));
        let get = Request { method: Method::Get, path: String::new(), headers: vec![], body: Bytes::new() };
        let mut out = BytesMut::new();
        encode_request(0, &get, &mut out).unwrap();
        assert_eq!(decode_request(out.freeze()).unwrap(), (0, get));
    }

    #[test]
    fn cut_or_bad_messages_are_refused() {
        let mut out = BytesMut::new();
        encode_request(1, &request(), &mut out).unwrap();
        let whole = out.freeze();
        // Every cut inside the head is refused; a cut in the body only shortens the body.
        let head = whole.len() - request().body.len();
        for n in 0..head {
            assert!(decode_request(whole.slice(..n)).is_err(), "cut at {n}");
        }
        let mut bad = whole.to_vec();
        bad[8] = 9;
        assert!(decode_request(Bytes::from(bad)).unwrap_err().contains("method"));
        let long = Request { headers: vec![("n".into(), "v".repeat(70_000))], ..request() };
        assert!(encode_request(1, &long, &mut BytesMut::new()).is_err());
        assert!(decode_response(Bytes::from_static(b"\0\0\0")).is_err());
    }

    #[test]
    fn frames_split_into_whole_messages() {
        let sizes = [3usize, 0, 300, 70_000];
        for masked in [true, false] {
            let mut wire = BytesMut::new();
            for (i, n) in sizes.iter().enumerate() {
                wire.extend_from_slice(&frame(&vec![i as u8; *n], masked));
            }
            // Fed in pieces, as reads bring them: the same messages in order, each once.
            let all = wire.freeze();
            let mut got = Vec::new();
            let mut buf = BytesMut::new();
            for piece in all.chunks(1000) {
                buf.extend_from_slice(piece);
                let (m, closed) = messages(&mut buf, masked).unwrap();
                assert!(!closed);
                got.extend(m);
            }
            assert!(buf.is_empty());
            for (i, (m, n)) in got.iter().zip(sizes).enumerate() {
                assert_eq!(&m[..], &vec![i as u8; n][..]);
            }
            assert_eq!(got.len(), sizes.len());
        }
        // A closing frame ends the stream after the messages before it; a text frame is an
        // error; a server refuses an unmasked frame.
        let mut buf = BytesMut::from(&frame(b"last", false)[..]);
        Parser::write_close(&mut buf, None, false);
        assert_eq!(messages(&mut buf, false).unwrap(), (vec![Bytes::from_static(b"last")], true));
        let mut text = BytesMut::new();
        Parser::write_message(&mut text, b"hi", OpCode::Text, true, false);
        assert!(messages(&mut text, false).is_err());
        assert!(messages(&mut BytesMut::from(&frame(b"x", false)[..]), true).is_err());
    }

    /// Signals of a `/gate` call: it tells `arrived` when the node has it, and is answered
    /// once `open` is told.
    #[derive(Default)]
    struct Gate {
        arrived: Notify,
        open: Notify,
        /// Connections the node accepted.
        connections: AtomicU64,
    }

    /// A node serving calls on `listener`: `/gate` answers when the gate opens, `/never`
    /// never, anything else at once, each with its path as body; `closing` ends its
    /// connections.
    fn serve_on(listener: std::net::TcpListener, closing: Closing, gate: Arc<Gate>) -> actix_web::dev::ServerHandle {
        let server = actix_web::HttpServer::new(move || {
            let (closing, gate) = (closing.clone(), gate.clone());
            actix_web::App::new().route(
                RPC_PATH,
                actix_web::web::get().to(move |req: HttpRequest, payload: actix_web::web::Payload| {
                    let (closing, gate) = (closing.clone(), gate.clone());
                    async move {
                        if req.headers().get(SECRET).is_none_or(|s| s != "s") {
                            return HttpResponse::Forbidden().finish();
                        }
                        gate.connections.fetch_add(1, Ordering::SeqCst);
                        serve(&req, payload, closing, move |call: Request| {
                            let gate = gate.clone();
                            async move {
                                match call.path.as_str() {
                                    "/gate" => {
                                        gate.arrived.notify_one();
                                        gate.open.notified().await;
                                    }
                                    "/never" => std::future::pending::<()>().await,
                                    _ => {}
                                }
                                let body = Bytes::from(call.path.clone());
                                Response {
                                    status: 200,
                                    headers: vec![("x-n".into(), call.body.len().to_string())],
                                    body,
                                }
                            }
                        })
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        handle
    }

    fn node(closing: Closing, gate: Arc<Gate>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        serve_on(listener, closing, gate);
        addr.to_string()
    }

    fn get(path: &str) -> Request {
        Request { method: Method::Get, path: path.into(), headers: vec![], body: Bytes::new() }
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[actix_web::test]
    async fn answers_come_back_to_their_calls_in_any_order() {
        let gate = Arc::new(Gate::default());
        let client = Arc::new(Client::new(&node(Closing::default(), gate.clone()), "s", true, WAIT));
        let held = {
            let client = client.clone();
            tokio::spawn(async move { client.call(&get("/gate"), WAIT).await })
        };
        gate.arrived.notified().await;
        // Behind the held call, on the same connection: answered while it waits.
        let calls = (0..50).map(|i| {
            let client = client.clone();
            async move {
                let body = Bytes::from(vec![0u8; i * 100]);
                let r = client.call(&Request { body, ..get(&format!("/fast/{i}")) }, WAIT).await.unwrap();
                assert_eq!(r.body, format!("/fast/{i}"));
                assert_eq!(r.header("X-N"), Some((i * 100).to_string().as_str()));
            }
        });
        futures::future::join_all(calls).await;
        assert!(!held.is_finished());
        gate.open.notify_one();
        assert_eq!(held.await.unwrap().unwrap().body, "/gate");
    }

    #[actix_web::test]
    async fn a_timed_out_call_retires_its_connection_and_the_calls_on_it_still_get_answers() {
        let gate = Arc::new(Gate::default());
        let client = Arc::new(Client::new(&node(Closing::default(), gate.clone()), "s", true, WAIT));
        let held = {
            let client = client.clone();
            tokio::spawn(async move { client.call(&get("/gate"), WAIT).await })
        };
        gate.arrived.notified().await;
        let err = client.call(&get("/never"), Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(err, Error::Timeout(Duration::from_millis(200)));
        // The next call goes on a new connection; the held one is still answered on the old.
        assert_eq!(client.call(&get("/next"), WAIT).await.unwrap().body, "/next");
        assert_eq!(gate.connections.load(Ordering::SeqCst), 2);
        gate.open.notify_one();
        assert_eq!(held.await.unwrap().unwrap().body, "/gate");
        assert_eq!(client.call(&get("/again"), WAIT).await.unwrap().body, "/again");
        assert_eq!(gate.connections.load(Ordering::SeqCst), 2);
    }

    #[actix_web::test]
    async fn a_closing_node_answers_the_calls_in_progress_and_then_ends_the_connection() {
        let (closing, gate) = (Closing::default(), Arc::new(Gate::default()));
        let client = Arc::new(Client::new(&node(closing.clone(), gate.clone()), "s", true, WAIT));
        let held = {
            let client = client.clone();
            tokio::spawn(async move { client.call(&get("/gate"), WAIT).await })
        };
        gate.arrived.notified().await;
        closing.close();
        gate.open.notify_one();
        assert_eq!(held.await.unwrap().unwrap().body, "/gate");
        // Afterwards the connection is gone, and a closing node serves no new one.
        let err = client.call(&get("/x"), WAIT).await.unwrap_err();
        assert!(matches!(err, Error::Closed(_)), "{err}");
    }

    #[actix_web::test]
    async fn the_next_call_after_a_restart_opens_a_new_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let closing = Closing::default();
        let first = serve_on(listener, closing.clone(), Default::default());
        let client = Client::new(&addr.to_string(), "s", true, WAIT);
        assert_eq!(client.call(&get("/a"), WAIT).await.unwrap().body, "/a");
        closing.close();
        first.stop(true).await;
        assert!(client.call(&get("/b"), WAIT).await.is_err(), "nobody serves");
        serve_on(std::net::TcpListener::bind(addr).unwrap(), Closing::default(), Default::default());
        assert_eq!(client.call(&get("/c"), WAIT).await.unwrap().body, "/c");
    }

    #[actix_web::test]
    async fn refused_connections_and_upgrades_fail_at_once() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = Client::new(&dead.to_string(), "s", true, WAIT).call(&get("/x"), WAIT).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err}");
        let node = node(Closing::default(), Default::default());
        let err = Client::new(&node, "wrong", true, WAIT).call(&get("/x"), WAIT).await.unwrap_err();
        assert_eq!(err, Error::Connect("upgrade refused: HTTP/1.1 403 Forbidden".into()));
    }

    #[actix_web::test]
    async fn a_client_tells_its_standing_whether_the_peer_took_the_secret() {
        let node = node(Closing::default(), Default::default());
        let standing = crate::standing::SecretStanding::default();
        let wrong = Client::new(&node, "wrong", true, WAIT).reporting_to(&standing);
        assert!(wrong.call(&get("/x"), WAIT).await.is_err());
        let why = standing.refusal().expect("refused and accepted by none");
        assert!(why.contains(&node), "{why}");
        let right = Client::new(&node, "s", true, WAIT).reporting_to(&standing);
        assert_eq!(right.call(&get("/y"), WAIT).await.unwrap().body, "/y");
        assert_eq!(standing.refusal(), None, "the peer accepts the secret now");
    }
}
