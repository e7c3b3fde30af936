//! Server-Sent Events: formatting deliveries as events, and the streaming
//! body that follows a subscription.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http_body::Frame;
use http_body_util::BodyExt;
use switchyard_model::{Cursor, Message};
use switchyard_router::{Delivery, Member, Subscription};
use tokio::sync::watch;

use crate::envelope::{envelope, gap};
use crate::metrics::{Metrics, SubscriberGuard, Via};
use crate::output::Output;
use crate::server::{Body, Out};

/// How `data:` carries a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// The payload as text; a payload that is not UTF-8 is sent as an event
    /// of type `binary` with base64 data.
    Raw,
    /// The JSON envelope.
    Json,
}

/// Writes `data:` lines, splitting on CR LF, CR and LF as the SSE grammar
/// requires (a client joins them with LF).
fn put_data(buf: &mut BytesMut, text: &str) {
    let mut rest = text.as_bytes();
    loop {
        let cut = memchr::memchr2(b'\n', b'\r', rest);
        buf.put_slice(b"data: ");
        match cut {
            None => {
                buf.put_slice(rest);
                buf.put_u8(b'\n');
                return;
            }
            Some(i) => {
                buf.put_slice(&rest[..i]);
                buf.put_u8(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
        }
    }
}

/// Payloads at least this large that a `data:` line can carry as they are
/// (UTF-8 without CR or LF) are not copied into a stream's chunk: the
/// chunk points at the message's own bytes, which every stream reading
/// the message shares (the store's tail holds them once). Below this, one
/// copy into the chunk costs less than another buffer for hyper's
/// vectored write.
const SHARED_PAYLOAD_MIN: usize = 4096;

/// What an event's `id:` line carries.
#[derive(Clone, Copy)]
enum EventId<'a> {
    /// The text as it is (a group member's message id).
    Text(&'a str),
    /// A cursor, encoded straight into the chunk.
    Cursor(&'a Cursor),
}

impl EventId<'_> {
    fn put(self, buf: &mut BytesMut) {
        match self {
            EventId::Text(s) => buf.put_slice(s.as_bytes()),
            EventId::Cursor(c) => c.encode_into(buf),
        }
    }
}

/// Builds a stream's chunk ([`Out`]): events are written into one buffer,
/// and a large single-line text payload goes in as its own part without a
/// copy.
struct ChunkWriter {
    buf: BytesMut,
    parts: Vec<Bytes>,
}

/// Largest scratch buffer a thread keeps between chunks.
const SCRATCH_KEEP: usize = 64 * 1024;
/// Largest chunk copied out of the scratch buffer; a larger one takes the
/// buffer itself.
const COPY_OUT_MAX: usize = 4096;

thread_local! {
    /// The thread's buffer that chunks are formatted into: a chunk is then
    /// copied out into a buffer of its exact size, which `Bytes` takes
    /// without the separate allocation it makes for a buffer with spare
    /// room. One allocation per chunk instead of two.
    static SCRATCH: std::cell::Cell<BytesMut> = std::cell::Cell::new(BytesMut::new());
}

impl ChunkWriter {
    fn with_capacity(n: usize) -> Self {
        let mut buf = SCRATCH.take();
        buf.clear();
        buf.reserve(n);
        ChunkWriter {
            buf,
            parts: Vec::new(),
        }
    }

    /// Whether `payload` goes out as its own part: large, and text a
    /// single `data:` line carries unchanged.
    fn shares(payload: &[u8]) -> bool {
        payload.len() >= SHARED_PAYLOAD_MIN
            && memchr::memchr2(b'\n', b'\r', payload).is_none()
            && std::str::from_utf8(payload).is_ok()
    }

    /// One message event with `id`. A shared payload's event is the
    /// buffer up to `data: `, the payload, then the buffer again.
    fn message(&mut self, m: &Message, id: EventId<'_>, format: Format) {
        if format == Format::Raw && Self::shares(&m.payload) {
            let buf = &mut self.buf;
            buf.put_slice(b"id: ");
            id.put(buf);
            buf.put_slice(b"\nevent: message\ndata: ");
            self.parts.push(buf.split().freeze());
            self.parts.push(m.payload.clone());
            self.buf.put_slice(b"\n\n");
        } else {
            if m.payload.len() >= SHARED_PAYLOAD_MIN {
                // Left out of the chunk's first estimate (see
                // `copied_len`): room for it now.
                self.buf.reserve(m.payload.len() + 128);
            }
            put_message(&mut self.buf, m, id, format);
        }
    }

    fn finish(mut self) -> Out {
        if self.parts.is_empty() && self.buf.len() > COPY_OUT_MAX {
            // Copying costs more than the allocation it saves.
            Out::from(self.buf.freeze())
        } else if self.parts.is_empty() {
            let chunk = Bytes::copy_from_slice(&self.buf);
            if self.buf.capacity() <= SCRATCH_KEEP {
                SCRATCH.set(self.buf);
            }
            Out::from(chunk)
        } else {
            self.parts.push(self.buf.freeze());
            Out::from(self.parts)
        }
    }
}

/// The bytes a message's payload adds to a chunk's own buffer, as first
/// estimated: large payloads count nothing, since most are shared, and one
/// that is not reserves its room when it is written. So each payload is
/// scanned once ([`ChunkWriter::shares`]), when it is written.
fn copied_len(m: &Message) -> usize {
    if m.payload.len() >= SHARED_PAYLOAD_MIN {
        0
    } else {
        m.payload.len()
    }
}

fn put_message(buf: &mut BytesMut, m: &Message, id: EventId<'_>, format: Format) {
    buf.put_slice(b"id: ");
    id.put(buf);
    buf.put_u8(b'\n');
    match format {
        Format::Json => {
            buf.put_slice(b"event: message\n");
            put_data(buf, &envelope(m).to_string());
        }
        Format::Raw => match std::str::from_utf8(&m.payload) {
            Ok(text) => {
                buf.put_slice(b"event: message\n");
                put_data(buf, text);
            }
            Err(_) => {
                buf.put_slice(b"event: binary\n");
                put_data(buf, &STANDARD.encode(&m.payload));
            }
        },
    }
    buf.put_u8(b'\n');
}

/// Every event of a delivery: gap events first, then one event per
/// message with the cursor after it as `id:`.
pub(crate) fn format_delivery(d: &Delivery, format: Format) -> Out {
    let size: usize = d.messages.iter().map(|m| copied_len(m) + 96).sum();
    let mut w = ChunkWriter::with_capacity(size + d.gaps.len() * 160);
    for g in &d.gaps {
        w.buf.put_slice(b"event: gap\n");
        put_data(&mut w.buf, &gap(g).to_string());
        w.buf.put_u8(b'\n');
    }
    d.for_each_with_cursor(|m, cursor| w.message(m, EventId::Cursor(cursor), format));
    if d.messages.is_empty() && d.skipped > 0 {
        // Everything read was filtered out: an event with only an `id:`
        // moves the client's Last-Event-ID past it without dispatching
        // anything (EventSource ignores events without data).
        w.buf.put_slice(b"id: ");
        d.cursor.encode_into(&mut w.buf);
        w.buf.put_slice(b"\n\n");
    }
    w.finish()
}

/// Where an SSE stream's events come from.
pub(crate) trait Events: Send + 'static {
    /// How the messages reach their client (for `/metrics`).
    const VIA: Via;

    /// The next chunk of events and the messages in it; `None` ends the
    /// stream. Must be cancel-safe: the stream drops it for heartbeats
    /// and shutdown.
    fn next_chunk(&mut self) -> impl Future<Output = Option<(Out, u64)>> + Send;
}

/// A fan-out subscription's events.
pub(crate) struct SubscriptionEvents {
    pub sub: Subscription,
    pub format: Format,
}

impl Events for SubscriptionEvents {
    const VIA: Via = Via::Stream;

    async fn next_chunk(&mut self) -> Option<(Out, u64)> {
        match self.sub.next().await {
            Ok(d) => Some((format_delivery(&d, self.format), 1)),
            Err(e) => {
                tracing::debug!(error = %e, "subscription ended");
                None
            }
        }
    }
}

/// A group member's events: `id:` is the message id (what acks name), and
/// the JSON envelope carries the delivery count.
pub(crate) struct MemberEvents {
    pub member: Member,
    pub format: Format,
}

impl Events for MemberEvents {
    const VIA: Via = Via::Group;

    async fn next_chunk(&mut self) -> Option<(Out, u64)> {
        let batch = self.member.next().await?;
        let size: usize = batch.iter().map(|d| copied_len(&d.message) + 128).sum();
        let mut w = ChunkWriter::with_capacity(size);
        for d in &batch {
            let id = d.message.id.to_string();
            match self.format {
                Format::Json => {
                    let mut env = envelope(&d.message);
                    env["delivery"] = d.delivery.into();
                    let buf = &mut w.buf;
                    buf.put_slice(b"id: ");
                    buf.put_slice(id.as_bytes());
                    buf.put_slice(b"\nevent: message\n");
                    put_data(buf, &env.to_string());
                    buf.put_u8(b'\n');
                }
                Format::Raw => w.message(&d.message, EventId::Text(&id), Format::Raw),
            }
        }
        Some((w.finish(), batch.len() as u64))
    }
}

/// Over the node's output budget, a stream whose connection took its last
/// chunk within this long goes on reading: it keeps up, so what it is
/// handed is written at once and holds no memory for long. The others
/// wait for room, so clients that do not read cannot hold back the ones
/// that do.
const KEEPS_UP: Duration = Duration::from_millis(50);

struct State<E> {
    events: E,
    heartbeat: Duration,
    /// Fires when a heartbeat may be due: at the latest `heartbeat` after
    /// the last chunk. It is moved only when it fires early, so a stream
    /// that delivers does not touch the timer wheel for every chunk.
    idle: Quiet<Pin<Box<tokio::time::Sleep>>>,
    /// When the last chunk went out (a heartbeat is due `heartbeat` later).
    last_out: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
    /// Resolves when the node shuts down. Kept across chunks, so that the
    /// stream registers with the shutdown signal once, not per chunk.
    stop: Quiet<Pin<Box<dyn Future<Output = ()> + Send>>>,
    prelude: Option<Bytes>,
    output: Arc<Output>,
    /// When the last chunk after the prelude was handed over. The body is
    /// asked for its next chunk only once the connection has taken it.
    handed: Option<tokio::time::Instant>,
    metrics: Arc<Metrics>,
    /// Counts the stream among the node's subscribers while it lives.
    _subscriber: SubscriberGuard,
}

/// The body of an SSE response: a `retry:` hint and `prelude` events, then
/// events as they come, and a heartbeat comment whenever the stream was
/// idle for `heartbeat`. It reads only when hyper asks for more, so a
/// client that does not read holds one chunk at most; and while the
/// node's pending `output` is over its budget it reads nothing more (the
/// stream lags in the log) until connections take their output, unless
/// its connection took its last chunk within [`KEEPS_UP`].
pub(crate) fn body<E: Events>(
    events: E,
    prelude: &str,
    heartbeat: Duration,
    retry: Duration,
    shutdown: watch::Receiver<bool>,
    output: Arc<Output>,
    metrics: Arc<Metrics>,
) -> Body {
    let prelude = Bytes::from(format!(
        "retry: {}\n: connected\n\n{prelude}",
        retry.as_millis()
    ));
    let mut stop_rx = shutdown.clone();
    let now = tokio::time::Instant::now();
    let mut state = State {
        events,
        heartbeat,
        idle: Quiet::new(Box::pin(tokio::time::sleep_until(now + heartbeat))),
        last_out: now,
        shutdown,
        stop: Quiet::new(Box::pin(async move {
            // A change, or the sender gone: either way the node stops.
            let _ = stop_rx.changed().await;
        })),
        prelude: Some(prelude),
        output,
        handed: None,
        _subscriber: metrics.subscriber(matches!(E::VIA, Via::Group)),
        metrics,
    };
    let slot = Arc::new(Slot::default());
    let out = slot.clone();
    let run = async move {
        // By reference: `let mut st = state;` would give the future room
        // for the captured state and for the moved one, over a kilobyte
        // more per subscriber.
        let st = &mut state;
        if let Some(p) = st.prelude.take() {
            out.hand(Out::from(p)).await;
        }
        loop {
            if *st.shutdown.borrow() {
                return;
            }
            // Whether the stream keeps up is asked only over the budget:
            // reading the clock is not free.
            if st.output.is_over() && st.handed.is_none_or(|t| t.elapsed() > KEEPS_UP) {
                tokio::select! {
                    () = st.output.room() => {}
                    () = &mut st.stop => return,
                }
            }
            // Events first: a stream with events ready polls nothing else.
            let chunk = loop {
                tokio::select! {
                    biased;
                    chunk = st.events.next_chunk() => {
                        let Some((chunk, messages)) = chunk else {
                            return;
                        };
                        st.metrics.delivered(E::VIA, messages);
                        break chunk;
                    }
                    () = &mut st.stop => return,
                    () = &mut st.idle => {
                        let due = st.last_out + st.heartbeat;
                        if tokio::time::Instant::now() < due {
                            // Chunks went out since the timer was set.
                            st.idle.get_mut().as_mut().reset(due);
                            continue;
                        }
                        break Out::from(Bytes::from_static(b": heartbeat\n\n"));
                    }
                }
            };
            let now = tokio::time::Instant::now();
            st.handed = Some(now);
            st.last_out = now;
            if st.idle.get().is_elapsed() {
                st.idle.get_mut().as_mut().reset(now + st.heartbeat);
            }
            out.hand(chunk).await;
        }
    };
    SseBody {
        run: Box::pin(run),
        slot,
        done: false,
    }
    .boxed_unsync()
}

/// A future that is polled again only after it has woken its task (or
/// completed, or been changed through [`Quiet::get_mut`]). A stream waits
/// for its next events, the shutdown signal and its heartbeat timer at
/// once, and is polled for every delivery: the shutdown signal and the
/// timer already hold the task's waker, and polling them anyway costs a
/// lock of the node-wide shutdown signal's waiter list and a look at the
/// timer's state, hundreds of instructions per delivery. Skipping the poll
/// costs an atomic swap and a waker comparison.
struct Quiet<F> {
    inner: F,
    flag: Arc<QuietFlag>,
    /// Wakes `flag`: what `inner` is polled with.
    waker: Waker,
    /// `inner` was polled and holds `waker`.
    armed: bool,
}

/// Set when a [`Quiet`] future's inner future wakes it; then wakes the task.
#[derive(Default)]
struct QuietFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for QuietFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

impl<F> Quiet<F> {
    fn new(inner: F) -> Self {
        let flag = Arc::new(QuietFlag::default());
        Quiet {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
            armed: false,
        }
    }

    fn get(&self) -> &F {
        &self.inner
    }

    /// The inner future, which may be changed (a timer reset): it is
    /// polled at the next poll.
    fn get_mut(&mut self) -> &mut F {
        self.armed = false;
        &mut self.inner
    }
}

impl<F: Future + Unpin> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.flag.task.register(cx.waker());
        // Cleared before the inner poll: a wake-up from then on is seen at
        // the next poll.
        if !this.flag.woken.swap(false, Ordering::SeqCst) && this.armed {
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker)) {
            Poll::Ready(v) => {
                this.armed = false;
                Poll::Ready(v)
            }
            Poll::Pending => {
                this.armed = true;
                Poll::Pending
            }
        }
    }
}

