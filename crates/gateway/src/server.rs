//! The accept loop and the life of a connection: the budgets a connection
//! and its requests take (see `docs/security.md`), the timeouts that
//! close connections that do nothing, and graceful drain on shutdown.
//!
//! Budgets. Every accepted socket holds one of `max_connections +
//! max_peer_connections` places (the accept loop waits when none is free)
//! and one of `max_connections_per_ip` for its address (a socket beyond it
//! is closed at once). Its first request decides what it is: a
//! node-to-node request with a valid signature makes it a peer connection,
//! which takes one of `max_peer_connections`; anything else a client
//! connection, which takes one of `max_connections`. Each further request
//! open at the same time on a client connection (HTTP/2 streams) takes one
//! more of `max_connections`, and at most `max_streams_per_connection` are
//! open on one. A request that finds no place is answered `503 overloaded`
//! (a connection's first: the connection is then closed). Peers have their
//! own budget, so clients cannot lock them out.
//!
//! Timeouts. A connection must begin its first request within
//! `header_read_timeout` (with TLS, the handshake must also be over within
//! it, counted from the accept), and a client connection with no request in
//! progress is closed after `idle_timeout`; HTTP/1.1 request headers must
//! arrive within `header_read_timeout` (hyper's timer), request bodies
//! within `body_read_timeout` (`408`), and HTTP/2 keep-alive pings must be
//! answered within `h2_keepalive_timeout`.
//!
//! Rate. With `requests_per_sec_per_ip` set, each client address has a
//! token bucket of `request_burst_per_ip` requests refilled at that rate;
//! a request that finds it empty is answered `429` with `Retry-After`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use switchyard_router::Router;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::GatewayConfig;
use crate::hosts::AllowedHosts;
use crate::output::Output;
use crate::problem::Problem;

/// Most concurrent HTTP/2 streams on a connection from another node of the
/// cluster: a peer relays each group member connected to it as one stream
/// of its relay connection to the group's coordinator. Advertised to every
/// connection of a node in a cluster (a client connection is held to
/// `max_streams_per_connection` by answering `503` beyond it).
pub(crate) const MAX_PEER_STREAMS: u32 = 4096;

/// How long a connection closed for idleness gets to say goodbye (an
/// HTTP/2 GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How often a connection with a request open looks at its output.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Locks `m`; a panic elsewhere while it was held leaves nothing half done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a new connection opens with the HTTP/2 preface (`PRI * HTTP/2.0`;
/// no HTTP/1.1 request starts with `PRI`). Waits for the first bytes.
async fn is_h2(stream: &tokio::net::TcpStream) -> bool {
    const PREFIX: &[u8] = b"PRI";
    let mut buf = [0u8; 3];
    for _ in 0..100 {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if n >= PREFIX.len() => return buf == PREFIX,
            Ok(n) if buf[..n] != PREFIX[..n] => return false,
            // Part of the prefix so far: wait for the rest.
            Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    false
}

/// Response body type of every handler.
pub(crate) type Body = UnsyncBoxBody<Out, Infallible>;

/// A complete body.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(Out::from(b.into())).boxed_unsync()
}

/// `body`, whose chunks are single buffers, as a [`Body`].
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    body.map_frame(|f| f.map_data(Out::from)).boxed_unsync()
}

/// `body`'s chunks, each as one buffer (copied together where a chunk has
/// several parts).
pub(crate) fn into_bytes(
    body: Body,
) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Unpin {
    body.map_frame(|f| {
        f.map_data(|mut out| {
            let n = bytes::Buf::remaining(&out);
            bytes::Buf::copy_to_bytes(&mut out, n)
        })
    })
}

/// What every request handler can reach.
pub(crate) struct App {
    pub router: Router,
    pub config: GatewayConfig,
    /// Verifies client tokens (and caches the verified ones).
    pub auth: crate::auth::Authorizer,
    /// Turns true when the node shuts down; SSE streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// The host names this node answers to.
    pub hosts: AllowedHosts,
    /// Output handed to connections and not taken yet, and its budget.
    pub output: Arc<Output>,
    /// Bytes of batch bodies being read, parsed and stored (permits).
    pub batch_bytes: Arc<Semaphore>,
    /// The permits `batch_bytes` started with.
    pub batch_budget_bytes: usize,
    /// Low-priority threads that decode large batch bodies.
    pub bulk: crate::bulk::BulkPool,
    /// The counters only the HTTP layer keeps (see `/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl App {
    /// The settings a reload may change, as they are now (see
    /// [`crate::config::Live`]); the rest of `config` is fixed at start.
    pub fn live(&self) -> Arc<GatewayConfig> {
        self.config.live.get(&self.config)
    }
}

/// The node-wide connection budgets.
struct Budgets {
    /// Client connections, and client streams beyond a connection's first.
    clients: Arc<Semaphore>,
    /// Peer connections.
    peers: Arc<Semaphore>,
    /// Open sockets per address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// Requests per address, when limited.
    rate: Option<RateLimit>,
}

