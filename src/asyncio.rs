//! Async receive for tokio (feature `tokio`): subscribers and consumers
//! whose waits are futures, built on their pollable fd
//! ([`Subscriber::event_fd`]) registered with tokio's reactor. Nothing
//! busy-polls and nothing blocks an executor thread.
//!
//! Every future here is cancel-safe: a message is taken from the ring only
//! in the poll that returns it, so a future dropped before it completes
//! (a lost `select!` branch, a `timeout`) has consumed nothing.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let name = format!("doc-async-{}", std::process::id());
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let bus = shmbus::Bus::open(&name)?;
//!     let mut rx = bus.subscriber::<u64>("ticks")?.into_async()?;
//!     let mut tx = bus.publisher::<u64>("ticks")?;
//!     tx.send(&9)?;
//!     assert_eq!(rx.recv().await?, 9);
//!     # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;

use crate::doorbell::{Doorbell, KeptFd};
use crate::error::Error;
use crate::{
    Bytes, Consumer, Message, PopError, Producer, Publisher, PushError, RecvError, SendError,
    Subscriber, TryPopError, TryPushError, TryRecvError, TrySendError,
};

/// Registers a handle's doorbell with the current tokio runtime.
fn register(topic: &str, fd: KeptFd) -> Result<AsyncFd<KeptFd>, Error> {
    let bus = fd.bus().to_owned();
    let io = |source| Error::Io {
        bus: bus.clone(),
        path: None,
        action: "registering a pollable handle with the tokio runtime",
        source: std::io::Error::other(format!("topic {topic:?}: {source}")),
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io(std::io::Error::other(
            "no tokio runtime: call into_async() inside one (with its I/O driver enabled)",
        )));
    }
    // tokio panics (rather than erring) in a runtime built without its I/O
    // driver; that is a setup mistake we can name.
    let registered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `KeptFd` holds the doorbell's `OwnedFd` open, and always
        // answers the same number, for as long as the registration lives.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
    }));
    match registered {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err(e)) => Err(io(e.into_parts().1)),
        Err(_) => Err(io(std::io::Error::other(
            "the tokio runtime has no I/O driver: build it with enable_io() or enable_all()",
        ))),
    }
}

/// A broadcast [`Subscriber`] whose receive is a future
/// ([`Subscriber::into_async`]); also a `futures` `Stream` of messages,
/// losses and errors that ends when the publisher is gone.
pub struct AsyncSubscriber<T> {
    fd: AsyncFd<KeptFd>,
    inner: Subscriber<T>,
}

/// A work-queue [`Consumer`] whose pop is a future
/// ([`Consumer::into_async`]); also a `futures` `Stream` that ends when
/// every producer is gone and the queue is empty.
pub struct AsyncConsumer<T> {
    fd: AsyncFd<KeptFd>,
    inner: Consumer<T>,
}

impl<T> Subscriber<T> {
    /// This subscriber, with futures for receiving on the current tokio
    /// runtime (feature `tokio`). Starts its doorbell thread (see
    /// [`event_fd`](Self::event_fd)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] outside a tokio runtime with I/O enabled, or if the
    /// eventfd or its thread cannot be made.
    pub fn into_async(mut self) -> Result<AsyncSubscriber<T>, Error> {
        let kept = self.doorbell()?.keep_open();
        let fd = register(self.topic(), kept)?;
        Ok(AsyncSubscriber { fd, inner: self })
    }
}

impl<T> Consumer<T> {
    /// This consumer, with futures for popping on the current tokio
    /// runtime (feature `tokio`). Starts its doorbell thread (see
    /// [`event_fd`](Self::event_fd)).
    ///
    /// # Errors
    ///
    /// As [`Subscriber::into_async`].
    pub fn into_async(mut self) -> Result<AsyncConsumer<T>, Error> {
        let kept = self.doorbell()?.keep_open();
        let fd = register(self.topic(), kept)?;
        Ok(AsyncConsumer { fd, inner: self })
    }
}

