//! The HTTP listener every latchkey HTTP server runs on: an axum `Router`
//! served over HTTP/1.1 with limits, so that no client, slow or hostile, can
//! take the process's file descriptors or starve the other clients.
//!
//! - At most [`Limits::max_connections`] connections are open at once. A
//!   connection over the limit is accepted and closed at once (so the kernel's
//!   backlog never fills with connections nobody will serve); a WARN says so at
//!   most once per [`WARN_EVERY`].
//! - A request's headers must arrive within [`Limits::header_read_timeout`];
//!   the same timer runs while a kept-alive connection waits for its next
//!   request, so an idle keep-alive connection is closed after it too.
//! - A handler gets [`Limits::request_timeout`]; after it the client gets a 503.
//! - A connection on which no byte moves either way for
//!   [`Limits::idle_timeout`] (a client that stops reading its response, a
//!   socket that went silent) is dropped.
//! - A failed `accept` (`EMFILE`: out of file descriptors) is retried after a
//!   short pause instead of spinning.
//! - Shutdown stops accepting, lets requests in flight finish (they get
//!   [`Limits::request_timeout`] more) and returns once every connection is
//!   closed.

use std::{
    convert::Infallible,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{Request, Response, StatusCode},
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};
use tower::ServiceExt;

/// A WARN about refused connections or failing `accept`s is logged at most
/// this often; it counts the events since the last one.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// How long to wait after a failed `accept` (out of file descriptors, out of
/// memory) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one listener allows. `Limits::default()` is the ops listener's
/// (`/livez`, `/readyz`, `/metrics`: kubelet probes and a Prometheus scrape,
/// a few connections at a time, each request answered within 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (at least 1); more are closed as they come.
    /// Default 256: far more than probes and scrapes ever need, far fewer
    /// than the process's file descriptors, which the Seam and Redis
    /// clients need too.
    pub max_connections: u32,
    /// Time for a request's headers to arrive, and for an idle kept-alive
    /// connection to start its next request. Default 5 s: a real client sends
    /// its headers in one packet.
    pub header_read_timeout: Duration,
    /// Time for a handler to answer, from the end of the headers; then the
    /// client gets a 503. Default 10 s: `/readyz` and `/metrics` give Redis 2 s,
    /// kubelet gives up after 3 s.
    pub request_timeout: Duration,
    /// A connection on which no byte moves either way for this long is
    /// dropped (a client that stopped reading). Keep it above
    /// `request_timeout`: a handler at work moves no bytes. Default 30 s.
    pub idle_timeout: Duration,
    /// The largest request head (request line and headers), bytes; a larger
    /// one gets a 431. Default 16 KiB.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then
/// stops accepting, lets the requests in flight finish and returns once every
/// connection is closed. It never fails: `accept` errors are logged and retried.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    serve_counted(listener, app, limits, shutdown, Arc::default()).await;
}

/// Counts of connections, for the tests.
#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicUsize,
    refused: AtomicUsize,
    /// Sockets of accepted connections not yet closed, and the most at once.
    open: AtomicUsize,
    peak: AtomicUsize,
}

async fn serve_counted(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    stats: Arc<Stats>,
) {
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max as usize));
    let (stop, _) = watch::channel(());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let http = Arc::new(http);
    let (mut refusals, mut failures) = (Throttled::default(), Throttled::default());
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    if let Some(n) = failures.note() {
                        tracing::warn!(error = %e, failures = n, "listener cannot accept connections; retrying");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = refusals.note() {
                tracing::warn!(limit = max, refused = n, "listener at its connection limit: closing new connections");
            }
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let io = Watched::new(stream, stats.clone());
        tokio::spawn(connection(http.clone(), io, app.clone(), limits, stop.subscribe(), permit));
    }
    drop(listener);
    stop.send_replace(());
    // Every connection holds a permit until its socket is closed.
    let _all = permits.acquire_many(max).await;
}