/// The chunk an [`SseBody`]'s producing future has handed over and the
/// body has not returned yet.
#[derive(Default)]
struct Slot(parking_lot::Mutex<Option<Out>>);

impl Slot {
    /// Hands `chunk` to the body and pauses the producer until the body
    /// is asked for the chunk after it.
    fn hand(&self, chunk: Out) -> HandOver {
        *self.0.lock() = Some(chunk);
        HandOver { paused: false }
    }

    fn take(&self) -> Option<Out> {
        self.0.lock().take()
    }
}

/// Returns `Pending` once, without arranging a wake-up: the body that
/// polls the producer returns the handed chunk instead, and polls again
/// only when its connection asks for more.
struct HandOver {
    paused: bool,
}

impl Future for HandOver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.paused {
            Poll::Ready(())
        } else {
            self.paused = true;
            Poll::Pending
        }
    }
}

/// A body whose chunks come from one long-lived future (`run`), which
/// hands each through `slot` and pauses until the next is asked for. The
/// future, with the stream's state and whatever it awaits, stays in one
/// place for the stream's life: a stream built with `unfold` moved its
/// state into a fresh future and back out for every chunk, about 900
/// instructions of copying per delivery.
struct SseBody<F> {
    run: Pin<Box<F>>,
    slot: Arc<Slot>,
    done: bool,
}