/// Waits for the doorbell after a `try_` call found nothing and armed
/// it: `Ready` once the fd is readable (its readiness then cleared, so
/// that the next ring wakes us again), `Pending` with `cx` registered. An
/// error of the reactor (it cannot happen for a registered eventfd)
/// becomes a wake at the next tick, so the call still completes.
fn poll_wait(fd: &AsyncFd<KeptFd>, cx: &mut Context<'_>) -> Poll<()> {
    match fd.poll_read_ready(cx) {
        Poll::Ready(Ok(mut guard)) => {
            guard.clear_ready();
            Poll::Ready(())
        }
        Poll::Ready(Err(_)) => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Polls `attempt` (a `try_` call that arms the doorbell when it must
/// wait) until it says something other than "empty" or "full": `or_wait`
/// turns its error into the blocking call's, or `None` to wait on the
/// doorbell and try again.
fn poll_attempts<R, E, F>(
    fd: &AsyncFd<KeptFd>,
    cx: &mut Context<'_>,
    mut attempt: impl FnMut() -> Result<R, E>,
    or_wait: impl Fn(E) -> Option<F>,
) -> Poll<Result<R, F>> {
    loop {
        match attempt().map_err(&or_wait) {
            Ok(value) => return Poll::Ready(Ok(value)),
            Err(Some(fail)) => return Poll::Ready(Err(fail)),
            Err(None) => {}
        }
        if poll_wait(fd, cx).is_pending() {
            return Poll::Pending;
        }
    }
}

impl<T> AsyncSubscriber<T> {
    /// The subscriber, for its other calls (`stats`, `next_seq`); for
    /// its blocking and `try_` receives, [`into_inner`](Self::into_inner).
    pub fn get_ref(&self) -> &Subscriber<T> {
        &self.inner
    }

    /// The subscriber back, without its tokio registration (its doorbell
    /// thread stays until it drops; `into_async` again reuses it).
    pub fn into_inner(self) -> Subscriber<T> {
        self.inner
    }

    /// Polls `attempt` (a `try_` receive, which arms the doorbell when it
    /// finds nothing) until it says something other than `Empty`.
    fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(&mut Subscriber<T>) -> Result<R, TryRecvError>,
    ) -> Poll<Result<R, RecvError>> {
        let inner = &mut self.inner;
        poll_attempts(&self.fd, cx, || attempt(inner), TryRecvError::or_wait)
    }
}

impl<T: Message> AsyncSubscriber<T> {
    /// Receives the next message, waiting without blocking the thread.
    /// Cancel-safe: dropped before it completes, it has taken nothing.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv`].
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The poll behind [`recv`](Self::recv), for hand-written futures.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, RecvError>> {
        self.poll_with(cx, Subscriber::try_recv)
    }
}

impl AsyncSubscriber<Bytes> {
    /// Receives the next message of a byte topic, as an owned copy.
    /// Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv_bytes`].
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>, RecvError> {
        std::future::poll_fn(|cx| self.poll_with(cx, |rx| rx.try_recv_bytes().map(<[u8]>::to_vec)))
            .await
    }
}

impl<T: Message> futures_core::Stream for AsyncSubscriber<T> {
    /// A message, or why there is none (`Lagged(n)`: `n` messages lost;
    /// the stream goes on after it).
    type Item = Result<T, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Ready(Err(RecvError::Disconnected)) => Poll::Ready(None),
            Poll::Ready(other) => Poll::Ready(Some(other)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> AsyncConsumer<T> {
    /// The consumer, for its other calls (`queue_stats`).
    pub fn get_ref(&self) -> &Consumer<T> {
        &self.inner
    }

    /// The consumer back, without its tokio registration.
    pub fn into_inner(self) -> Consumer<T> {
        self.inner
    }

    fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(&mut Consumer<T>) -> Result<R, TryPopError>,
    ) -> Poll<Result<R, PopError>> {
        let inner = &mut self.inner;
        poll_attempts(&self.fd, cx, || attempt(inner), TryPopError::or_wait)
    }
}

impl<T: Message> AsyncConsumer<T> {
    /// Pops the next message, waiting without blocking the thread.
    /// Cancel-safe: dropped before it completes, it has taken nothing.
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop`].
    pub async fn pop(&mut self) -> Result<T, PopError> {
        std::future::poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// The poll behind [`pop`](Self::pop).
    pub fn poll_pop(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, PopError>> {
        self.poll_with(cx, Consumer::try_pop)
    }
}

impl AsyncConsumer<Bytes> {
    /// Pops the next message of a byte queue, as an owned copy.
    /// Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop_bytes`].
    pub async fn pop_bytes(&mut self) -> Result<Vec<u8>, PopError> {
        std::future::poll_fn(|cx| self.poll_with(cx, |c| c.try_pop_bytes().map(<[u8]>::to_vec)))
            .await
    }
}

impl<T: Message> futures_core::Stream for AsyncConsumer<T> {
    type Item = Result<T, PopError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_pop(cx) {
            Poll::Ready(Err(PopError::Disconnected)) => Poll::Ready(None),
            Poll::Ready(other) => Poll::Ready(Some(other)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> std::fmt::Debug for AsyncSubscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncSubscriber").field(&self.inner).finish()
    }
}

impl<T> std::fmt::Debug for AsyncConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncConsumer").field(&self.inner).finish()
    }
}

/// A [`Publisher`] whose send is a future ([`Publisher::into_async`]): in
/// lossless mode it waits for room without blocking the thread; in
/// overwrite mode a send never waits.
pub struct AsyncPublisher<T> {
    fd: AsyncFd<KeptFd>,
    bell: Doorbell,
    inner: Publisher<T>,
}

/// A work-queue [`Producer`] whose push is a future
/// ([`Producer::into_async`]): it waits for room without blocking the
/// thread.
pub struct AsyncProducer<T> {
    fd: AsyncFd<KeptFd>,
    bell: Doorbell,
    inner: Producer<T>,
}

impl<T> Publisher<T> {
    /// This publisher, with futures for sending on the current tokio
    /// runtime (feature `tokio`). Starts a doorbell thread that waits for
    /// room in its place (see [`Subscriber::event_fd`]).
    ///
    /// # Errors
    ///
    /// As [`Subscriber::into_async`].
    pub fn into_async(self) -> Result<AsyncPublisher<T>, Error> {
        let bell = self.room_doorbell()?;
        let fd = register(self.topic(), bell.keep_open())?;
        Ok(AsyncPublisher {
            fd,
            bell,
            inner: self,
        })
    }
}

impl<T> Producer<T> {
    /// This producer, with futures for pushing on the current tokio
    /// runtime (feature `tokio`). Starts a doorbell thread that waits for
    /// room in its place.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::into_async`].
    pub fn into_async(self) -> Result<AsyncProducer<T>, Error> {
        let bell = self.room_doorbell()?;
        let fd = register(self.topic(), bell.keep_open())?;
        Ok(AsyncProducer {
            fd,
            bell,
            inner: self,
        })
    }
}

impl<T> AsyncPublisher<T> {
    /// The publisher, for its other calls (`next_seq`, `receiver_count`).
    pub fn get_ref(&self) -> &Publisher<T> {
        &self.inner
    }

    /// The publisher back, without its doorbell.
    pub fn into_inner(self) -> Publisher<T> {
        self.inner
    }

    fn poll_with(
        &mut self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(&mut Publisher<T>) -> Result<u64, TrySendError>,
    ) -> Poll<Result<u64, SendError>> {
        let (inner, bell) = (&mut self.inner, &self.bell);
        let attempt = || {
            let sent = attempt(inner);
            if matches!(sent, Err(TrySendError::Full)) {
                inner.arm_for_room(bell);
            }
            sent
        };
        poll_attempts(&self.fd, cx, attempt, TrySendError::or_wait)
    }
}

impl<T: Message> AsyncPublisher<T> {
    /// Publishes `msg`, waiting (lossless mode) for room without blocking
    /// the thread; returns its sequence number. Cancel-safe: dropped before
    /// it completes, it has published nothing.
    ///
    /// # Errors
    ///
    /// As [`Publisher::send`].
    pub async fn send(&mut self, msg: &T) -> Result<u64, SendError> {
        std::future::poll_fn(|cx| self.poll_with(cx, |tx| tx.try_send(msg))).await
    }
}

impl AsyncPublisher<Bytes> {
    /// Publishes `bytes` on a byte topic, waiting (lossless mode) for room.
    /// Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`Publisher::send_bytes`].
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<u64, SendError> {
        std::future::poll_fn(|cx| self.poll_with(cx, |tx| tx.try_send_bytes(bytes))).await
    }
}

impl<T> AsyncProducer<T> {
    /// The producer, for its other calls (`queue_stats`,
    /// `receiver_count`).
    pub fn get_ref(&self) -> &Producer<T> {
        &self.inner
    }

    /// The producer back, without its doorbell.
    pub fn into_inner(self) -> Producer<T> {
        self.inner
    }
}

impl<T: Message> AsyncProducer<T> {
    /// Pushes `value`, waiting for room without blocking the thread.
    /// Cancel-safe: dropped before it completes, it has pushed nothing.
    ///
    /// # Errors
    ///
    /// As [`Producer::push`], with the value handed back.
    pub async fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        let mut value = Some(value);
        std::future::poll_fn(|cx| loop {
            let Some(v) = value.take() else {
                // Polled after it completed: nothing left to push.
                return Poll::Ready(Ok(()));
            };
            match self.inner.try_push(v).map_err(TryPushError::or_wait) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(Ok(fail)) => return Poll::Ready(Err(fail)),
                Err(Err(back)) => value = Some(back),
            }
            self.inner.arm_for_room(&self.bell);
            if poll_wait(&self.fd, cx).is_pending() {
                return Poll::Pending;
            }
        })
        .await
    }
}

impl AsyncProducer<Bytes> {
    /// Pushes `bytes` on a byte queue, waiting for room. Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`Producer::push_bytes`].
    pub async fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), PushError<()>> {
        std::future::poll_fn(|cx| loop {
            match self
                .inner
                .try_push_bytes(bytes)
                .map_err(TryPushError::or_wait)
            {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(Ok(fail)) => return Poll::Ready(Err(fail)),
                Err(Err(())) => {}
            }
            self.inner.arm_for_room(&self.bell);
            if poll_wait(&self.fd, cx).is_pending() {
                return Poll::Pending;
            }
        })
        .await
    }
}

impl<T> std::fmt::Debug for AsyncPublisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncPublisher").field(&self.inner).finish()
    }
}

impl<T> std::fmt::Debug for AsyncProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncProducer").field(&self.inner).finish()
    }
}