/// Requests per address: a token bucket per address, refilled at `rate`
/// per second up to `burst`.
struct RateLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Addresses whose buckets are kept before full ones are forgotten.
const RATE_BUCKETS: usize = 65_536;

impl RateLimit {
    /// `Err` with the time until a request would be allowed.
    fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= RATE_BUCKETS {
            // A bucket that has refilled is the same as none.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// One socket's place in its address's budget; given back on drop.
struct IpSlot {
    budgets: Arc<Budgets>,
    ip: IpAddr,
}

impl Budgets {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut per_ip = lock(&self.per_ip);
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            budgets: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = lock(&self.budgets.per_ip);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// What a connection turned out to be at its first request.
enum Kind {
    Unknown,
    Client(#[allow(dead_code)] OwnedSemaphorePermit),
    Peer(#[allow(dead_code)] OwnedSemaphorePermit),
    /// No place was free: every request is answered 503.
    Refused,
}

/// One connection's state, shared by its requests and its driver.
struct Conn {
    kind: Mutex<Kind>,
    /// Requests in progress (from the handler's start to the end of the
    /// response body).
    open: AtomicUsize,
    /// A request has begun on this connection.
    served: AtomicBool,
    /// When the connection was accepted or its last request ended.
    last_active: Mutex<Instant>,
    /// Wakes the driver: the last open request ended, or the connection is
    /// to be closed.
    wake: Notify,
    close: AtomicBool,
    /// The response bodies that handed the connection a chunk: whether
    /// each one's last chunk is still held, and since when. A body joins
    /// with its first chunk; an entry goes when both the body and its
    /// last chunk are gone.
    handed: Mutex<Vec<Weak<Written>>>,
    /// What [`Written::since`] counts from.
    epoch: Instant,
    /// The connection's driver is polling it (see [`Conn::drive`]).
    driving: AtomicBool,
    /// A chunk was taken while the driver polled the connection, and its
    /// body's wake-up was left to the end of that poll.
    deferred: AtomicBool,
    /// A request began or ended: the driver is to look at the connection's
    /// deadlines again ([`Conn::rearm`]).
    rearm: AtomicBool,
}

impl Conn {
    /// A connection just accepted: nothing served, nothing in progress.
    fn new() -> Conn {
        Conn {
            kind: Mutex::new(Kind::Unknown),
            open: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last_active: Mutex::new(Instant::now()),
            wake: Notify::new(),
            close: AtomicBool::new(false),
            handed: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            driving: AtomicBool::new(false),
            deferred: AtomicBool::new(false),
            rearm: AtomicBool::new(false),
        }
    }

    fn is_peer(&self) -> bool {
        matches!(*lock(&self.kind), Kind::Peer(_))
    }

    /// When the oldest chunk of output the connection has not taken was
    /// handed to it.
    fn stalled_since(&self) -> Option<Instant> {
        lock(&self.handed)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|w| w.held.load(Ordering::Acquire))
            .map(|w| w.since.load(Ordering::Acquire))
            .min()
            .map(|since| self.epoch + Duration::from_nanos(since))
    }

    /// Watches a response body's chunks from its first one on.
    fn watch(&self, written: &Arc<Written>) {
        let mut handed = lock(&self.handed);
        handed.retain(|w| w.strong_count() > 0);
        handed.push(Arc::downgrade(written));
    }

    /// Polls the connection with `poll`. A body whose chunk the connection
    /// takes meanwhile ([`Handed`]'s drop) is woken at the end of the poll
    /// unless it was polled again after the chunk went, as an HTTP/1.1
    /// connection does when it has written a chunk and asks its body for
    /// the next: waking it at once would poll the whole connection again
    /// for nothing, once per chunk. An HTTP/2 stream's body, polled by a
    /// task of its own, is woken at the end of the poll.
    fn drive<T>(&self, poll: impl FnOnce() -> Poll<T>) -> Poll<T> {
        self.driving.store(true, Ordering::SeqCst);
        let polled = poll();
        self.driving.store(false, Ordering::SeqCst);
        if self.deferred.swap(false, Ordering::SeqCst) {
            for w in lock(&self.handed).iter().filter_map(Weak::upgrade) {
                if w.wake_pending.swap(false, Ordering::SeqCst) {
                    // Schedules the body's task; takes no lock of ours.
                    w.waker.wake();
                }
            }
        }
        polled
    }

    /// Has the driver look at the connection's deadlines again, now that a
    /// request began (its output is watched) or the last one ended (the
    /// idle deadline runs again). A request on HTTP/1.1 begins and ends
    /// inside the driver's poll of the connection: the driver then finds
    /// the flag when the poll returns, and its task is not woken, twice
    /// per request, which cost each request a futex wake-up of another
    /// worker. Otherwise (an HTTP/2 stream's task) the driver is woken.
    fn rearm(&self) {
        self.rearm.store(true, Ordering::SeqCst);
        // Paired with the driver's store of `driving` and its look at
        // `rearm` after it (both SeqCst): either the driver is seen not
        // polling and is woken, or it finds the flag after its poll.
        if !self.driving.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Nanoseconds from [`Conn::epoch`] to now.
    fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the connection is to be closed for doing nothing, if it does
    /// nothing until then; `None` while a request is open, and for peers
    /// (whose connections are kept alive by their pings).
    fn idle_deadline(&self, config: &GatewayConfig) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 || self.is_peer() {
            return None;
        }
        let limit = if self.served.load(Ordering::Acquire) {
            config.idle_timeout
        } else {
            config.header_read_timeout
        };
        Some(*lock(&self.last_active) + limit)
    }
}

/// A request in progress: given back when its response body is dropped.
struct InFlight {
    conn: Arc<Conn>,
    /// The budget place of a stream beyond the connection's first.
    _extra: Option<OwnedSemaphorePermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *lock(&self.conn.last_active) = Instant::now();
        if self.conn.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.rearm();
        }
    }
}

/// A response body that holds its request's [`InFlight`] and counts its
/// output in the node's [`Output`] until the connection has written it.
///
/// Each data chunk goes out with a [`Handed`] guard, whose drop (when the
/// connection has written the last of it to the socket, or is gone) gives
/// its bytes back; the next chunk is asked of the inner body only then.
/// So a client that does not read holds one chunk in the connection's
/// buffers, however much room the HTTP/1.1 write buffer or the HTTP/2
/// send queue would leave, and the pending output counts what is held.
struct Tracked {
    inner: Body,
    /// Counts the request as the connection's until the body is dropped.
    _in_flight: InFlight,
    /// The chunk handed over last, while the connection holds it.
    handed: Arc<Written>,
    /// The connection watches `handed` (from the first chunk on).
    watched: bool,
}

impl Tracked {
    fn new(inner: Body, in_flight: InFlight, output: Arc<Output>) -> Tracked {
        Tracked {
            handed: Arc::new(Written {
                held: AtomicBool::new(false),
                since: AtomicU64::new(0),
                wake_pending: AtomicBool::new(false),
                waker: futures_util::task::AtomicWaker::new(),
                conn: in_flight.conn.clone(),
                output,
            }),
            inner,
            _in_flight: in_flight,
            watched: false,
        }
    }
}

/// Whether the last chunk a body handed over is still held by its
/// connection, and who waits for it to be written.
struct Written {
    held: AtomicBool,
    /// When the chunk was handed over, in nanoseconds from the
    /// connection's [`Conn::epoch`].
    since: AtomicU64,
    /// The chunk was taken while the driver polled the connection; the
    /// body is to be woken at the end of that poll unless it is polled
    /// before (see [`Conn::drive`]).
    wake_pending: AtomicBool,
    waker: futures_util::task::AtomicWaker,
    /// What the chunks count against, and the connection that takes them:
    /// here so that a chunk's guard holds one pointer, not three.
    output: Arc<Output>,
    conn: Arc<Conn>,
}

/// A chunk of a response body: buffers to write in order, with one
/// vectored write where the connection can. An SSE event whose payload
/// goes out as the message's own bytes is three (see `sse::ChunkWriter`);
/// most chunks are one. A [`Tracked`] body's chunks carry the guard that
/// gives their bytes back when the connection is done with them.
pub(crate) struct Out {
    /// The buffer being written (empty only when everything is).
    head: Bytes,
    /// The buffers after it; no allocation for a chunk of one buffer.
    rest: VecDeque<Bytes>,
    remaining: usize,
    _handed: Option<Handed>,
}

impl Out {
    /// The buffers not written yet.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> Vec<Bytes> {
        std::iter::once(&self.head)
            .chain(&self.rest)
            .filter(|b| !b.is_empty())
            .cloned()
            .collect()
    }

    /// Moves to the next buffer once the head is written.
    fn next_if_done(&mut self) {
        if self.head.is_empty() {
            self.head = self.rest.pop_front().unwrap_or_default();
        }
    }
}

impl From<Bytes> for Out {
    fn from(b: Bytes) -> Self {
        Out {
            remaining: b.len(),
            head: b,
            rest: VecDeque::new(),
            _handed: None,
        }
    }
}

impl From<Vec<Bytes>> for Out {
    fn from(parts: Vec<Bytes>) -> Self {
        let mut parts = parts.into_iter().filter(|b| !b.is_empty());
        let head = parts.next().unwrap_or_default();
        let rest: VecDeque<Bytes> = parts.collect();
        Out {
            remaining: head.len() + rest.iter().map(Bytes::len).sum::<usize>(),
            head,
            rest,
            _handed: None,
        }
    }
}

impl bytes::Buf for Out {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        &self.head
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the output");
        self.remaining -= cnt;
        while cnt > 0 {
            if cnt < self.head.len() {
                self.head.advance(cnt);
                return;
            }
            cnt -= self.head.len();
            self.head = self.rest.pop_front().unwrap_or_default();
        }
        self.next_if_done();
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        let parts = std::iter::once(&self.head)
            .chain(&self.rest)
            .filter(|b| !b.is_empty());
        for (slot, part) in dst.iter_mut().zip(parts) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        if self.head.len() >= len {
            // Within the head (most chunks are one buffer): no copy.
            self.remaining -= len;
            let taken = self.head.split_to(len);
            self.next_if_done();
            taken
        } else {
            use bytes::BufMut;
            let mut out = bytes::BytesMut::with_capacity(len);
            out.put((&mut *self).take(len));
            out.freeze()
        }
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("parts", &(1 + self.rest.len()))
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Output held by a connection (see [`Tracked`]): dropped with its [`Out`].
struct Handed {
    len: usize,
    written: Arc<Written>,
}

impl Drop for Handed {
    fn drop(&mut self) {
        let w = &self.written;
        let conn = &w.conn;
        w.output.take(self.len);
        w.held.store(false, Ordering::SeqCst);
        if conn.driving.load(Ordering::SeqCst) {
            w.wake_pending.store(true, Ordering::SeqCst);
            conn.deferred.store(true, Ordering::SeqCst);
            if conn.driving.load(Ordering::SeqCst) {
                // The driver wakes the body after its poll, if need be.
                return;
            }
            // The poll ended meanwhile: wake, unless the driver did.
            if !w.wake_pending.swap(false, Ordering::SeqCst) {
                return;
            }
        }
        w.waker.wake();
    }
}

impl http_body::Body for Tracked {
    type Data = Out;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Out>, Infallible>>> {
        if self.handed.held.load(Ordering::SeqCst) {
            self.handed.waker.register(cx.waker());
            if self.handed.held.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        // Polled after the last chunk went: no wake-up is owed for it.
        self.handed.wake_pending.store(false, Ordering::SeqCst);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            return polled;
        };
        let mut out = match frame.into_data() {
            Ok(out) if out.remaining > 0 => out,
            Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        let len = out.remaining;
        let w = &self.handed;
        w.output.add(len);
        w.since.store(w.conn.since_epoch(), Ordering::Release);
        w.held.store(true, Ordering::Release);
        if !self.watched {
            w.conn.watch(w);
            self.watched = true;
        }
        out._handed = Some(Handed {
            len,
            written: self.handed.clone(),
        });
        Poll::Ready(Some(Ok(Frame::data(out))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Most bytes a client connection's socket holds that the kernel has not
/// sent yet (`TCP_NOTSENT_LOWAT`). Without it the kernel takes output up
/// to its send buffer (autotuned to megabytes) whether or not the client
/// reads: thousands of SSE subscribers that never read then cost the node
/// a copy of every event into kernel memory, and the CPU for it, until
/// their buffers fill. With it, a client that does not read stops taking
/// output after about this much; one that reads is held back only by its
/// window, as before (what is in flight is not counted).
const SEND_LOWAT: u32 = 32 * 1024;

/// `503 overloaded`, with `Retry-After`.
fn overloaded(detail: &str, close: bool) -> Response<Body> {
    let mut resp =
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The target of access-log events.
const ACCESS_LOG: &str = "switchyard::access";

/// One access-log line: written when the answer's head is ready, so
/// `ms` is the time to the head and `bytes` the body's size when known
/// in advance (absent for streams). The path is logged without its query,
/// which may hold a token (`?authorization=`).
fn access_log(
    peer: bool,
    ip: IpAddr,
    method: &http::Method,
    path: &str,
    version: http::Version,
    resp: &Response<Body>,
    took: Duration,
) {
    let status = resp.status().as_u16();
    let bytes = http_body::Body::size_hint(resp.body()).exact();
    let ms = took.as_micros() as f64 / 1000.0;
    let version = match version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    if peer {
        tracing::debug!(target: ACCESS_LOG, %ip, %method, path, version, status, ms, bytes, "peer request");
    } else {
        tracing::info!(target: ACCESS_LOG, %ip, %method, path, version, status, ms, bytes, "request");
    }
}

/// Serves one request of connection `conn`: classifies the connection at
/// its first request, takes the request's place in the budgets, and runs
/// the handler with the body deadline set.
async fn serve_request(
    app: Arc<App>,
    budgets: Arc<Budgets>,
    conn: Arc<Conn>,
    h2: bool,
    ip: IpAddr,
    req: hyper::Request<Incoming>,
) -> Response<Body> {
    conn.served.store(true, Ordering::Release);
    let peer = {
        let mut kind = lock(&conn.kind);
        if matches!(*kind, Kind::Unknown) {
            *kind = if crate::cluster::is_peer_request(&app, &req, ip)
                && let Ok(p) = budgets.peers.clone().try_acquire_owned()
            {
                Kind::Peer(p)
            } else if let Ok(p) = budgets.clients.clone().try_acquire_owned() {
                Kind::Client(p)
            } else {
                Kind::Refused
            };
        }
        match *kind {
            Kind::Peer(_) => true,
            Kind::Client(_) => false,
            Kind::Unknown | Kind::Refused => {
                drop(kind);
                conn.close.store(true, Ordering::Release);
                conn.wake.notify_one();
                app.metrics.overloaded();
                return overloaded("the node serves as many connections as it may", !h2);
            }
        }
    };
    if !peer
        && let Some(rate) = &budgets.rate
        && let Err(wait) = rate.take(ip)
    {
        let mut resp = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "this address sends more requests than limits.requests_per_sec_per_ip allows",
        )
        .into_response();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let before = conn.open.fetch_add(1, Ordering::AcqRel);
    if before == 0 {
        // The driver now watches the connection's output (see `drive`).
        conn.rearm();
    }
    let mut in_flight = InFlight {
        conn: conn.clone(),
        _extra: None,
    };
    if !peer && before > 0 {
        // Outside a cluster the node advertises the client limit, which
        // HTTP/2 enforces itself; in one it advertises its peers' limit.
        if app.router.cluster().is_some()
            && before >= app.config.max_streams_per_connection as usize
        {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!(
                    "at most {} requests at once on one connection",
                    app.config.max_streams_per_connection
                ),
            )
            .into_response();
        }
        match budgets.clients.clone().try_acquire_owned() {
            Ok(p) => in_flight._extra = Some(p),
            Err(_) => {
                app.metrics.overloaded();
                return overloaded("the node serves as many requests as it may", false);
            }
        }
    }
    let started = Instant::now();
    let deadline = started + app.live().body_read_timeout;
    let output = app.output.clone();
    // The access log: client requests at `info`, node-to-node ones at
    // `debug`. Off (`switchyard::access=off`), this costs one cached check.
    let logged = if peer {
        tracing::enabled!(target: ACCESS_LOG, tracing::Level::DEBUG)
    } else {
        tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
    };
    let logged = logged.then(|| {
        (
            req.method().clone(),
            req.uri().path().to_owned(),
            req.version(),
        )
    });
    // Boxed: hyper keeps a place for the service's future for as long as
    // the connection lives, so an idle subscriber would hold one the size
    // of the largest handler's (about 5 KiB); this way it holds a pointer.
    let resp = crate::handlers::BODY_DEADLINE
        .scope(deadline, Box::pin(crate::handlers::handle(app, req)))
        .await;
    if let Some((method, path, version)) = logged {
        access_log(peer, ip, &method, &path, version, &resp, started.elapsed());
    }
    resp.map(|inner| Tracked::new(inner, in_flight, output).boxed_unsync())
}

/// Drives one connection to its end: closes it gracefully when the node
/// shuts down, when it has been idle too long, or when it was refused, and
/// drops it when a graceful close does not finish in time.
async fn drive<C>(
    connection: C,
    conn: Arc<Conn>,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(connection);
    let mut stopping = *stop.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    // Set once a close for idleness or refusal has begun.
    let mut drop_at: Option<Instant> = None;
    loop {
        // While a request is open, look at its output at least every
        // second: a chunk it does not take is noticed within a second
        // of its stall limit.
        // Peers' connections are exempt: a relayed group member that
        // reads slowly must not cut its peer's other streams.
        let watched = conn.open.load(Ordering::Acquire) > 0 && !conn.is_peer();
        let stall_check = watched.then(|| {
            let check = Instant::now() + STALL_CHECK;
            conn.stalled_since()
                .map_or(check, |t| check.min(t + app.output.stall_limit()))
        });
        let wake_at = drop_at.or_else(|| match (conn.idle_deadline(&app.live()), stall_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        });
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = std::future::poll_fn(|cx| match conn.drive(|| connection.as_mut().poll(cx)) {
                Poll::Ready(ended) => Poll::Ready(Some(ended)),
                // A request began or ended during the poll: the deadlines
                // are computed again.
                Poll::Pending if conn.rearm.swap(false, Ordering::SeqCst) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }) => {
                let Some(ended) = ended else { continue };
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            r = stop.changed(), if !stopping => {
                stopping = true;
                if r.is_err() || *stop.borrow() {
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = conn.wake.notified() => {
                if drop_at.is_none() && conn.close.load(Ordering::Acquire) {
                    connection.as_mut().graceful_shutdown();
                    drop_at = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            () = sleep => {
                if let Some(t) = drop_at {
                    if Instant::now() >= t {
                        tracing::debug!(%peer, "connection did not close in time; dropped");
                        return;
                    }
                } else if conn
                    .idle_deadline(&app.live())
                    .is_some_and(|t| Instant::now() >= t)
                {
                    tracing::debug!(%peer, "idle connection closed");
                    connection.as_mut().graceful_shutdown();
                    drop_at = Some(Instant::now() + CLOSE_GRACE);
                } else if watched
                    && let Some(since) = conn.stalled_since()
                    && since.elapsed() >= app.output.stall_limit()
                {
                    // A graceful close would wait for the very output the
                    // client does not take: drop the connection.
                    app.output.count_closed();
                    tracing::debug!(%peer, stalled_ms = since.elapsed().as_millis() as u64,
                        pending = app.output.pending(), "connection closed: its output stalled");
                    return;
                }
            }
        }
    }
}

/// A connection's transport once its first bytes or TLS handshake are in.
enum Io {
    Plain(tokio::net::TcpStream),
    /// Boxed: a TLS session's buffers would otherwise size every
    /// connection's task.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One accepted connection whose protocol is known.
struct Served {
    app: Arc<App>,
    budgets: Arc<Budgets>,
    conn: Arc<Conn>,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
    h2: bool,
}

impl Served {
    /// Serves the connection's requests with the protocol chosen for it
    /// until it ends.
    async fn run<I>(
        self,
        io: I,
        http1: hyper::server::conn::http1::Builder,
        http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Served {
            app,
            budgets,
            conn,
            stop,
            peer,
            h2,
        } = self;
        let service = {
            let (app, conn) = (app.clone(), conn.clone());
            service_fn(move |req: hyper::Request<Incoming>| {
                let fut = serve_request(
                    app.clone(),
                    budgets.clone(),
                    conn.clone(),
                    h2,
                    peer.ip().to_canonical(),
                    req,
                );
                async move { Ok::<_, Infallible>(fut.await) }
            })
        };
        // Boxed, so that the task of an HTTP/1.1 connection (most of
        // them, each idle subscriber) is not sized for HTTP/2's state.
        if h2 {
            Box::pin(drive(
                http2.serve_connection(io, service),
                conn,
                app,
                stop,
                peer,
            ))
            .await;
        } else {
            drive(http1.serve_connection(io, service), conn, app, stop, peer).await;
        }
    }
}

/// Serves the HTTP API on `listener` until `shutdown` resolves, then stops
/// accepting, ends SSE streams, and gives in-flight requests
/// [`GatewayConfig::shutdown_grace`] to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    config.live.install(&config);
    router.plugins().set_max_component(config.max_plugin_bytes);
    let grace = config.shutdown_grace;
    let local = listener.local_addr()?;
    let hosts = AllowedHosts::new(config.allowed_hosts.as_deref(), local);
    tracing::debug!(hosts = %hosts.describe(), "allowed hosts");
    let places = config.max_connections.max(1) + config.max_peer_connections.max(1);
    let open = Arc::new(Semaphore::new(places));
    let budgets = Arc::new(Budgets {
        clients: Arc::new(Semaphore::new(config.max_connections.max(1))),
        peers: Arc::new(Semaphore::new(config.max_peer_connections.max(1))),
        per_ip: Mutex::new(HashMap::new()),
        max_per_ip: config.max_connections_per_ip.max(1),
        rate: config.requests_per_sec_per_ip.map(|rate| {
            let rate = f64::from(rate.max(1));
            RateLimit {
                rate,
                burst: config
                    .request_burst_per_ip
                    .map_or(2.0 * rate, f64::from)
                    .max(1.0),
                buckets: Mutex::new(HashMap::new()),
            }
        }),
    });
    // HTTP/1.1 for clients; HTTP/2 with prior knowledge (h2c) for
    // node-to-node requests and clients that speak it. The protocol is
    // chosen from the first bytes (peeked, not read), so an HTTP/1.1
    // connection costs no more than with an HTTP/1.1-only server. With
    // TLS, ALPN chooses (HTTP/1.1 when the client offers neither).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(config.max_request_headers)
        .max_header_size(config.max_header_bytes)
        .max_buf_size(config.max_header_bytes.max(8192));
    let streams = if router.cluster().is_some() {
        MAX_PEER_STREAMS.max(config.max_streams_per_connection)
    } else {
        config.max_streams_per_connection
    };
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams.max(1))
        .keep_alive_interval(config.h2_keepalive_interval)
        .keep_alive_timeout(config.h2_keepalive_timeout)
        .max_header_list_size(config.max_header_bytes.max(8192) as u32);
    let first_bytes_timeout = config.header_read_timeout;
    let acceptor = match &config.tls {
        Some(cert) => Some(tokio_rustls::TlsAcceptor::from(
            cert.server_config().map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    // Checks the certificate files for changes while the server runs.
    let _watch = config
        .tls
        .clone()
        .map(|cert| AbortOnDrop(tokio::spawn(cert.watch())));
    // At least one batch of the largest size fits.
    let batch_budget = config
        .max_batch_bytes_in_flight
        .max(config.max_batch_bytes)
        .min(u32::MAX as usize);
    let app = Arc::new(App {
        router,
        auth: crate::auth::Authorizer::new(config.auth.clone()),
        output: Arc::new(Output::new(
            config.max_pending_output_bytes,
            config.output_stall_timeout,
        )),
        batch_bytes: Arc::new(Semaphore::new(batch_budget)),
        batch_budget_bytes: batch_budget,
        bulk: crate::bulk::BulkPool::start(2, 64)?,
        metrics: Arc::default(),
        config,
        shutdown: stop_rx.clone(),
        hosts,
    });
    // The accept loop runs as a task on the runtime's workers, not on the
    // thread that awaits `serve`: see `accept_loop`.
    let (quit_tx, quit_rx) = watch::channel(false);
    // Aborted if `serve` itself is dropped, so the listener never outlives it.
    let mut accepting = AbortOnDrop(tokio::spawn(accept_loop(
        listener,
        Accepting {
            app,
            budgets,
            open: open.clone(),
            http1,
            http2,
            acceptor,
            stop: stop_rx,
            first_bytes_timeout,
        },
        quit_rx,
    )));
    shutdown.await;
    let _ = quit_tx.send(true);
    // The listener is dropped when the loop ends.
    if let Err(e) = (&mut accepting.0).await {
        tracing::error!(error = %e, "accept loop failed");
    }
    let _ = stop_tx.send(true);
    // Every connection task holds one place until it ends.
    if tokio::time::timeout(grace, open.acquire_many(places as u32))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    Ok(())
}

/// What the accept loop hands to each connection it accepts.
struct Accepting {
    app: Arc<App>,
    budgets: Arc<Budgets>,
    open: Arc<Semaphore>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
    first_bytes_timeout: Duration,
}

/// Connections accepted in a row before the accept loop lets the worker
/// run what is already queued. Measured with 5,000 subscribers connecting
/// at once (docs/BENCHMARKS.md): 1 kept the open connections' p99 lowest
/// but held new connections in the backlog for up to 560 ms; 8 kept both
/// low (p99 2.8-4.3 ms against 22-91 ms unpaced; new connections in at
/// most 220 ms).
const ACCEPT_BURST: u32 = 8;

/// Accepts connections until `quit` turns true, and spawns a task for each.
///
/// The loop is a task like the connections' own, and after every
/// [`ACCEPT_BURST`] connections it lets the worker run what is already
/// queued ([`tokio::task::yield_now`]). So a storm of new connections is
/// taken in at the pace the node serves them, the way an event loop
/// interleaves `accept` with its other events: the connections already
/// open do not wait behind thousands of new ones queued at once. The
/// kernel's listen backlog holds the rest meanwhile. (On the thread that
/// awaits `serve`, outside the workers, every new connection's task went
/// to the runtime's shared queue as fast as the kernel handed them over.)
async fn accept_loop(listener: TcpListener, a: Accepting, mut quit: watch::Receiver<bool>) {
    let Accepting {
        app,
        budgets,
        open,
        http1,
        http2,
        acceptor,
        stop,
        first_bytes_timeout,
    } = a;
    let mut since_yield = 0;
    let quit = async move {
        let _ = quit.wait_for(|q| *q).await;
    };
    tokio::pin!(quit);
    loop {
        let place = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("semaphore is never closed"),
            () = &mut quit => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut quit => break,
        };
        let Some(slot) = budgets.enter(peer.ip().to_canonical()) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            app.metrics.refused_per_ip();
            continue;
        };
        let counted = app.metrics.connection();
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(SEND_LOWAT);
        let conn = Arc::new(Conn::new());
        let (app, budgets) = (app.clone(), budgets.clone());
        let (http1, http2) = (http1.clone(), http2.clone());
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _held = (place, slot, counted);
            let mut stopped = stop.clone();
            // The TLS handshake, like the first bytes of a cleartext
            // connection, must be over within `header_read_timeout`.
            let start = async move {
                match acceptor {
                    None => {
                        let h2 = is_h2(&stream).await;
                        Ok((Io::Plain(stream), h2))
                    }
                    Some(acceptor) => {
                        // Boxed: the handshake's state would otherwise
                        // size the task of every connection, cleartext too.
                        let tls = Box::pin(acceptor.accept(stream)).await?;
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        Ok::<_, std::io::Error>((Io::Tls(Box::new(tls)), h2))
                    }
                }
            };
            let (io, h2) = tokio::select! {
                r = tokio::time::timeout(first_bytes_timeout, start) => match r {
                    Ok(Ok(started)) => started,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed; connection closed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no request in time; connection closed");
                        return;
                    }
                },
                _ = stopped.wait_for(|s| *s) => return,
            };
            let served = Served {
                app,
                budgets,
                conn,
                stop,
                peer,
                h2,
            };
            match io {
                Io::Plain(s) => served.run(TokioIo::new(s), http1, http2).await,
                Io::Tls(s) => served.run(TokioIo::new(s), http1, http2).await,
            }
        });
        since_yield += 1;
        if since_yield >= ACCEPT_BURST {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Buf;
    use futures_util::{StreamExt, stream};
    use http_body_util::StreamBody;

    use super::*;

    /// A connection with one request in progress, as `serve_request`
    /// counts it.
    fn conn() -> Arc<Conn> {
        let conn = Conn::new();
        conn.open.store(1, Ordering::Relaxed);
        Arc::new(conn)
    }

    #[test]
    fn out_is_read_in_order_across_its_parts() {
        let mut out = Out::from(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(out.remaining(), 5);
        {
            let mut slices = [std::io::IoSlice::new(&[]); 4];
            assert_eq!(out.chunks_vectored(&mut slices), 2);
            assert_eq!((&*slices[0], &*slices[1]), (&b"ab"[..], &b"cde"[..]));
        }
        assert_eq!(out.copy_to_bytes(1), "a");
        assert_eq!(out.copy_to_bytes(3), "bcd");
        assert_eq!((out.remaining(), out.chunk()), (1, &b"e"[..]));
        out.advance(1);
        assert!(!out.has_remaining());
        assert_eq!(out.chunks_vectored(&mut [std::io::IoSlice::new(&[])]), 0);
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_body_is_woken_after_its_chunk_goes_unless_the_connection_polled_it_again() {
        let output = Arc::new(Output::new(1 << 20, Duration::from_secs(60)));
        let chunks = ["a", "b", "c", "d"]
            .map(|c| Ok::<_, Infallible>(Frame::data(Out::from(Bytes::from(c)))));
        let c = conn();
        let mut body = Tracked::new(
            StreamBody::new(stream::iter(chunks).chain(stream::pending())).boxed_unsync(),
            InFlight {
                conn: c.clone(),
                _extra: None,
            },
            output,
        );
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let poll = |body: &mut Tracked| {
            let mut cx = Context::from_waker(&waker);
            match http_body::Body::poll_frame(Pin::new(body), &mut cx) {
                Poll::Ready(Some(Ok(f))) => Some(f.into_data().ok().unwrap()),
                Poll::Pending => None,
                Poll::Ready(_) => panic!("the body ended"),
            }
        };
        let woken = || wakes.0.load(Ordering::SeqCst);

        // Taken while the driver polls, and the body not polled again in
        // that poll: woken once the poll is over.
        let a = poll(&mut body).unwrap();
        assert!(poll(&mut body).is_none(), "waits for its chunk to go");
        let polled = c.drive(|| {
            drop(a);
            assert_eq!(woken(), 0, "not in the middle of the poll");
            Poll::Ready(())
        });
        assert!(polled.is_ready());
        assert_eq!(woken(), 1);

        // Taken while the driver polls, and the body polled again in the
        // same poll (HTTP/1.1): no wake-up.
        let b = poll(&mut body).unwrap();
        assert!(poll(&mut body).is_none());
        let mut next = None;
        let _ = c.drive(|| {
            drop(b);
            next = poll(&mut body);
            Poll::Ready(())
        });
        assert_eq!(woken(), 1, "polled again: nothing owed");
        let cc = next.expect("the next chunk");
        assert_eq!(cc.chunk(), b"c");

        // Taken outside any poll of the driver: woken at once.
        assert!(poll(&mut body).is_none());
        drop(cc);
        assert_eq!(woken(), 2);
        assert_eq!(poll(&mut body).unwrap().chunk(), b"d");
    }

    #[test]
    fn a_chunk_is_held_until_the_connection_has_written_it() {
        let output = Arc::new(Output::new(1 << 20, Duration::from_secs(60)));
        let chunks = [
            Out::from(vec![
                Bytes::from_static(b"id: 1\ndata: "),
                Bytes::from_static(b"payload"),
                Bytes::from_static(b"\n\n"),
            ]),
            Out::from(Bytes::from_static(b"next")),
        ];
        let frames = stream::iter(chunks.map(|c| Ok::<_, Infallible>(Frame::data(c))))
            .chain(stream::pending());
        let c = conn();
        let mut body = Tracked::new(
            StreamBody::new(frames).boxed_unsync(),
            InFlight {
                conn: c.clone(),
                _extra: None,
            },
            output.clone(),
        );
        fn poll(body: &mut Tracked) -> Option<Out> {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match http_body::Body::poll_frame(Pin::new(body), &mut cx) {
                Poll::Ready(Some(Ok(f))) => Some(f.into_data().ok().unwrap()),
                Poll::Pending => None,
                Poll::Ready(_) => panic!("the body ended"),
            }
        }
        assert_eq!(c.stalled_since(), None);
        let mut first = poll(&mut body).unwrap();
        assert_eq!(output.pending(), 21);
        let since = c.stalled_since().expect("a chunk is held");
        assert!(since <= Instant::now());
        assert_eq!(first.copy_to_bytes(21), "id: 1\ndata: payload\n\n");
        assert!(
            poll(&mut body).is_none(),
            "held until the connection drops it"
        );
        drop(first);
        assert_eq!(output.pending(), 0);
        assert_eq!(c.stalled_since(), None, "nothing held once written");
        let next = poll(&mut body).unwrap();
        assert_eq!(next.chunk(), b"next");
        assert!(c.stalled_since().is_some_and(|t| t >= since));
        // A body that ends while the connection still holds its last
        // chunk: the chunk still counts, until it is written.
        drop(body);
        assert!(c.stalled_since().is_some());
        drop(next);
        assert_eq!(c.stalled_since(), None);
        assert!(lock(&c.handed).iter().all(|w| w.strong_count() == 0));
    }
}