impl<F: Future<Output = ()>> http_body::Body for SseBody<F> {
    type Data = Out;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Out>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let ended = self.run.as_mut().poll(cx).is_ready();
        if let Some(chunk) = self.slot.take() {
            // The producer is paused in `HandOver` (or ended right after
            // handing its last chunk); it resumes at the next poll.
            self.done = ended;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if ended {
            self.done = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// One event: `event: <name>` with `data` (a single line).
pub(crate) fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that counts its polls, keeps the waker of the last, and is
    /// ready once `ready` is set.
    #[derive(Default)]
    struct Probe {
        polls: usize,
        waker: Option<Waker>,
        ready: bool,
    }

    impl Future for Probe {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            if self.ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_quiet_future_is_polled_again_only_once_it_woke_completed_or_changed() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut q = Quiet::new(Probe::default());
        let polls = |q: &Quiet<Probe>| q.get().polls;

        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        assert_eq!(polls(&q), 1, "not woken: not polled again");

        // The inner future wakes: the task is woken, and the next poll
        // reaches the inner future.
        q.get().waker.clone().unwrap().wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        assert_eq!(polls(&q), 2);
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        assert_eq!(polls(&q), 2);

        // Changed through `get_mut`: polled at the next poll.
        q.get_mut().ready = true;
        assert!(Pin::new(&mut q).poll(&mut cx).is_ready());
        assert_eq!(polls(&q), 3);
        // Ready: the next poll reaches it again.
        assert!(Pin::new(&mut q).poll(&mut cx).is_ready());
        assert_eq!(polls(&q), 4);

        // A wake-up that came while the task polled something else still
        // reaches the task registered last.
        q.get_mut().ready = false;
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        let other = Arc::new(Count::default());
        let other_waker = Waker::from(other.clone());
        assert!(
            Pin::new(&mut q)
                .poll(&mut Context::from_waker(&other_waker))
                .is_pending()
        );
        q.get().waker.clone().unwrap().wake();
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
    }

    fn data(text: &str) -> String {
        let mut b = BytesMut::new();
        put_data(&mut b, text);
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// Chunks sent on a channel, as a subscription would produce them.
    struct Chunks(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl Events for Chunks {
        const VIA: Via = Via::Stream;

        async fn next_chunk(&mut self) -> Option<(Out, u64)> {
            self.0.recv().await.map(|b| (b.into(), 1))
        }
    }

    /// A stream of the chunks sent on `rx`, with `heartbeat`.
    fn chunks_body(
        rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
        heartbeat: Duration,
        shutdown: watch::Receiver<bool>,
        output: Arc<Output>,
    ) -> Body {
        super::body(
            Chunks(rx),
            "",
            heartbeat,
            Duration::from_secs(1),
            shutdown,
            output,
            Arc::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_budget_only_a_stream_that_keeps_up_reads_on() {
        let output = Arc::new(Output::new(100, Duration::from_secs(60)));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (_stop, shutdown) = watch::channel(false);
        let mut body = chunks_body(rx, Duration::from_secs(30), shutdown, output.clone());
        let mut next = async || {
            let frame = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
            frame.ok().flatten().map(|f| {
                let mut out = f.unwrap().into_data().unwrap();
                let n = bytes::Buf::remaining(&out);
                bytes::Buf::copy_to_bytes(&mut out, n)
            })
        };
        assert!(next().await.is_some(), "the prelude");
        tx.send(Bytes::from_static(b"a")).unwrap();
        assert_eq!(next().await.unwrap(), "a");
        // Other connections hold more than the budget.
        output.add(1000);
        // This one took "a" at once: it reads on.
        tx.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(next().await.unwrap(), "b");
        // It took "b" only after 100 ms: it waits for room.
        tokio::time::advance(Duration::from_millis(100)).await;
        tx.send(Bytes::from_static(b"c")).unwrap();
        assert_eq!(next().await, None, "read over the budget");
        output.take(1000);
        assert_eq!(next().await.unwrap(), "c");
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_comes_after_a_quiet_heartbeat_period_only_and_shutdown_ends_the_stream() {
        let output = Arc::new(Output::new(1 << 20, Duration::from_secs(60)));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(false);
        let mut body = chunks_body(rx, Duration::from_secs(10), shutdown, output);
        let start = tokio::time::Instant::now();
        // The next frame's text and when it came (seconds since the start);
        // None when the stream ended.
        let mut next = async || {
            body.frame().await.map(|f| {
                let mut out = f.unwrap().into_data().unwrap();
                let n = bytes::Buf::remaining(&out);
                let b = bytes::Buf::copy_to_bytes(&mut out, n);
                (
                    String::from_utf8(b.to_vec()).unwrap(),
                    start.elapsed().as_secs(),
                )
            })
        };
        assert!(next().await.is_some(), "the prelude");
        // An event every 6 s for a minute: never 10 s quiet, no heartbeat.
        let sender = tokio::spawn(async move {
            for i in 0..10 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                tx.send(Bytes::from(format!("e{i}"))).unwrap();
            }
            tx
        });
        for i in 0..10 {
            assert_eq!(next().await.unwrap(), (format!("e{i}"), 6 * (i + 1)));
        }
        let _tx = sender.await.unwrap();
        // Then quiet: a heartbeat 10 s after the last event, and every 10 s.
        assert_eq!(next().await.unwrap(), (": heartbeat\n\n".to_owned(), 70));
        assert_eq!(next().await.unwrap(), (": heartbeat\n\n".to_owned(), 80));
        // The node stops: the stream ends at once.
        let (ended, ()) = tokio::join!(next(), async {
            tokio::time::advance(Duration::from_secs(1)).await;
            stop.send(true).unwrap();
        });
        assert_eq!(ended, None);
    }

    fn message(seq: u64, payload: Bytes) -> Arc<Message> {
        Arc::new(Message {
            id: switchyard_model::MessageId {
                origin: switchyard_model::NodeId(7),
                seq,
            },
            topic: "t".parse().unwrap(),
            stream_seq: seq,
            timestamp: switchyard_model::Timestamp::from_millis(1),
            key: None,
            headers: Vec::new(),
            payload,
        })
    }

    fn delivery(messages: Vec<Arc<Message>>) -> Delivery {
        let mut cursor = switchyard_model::Cursor::earliest();
        for m in &messages {
            cursor.advance(m.id.origin, m.id.seq);
        }
        Delivery {
            gaps: Vec::new(),
            messages,
            start: switchyard_model::Cursor::earliest(),
            cursor,
            skipped: 0,
        }
    }

    /// The events as one string, and how many of its parts point at a
    /// message's own payload.
    fn formatted(d: &Delivery) -> (String, usize) {
        let mut chunk = format_delivery(d, Format::Raw);
        let shared = chunk
            .parts()
            .iter()
            .filter(|p| {
                d.messages
                    .iter()
                    .any(|m| m.payload.len() == p.len() && m.payload.as_ptr() == p.as_ptr())
            })
            .count();
        let n = bytes::Buf::remaining(&chunk);
        let all = bytes::Buf::copy_to_bytes(&mut chunk, n);
        (String::from_utf8(all.to_vec()).unwrap(), shared)
    }

    #[test]
    fn large_single_line_payloads_are_sent_without_a_copy() {
        let big = Bytes::from("y".repeat(SHARED_PAYLOAD_MIN));
        let lines = Bytes::from(format!("{}\nz", "y".repeat(SHARED_PAYLOAD_MIN)));
        let d = delivery(vec![
            message(1, Bytes::from_static(b"small")),
            message(2, big.clone()),
            message(3, lines.clone()),
            message(4, big.clone()),
            message(5, Bytes::from_static(b"\xff\xfe")),
        ]);
        let (text, shared) = formatted(&d);
        // Messages 2 and 4 are the messages' own bytes; 3 (two lines) is
        // copied as two `data:` lines, 5 (not UTF-8) as base64.
        assert_eq!(shared, 2);
        let mut ids: Vec<String> = Vec::new();
        d.for_each_with_cursor(|_, c| ids.push(c.encode()));
        let big = "y".repeat(SHARED_PAYLOAD_MIN);
        let expected = format!(
            "id: {}\nevent: message\ndata: small\n\n\
             id: {}\nevent: message\ndata: {big}\n\n\
             id: {}\nevent: message\ndata: {big}\ndata: z\n\n\
             id: {}\nevent: message\ndata: {big}\n\n\
             id: {}\nevent: binary\ndata: //4=\n\n",
            ids[0], ids[1], ids[2], ids[3], ids[4]
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn payloads_below_the_threshold_are_one_buffer() {
        let d = delivery(vec![
            message(1, Bytes::from("y".repeat(SHARED_PAYLOAD_MIN - 1))),
            message(2, Bytes::from_static(b"b")),
        ]);
        assert_eq!(format_delivery(&d, Format::Raw).parts().len(), 1);
        // The JSON envelope is always written out.
        let big = delivery(vec![message(
            1,
            Bytes::from("y".repeat(SHARED_PAYLOAD_MIN)),
        )]);
        assert_eq!(format_delivery(&big, Format::Json).parts().len(), 1);
    }

    #[test]
    fn multi_line_payloads_become_several_data_lines() {
        assert_eq!(data("one"), "data: one\n");
        assert_eq!(data("a\nb"), "data: a\ndata: b\n");
        assert_eq!(data("a\r\nb\rc\n"), "data: a\ndata: b\ndata: c\ndata: \n");
        assert_eq!(data(""), "data: \n");
    }
}