/// Serves one connection until it ends, goes idle, or outlives the grace
/// after shutdown. The permit is released after the socket is closed.
async fn connection(
    http: Arc<http1::Builder>,
    io: Watched,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = io.activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = app.clone();
        async move {
            match tokio::time::timeout(limits.request_timeout, app.oneshot(request)).await {
                Ok(answer) => answer,
                Err(_) => Ok::<_, Infallible>(timed_out()),
            }
        }
    });
    let mut conn = pin!(http.serve_connection(TokioIo::new(io), service));
    let mut hard_deadline: Option<Instant> = None;
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        let wake = hard_deadline.map_or(idle_deadline, |d| d.min(idle_deadline));
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            _ = stop.changed(), if hard_deadline.is_none() => {
                conn.as_mut().graceful_shutdown();
                hard_deadline = Some(Instant::now() + limits.request_timeout);
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= activity.last() + limits.idle_timeout || hard_deadline.is_some_and(|d| now >= d) {
                    tracing::debug!("dropping a connection that stalled");
                    return;
                }
            }
        }
    }
}

fn timed_out() -> Response<Body> {
    let mut response = Response::new(Body::from("request timed out\n"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// Errors of one incoming connection (it went away before `accept`), not of
/// the listener: the next `accept` can go ahead at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted)
}

/// Rate limit for a WARN: `note` an event; it answers with the number of
/// events to report when a WARN is due.
#[derive(Debug, Default)]
struct Throttled {
    last: Option<Instant>,
    unreported: u64,
}

impl Throttled {
    fn note(&mut self) -> Option<u64> {
        self.unreported += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// When a connection last moved a byte.
#[derive(Debug)]
struct Activity {
    since: Instant,
    /// Milliseconds from `since`.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// An accepted socket that notes when it moves bytes, and counts itself open
/// until it is dropped (closed).
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    stats: Arc<Stats>,
}

impl Watched {
    fn new(stream: TcpStream, stats: Arc<Stats>) -> Self {
        let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak.fetch_max(open, Ordering::Relaxed);
        let activity = Arc::new(Activity { since: Instant::now(), last_ms: AtomicU64::new(0) });
        Self { stream, activity, stats }
    }

    fn moved<T>(&self, done: Poll<std::io::Result<T>>, moved: bool) -> Poll<std::io::Result<T>> {
        if moved {
            self.activity.touch();
        }
        done
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let done = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        self.moved(done, moved)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let done = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        let moved = matches!(done, Poll::Ready(Ok(n)) if n > 0);
        self.moved(done, moved)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let done = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        let moved = matches!(done, Poll::Ready(Ok(n)) if n > 0);
        self.moved(done, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::oneshot,
        task::JoinHandle,
    };

    use super::*;

    /// Short limits, so the tests are quick.
    fn quick() -> Limits {
        Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(1),
            max_header_bytes: 16 * 1024,
        }
    }

    fn app() -> Router {
        Router::new()
            .route("/livez", get(|| async { "ok\n" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late\n"
                }),
            )
            .route("/big", get(|| async { vec![b'x'; 64 << 20] }))
    }

    struct Server {
        addr: SocketAddr,
        stats: Arc<Stats>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    async fn start(limits: Limits) -> Server {
        start_app(limits, app()).await
    }

    async fn start_app(limits: Limits, app: Router) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_counted(listener, app, limits, shutdown, stats.clone()));
        Server { addr, stats, stop, task }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
    }

    async fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < within, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads until the peer closes (or resets) the connection; what it sent.
    async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn silent_connections_over_the_limit_are_refused_then_reaped() {
        // The idle timeout is out of reach: the header timeout reaps them.
        let limits =
            Limits { header_read_timeout: Duration::from_secs(1), idle_timeout: Duration::from_secs(60), ..quick() };
        let server = start(limits).await;
        let (max, extra) = (limits.max_connections as usize, 8);
        let mut silent = Vec::new();
        for _ in 0..max + extra {
            silent.push(TcpStream::connect(server.addr).await.unwrap());
        }
        let stats = server.stats.clone();
        wait_until(Duration::from_secs(3), "every connection accepted or refused", || {
            stats.accepted.load(Ordering::Relaxed) + stats.refused.load(Ordering::Relaxed) >= max + extra
        })
        .await;
        assert!(stats.refused.load(Ordering::Relaxed) >= extra, "{stats:?}");

        // Once the header timeout reaps the silent ones, probes get through.
        let start = Instant::now();
        let client = client();
        loop {
            let answer = client.get(format!("http://{}/livez", server.addr)).send().await;
            if let Ok(answer) = answer {
                assert_eq!(answer.status(), reqwest::StatusCode::OK);
                assert_eq!(answer.text().await.unwrap(), "ok\n");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "/livez not answered: {answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for stream in &mut silent {
            let closed = tokio::time::timeout(Duration::from_secs(5), read_to_close(stream)).await;
            assert_eq!(closed.expect("the server closes every silent connection"), b"");
        }
        assert!(stats.peak.load(Ordering::Relaxed) <= max, "{stats:?}");
        assert!(stats.open.load(Ordering::Relaxed) <= 1, "{stats:?}");
    }

    #[tokio::test]
    async fn headers_sent_byte_by_byte_are_cut_off_at_the_header_timeout() {
        let server = start(quick()).await;
        let (mut read, mut write) = TcpStream::connect(server.addr).await.unwrap().into_split();
        let start = Instant::now();
        let trickle = tokio::spawn(async move {
            for byte in b"GET /livez HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter().cycle().take(100) {
                if write.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let took = start.elapsed();
        trickle.abort();
        assert!(closed.is_ok(), "the server kept a trickling client for 5 s");
        assert!(took >= Duration::from_millis(250), "closed after {took:?}, before the header timeout");
        assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{}", String::from_utf8_lossy(&got));
        wait_until(Duration::from_secs(3), "the socket closed", || server.stats.open.load(Ordering::Relaxed) == 0)
            .await;
    }

    #[tokio::test]
    async fn a_keep_alive_client_is_served_on_one_connection() {
        let server = start(Limits { idle_timeout: Duration::from_secs(60), ..quick() }).await;
        let client = client();
        for _ in 0..5 {
            let answer = client.get(format!("http://{}/livez", server.addr)).send().await.unwrap();
            assert_eq!(answer.status(), reqwest::StatusCode::OK);
            assert_eq!(answer.text().await.unwrap(), "ok\n");
        }
        assert_eq!(server.stats.accepted.load(Ordering::Relaxed), 1);

        // Raw: two requests on one connection, then it idles and the header
        // timeout closes it.
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        for _ in 0..2 {
            stream.write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\nok\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&got));
        }
        let closed = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut stream)).await;
        assert_eq!(closed.expect("an idle keep-alive connection is closed"), b"");
        assert_eq!(server.stats.accepted.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_slow_handler_is_answered_503_at_the_request_timeout() {
        let server = start(quick()).await;
        let start = Instant::now();
        let answer = client().get(format!("http://{}/slow", server.addr)).send().await.unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_idle_timeout() {
        let server = start(quick()).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let stats = server.stats.clone();
        wait_until(Duration::from_secs(3), "accepted", || stats.accepted.load(Ordering::Relaxed) == 1).await;
        // 64 MiB do not fit in the socket buffers: the write stalls, then the
        // connection is dropped.
        wait_until(Duration::from_secs(10), "the stalled connection dropped", || {
            stats.open.load(Ordering::Relaxed) == 0
        })
        .await;
        drop(stream);
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_and_stops_accepting() {
        let limits = Limits { request_timeout: Duration::from_secs(3), ..quick() };
        let started = Arc::new(tokio::sync::Notify::new());
        let handler_started = started.clone();
        let app = Router::new().route(
            "/wait",
            get(move || {
                let started = handler_started.clone();
                async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    "done\n"
                }
            }),
        );
        let server = start_app(limits, app).await;
        let (addr, stats) = (server.addr, server.stats.clone());
        let in_flight = tokio::spawn(async move { client().get(format!("http://{addr}/wait")).send().await });
        started.notified().await;
        server.stop.send(()).unwrap();
        let answer = in_flight.await.unwrap().unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::OK);
        assert_eq!(answer.text().await.unwrap(), "done\n");
        tokio::time::timeout(Duration::from_secs(5), server.task).await.expect("serve returns").unwrap();
        assert_eq!(stats.open.load(Ordering::Relaxed), 0);
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
    }
}
