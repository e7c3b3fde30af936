//! Server-Sent Events: formatting deliveries as events, and the streaming
//! body that follows a subscription.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use switchyard_model::Message;
use switchyard_router::{Delivery, Member, Subscription};
use tokio::sync::watch;

use crate::envelope::{envelope, gap};
use crate::metrics::{Metrics, SubscriberGuard, Via};
use crate::output::Output;
use crate::server::Body;

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

fn put_message(buf: &mut BytesMut, m: &Message, id: &str, format: Format) {
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
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

/// One chunk holding every event of a delivery: gap events first, then one
/// event per message with the cursor after it as `id:`.
pub(crate) fn format_delivery(d: &Delivery, format: Format) -> Bytes {
    let size: usize = d.messages.iter().map(|m| m.payload.len() + 96).sum();
    let mut buf = BytesMut::with_capacity(size + d.gaps.len() * 160);
    for g in &d.gaps {
        buf.put_slice(b"event: gap\n");
        put_data(&mut buf, &gap(g).to_string());
        buf.put_u8(b'\n');
    }
    for (m, cursor) in d.with_cursors() {
        put_message(&mut buf, m, &cursor.encode(), format);
    }
    if d.messages.is_empty() && d.skipped > 0 {
        // Everything read was filtered out: an event with only an `id:`
        // moves the client's Last-Event-ID past it without dispatching
        // anything (EventSource ignores events without data).
        buf.put_slice(b"id: ");
        buf.put_slice(d.cursor.encode().as_bytes());
        buf.put_slice(b"\n\n");
    }
    buf.freeze()
}

/// Where an SSE stream's events come from.
pub(crate) trait Events: Send + 'static {
    /// How the messages reach their client (for `/metrics`).
    const VIA: Via;

    /// The next chunk of events and the messages in it; `None` ends the
    /// stream. Must be cancel-safe: the stream drops it for heartbeats
    /// and shutdown.
    fn next_chunk(&mut self) -> impl Future<Output = Option<(Bytes, u64)>> + Send;
}

/// A fan-out subscription's events.
pub(crate) struct SubscriptionEvents {
    pub sub: Subscription,
    pub format: Format,
}

impl Events for SubscriptionEvents {
    const VIA: Via = Via::Stream;

    async fn next_chunk(&mut self) -> Option<(Bytes, u64)> {
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

    async fn next_chunk(&mut self) -> Option<(Bytes, u64)> {
        let batch = self.member.next().await?;
        let size: usize = batch.iter().map(|d| d.message.payload.len() + 128).sum();
        let mut buf = BytesMut::with_capacity(size);
        for d in &batch {
            let id = d.message.id.to_string();
            match self.format {
                Format::Json => {
                    let mut env = envelope(&d.message);
                    env["delivery"] = d.delivery.into();
                    buf.put_slice(b"id: ");
                    buf.put_slice(id.as_bytes());
                    buf.put_slice(b"\nevent: message\n");
                    put_data(&mut buf, &env.to_string());
                    buf.put_u8(b'\n');
                }
                Format::Raw => put_message(&mut buf, &d.message, &id, Format::Raw),
            }
        }
        Some((buf.freeze(), batch.len() as u64))
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
    shutdown: watch::Receiver<bool>,
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
    let state = State {
        events,
        heartbeat,
        shutdown,
        prelude: Some(prelude),
        output,
        handed: None,
        _subscriber: metrics.subscriber(matches!(E::VIA, Via::Group)),
        metrics,
    };
    let events = stream::unfold(state, |mut st| async move {
        if let Some(p) = st.prelude.take() {
            return Some((Ok::<_, Infallible>(Frame::data(p)), st));
        }
        if *st.shutdown.borrow() {
            return None;
        }
        let keeps_up = st.handed.is_some_and(|t| t.elapsed() <= KEEPS_UP);
        if st.output.is_over() && !keeps_up {
            tokio::select! {
                () = st.output.room() => {}
                _ = st.shutdown.changed() => return None,
            }
        }
        let chunk = tokio::select! {
            chunk = st.events.next_chunk() => {
                let (chunk, messages) = chunk?;
                st.metrics.delivered(E::VIA, messages);
                chunk
            }
            () = tokio::time::sleep(st.heartbeat) => Bytes::from_static(b": heartbeat\n\n"),
            _ = st.shutdown.changed() => return None,
        };
        st.handed = Some(tokio::time::Instant::now());
        Some((Ok(Frame::data(chunk)), st))
    });
    StreamBody::new(events).boxed_unsync()
}

/// One event: `event: <name>` with `data` (a single line).
pub(crate) fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> String {
        let mut b = BytesMut::new();
        put_data(&mut b, text);
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// Chunks sent on a channel, as a subscription would produce them.
    struct Chunks(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl Events for Chunks {
        const VIA: Via = Via::Stream;

        async fn next_chunk(&mut self) -> Option<(Bytes, u64)> {
            self.0.recv().await.map(|b| (b, 1))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_budget_only_a_stream_that_keeps_up_reads_on() {
        let output = Arc::new(Output::new(100, Duration::from_secs(60)));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (_stop, shutdown) = watch::channel(false);
        let mut body = super::body(
            Chunks(rx),
            "",
            Duration::from_secs(30),
            Duration::from_secs(1),
            shutdown,
            output.clone(),
            Arc::default(),
        );
        let mut next = async || {
            let frame = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
            frame
                .ok()
                .flatten()
                .map(|f| f.unwrap().into_data().unwrap())
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

    #[test]
    fn multi_line_payloads_become_several_data_lines() {
        assert_eq!(data("one"), "data: one\n");
        assert_eq!(data("a\nb"), "data: a\ndata: b\n");
        assert_eq!(data("a\r\nb\rc\n"), "data: a\ndata: b\ndata: c\ndata: \n");
        assert_eq!(data(""), "data: \n");
    }
}
