//! A virtual user's connection: one HTTP/1.1 keep-alive connection (hyper's client
//! connection, no pool, no redirects, no proxy lookup), opened on first use and again only
//! after the server closed it or a request failed. Requests carry no body; answers are read
//! whole (they are small).

use super::stats::Failure;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// One user's connection to the target.
pub struct Conn {
    /// Where it connects.
    addr: SocketAddr,
    /// The `Host` header (HTTP/1.1 requires one; nginx answers 400 without).
    host: HeaderValue,
    /// The open connection, if any.
    sender: Option<SendRequest<Empty<Bytes>>>,
    /// Bound on one request, connecting included.
    timeout: Duration,
    /// Connections opened so far.
    pub opened: u64,
}

impl Conn {
    /// A connection to `addr` (not opened yet) whose requests name `host`.
    pub fn new(addr: SocketAddr, host: &str, timeout: Duration) -> Conn {
        Conn {
            addr,
            host: HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            sender: None,
            timeout,
            opened: 0,
        }
    }

    /// Sends `GET` or `POST` (`get`) of `path` and reads the whole answer: status and body.
    /// A failure drops the connection, so the next request opens a fresh one.
    pub async fn send(&mut self, get: bool, path: String) -> Result<(u16, Bytes), Failure> {
        self.send_keyed(get, path, None).await
    }

    /// [`Conn::send`] with the idempotency key `request_id` as the `X-Request-Id` header, if
    /// given (a retry of the same request sends the same key).
    pub async fn send_keyed(
        &mut self,
        get: bool,
        path: String,
        request_id: Option<&str>,
    ) -> Result<(u16, Bytes), Failure> {
        let res = match tokio::time::timeout(self.timeout, self.exchange(get, path, request_id)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        };
        if res.is_err() {
            self.sender = None;
        }
        res
    }

    async fn exchange(&mut self, get: bool, path: String, request_id: Option<&str>) -> Result<(u16, Bytes), Failure> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.connect().await?);
        }
        let sender = self.sender.as_mut().expect("just set");
        // Waits until the previous answer was read off the connection (it always was).
        sender.ready().await.map_err(|_| Failure::Io)?;
        let mut req = Request::builder()
            .method(if get { Method::GET } else { Method::POST })
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(id) = request_id {
            req = req.header("x-request-id", id);
        }
        let req = req.body(Empty::new()).map_err(|_| Failure::Io)?;
        let resp = sender.send_request(req).await.map_err(|_| Failure::Io)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|_| Failure::Io)?.to_bytes();
        Ok((status, body))
    }

    async fn connect(&mut self) -> Result<SendRequest<Empty<Bytes>>, Failure> {
        let stream = TcpStream::connect(self.addr).await.map_err(|_| Failure::Connect)?;
        // Requests are small and each waits for its answer: never hold one back for Nagle.
        stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|_| Failure::Connect)?;
        // The connection's I/O runs as its own task on this thread; it ends when the sender
        // is dropped or the server closes the connection.
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        self.opened += 1;
        Ok(sender)
    }
}
