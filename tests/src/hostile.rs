//! A hostile Seam: a real HTTP server in front of the simulator that answers
//! for chosen access codes the way a broken or malicious Seam (or something
//! between latchkey and Seam) would, and passes every other request through
//! to the simulator untouched. A test points the worker at it, scripts a few
//! codes, and checks both that latchkey believes nothing false about them and
//! that every other code reconciles as usual.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use tokio::{net::TcpListener, task::JoinHandle};

/// How the hostile Seam answers a scripted request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with a body that is not JSON; it quotes the request, PIN and all,
    /// the way a proxy's error page might.
    NotJson,
    /// 200 with JSON of the wrong shape.
    WrongShape,
    /// The simulator's answer about this other access code instead.
    OtherCode(String),
    /// 200 with a body of this many bytes (streamed, no Content-Length).
    Huge(usize),
    /// 200, one byte of body every half second, forever.
    SlowDrip,
    /// 307 to this URL (another origin).
    Redirect(String),
    /// 429 with this `Retry-After` header value.
    RetryAfter(String),
}

#[derive(Debug, Default)]
struct Scripts {
    /// (access code id, API path) -> the answer, every time.
    answers: HashMap<(String, String), Answer>,
    /// (access code id, API path) -> requests seen.
    seen: HashMap<(String, String), usize>,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    scripts: Arc<Mutex<Scripts>>,
}

/// The running server. Dropped: stopped.
pub struct HostileSeam {
    addr: SocketAddr,
    scripts: Arc<Mutex<Scripts>>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for HostileSeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileSeam").field("addr", &self.addr).finish()
    }
}

impl Drop for HostileSeam {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HostileSeam {
    /// Starts one in front of the simulator at `upstream` (its base URL).
    pub async fn start(upstream: String) -> Self {
        let scripts = Arc::new(Mutex::new(Scripts::default()));
        let shared = Shared { upstream, client: reqwest::Client::new(), scripts: scripts.clone() };
        let app = Router::new().fallback(handle).with_state(shared);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, scripts, server }
    }

    /// Its base URL, for the worker's `--seam-endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, answers every request to `path` about `access_code_id` with `answer`.
    pub fn script(&self, access_code_id: &str, path: &str, answer: Answer) {
        self.scripts.lock().unwrap().answers.insert((access_code_id.into(), path.into()), answer);
    }

    /// Requests to `path` about `access_code_id` so far (scripted or passed through).
    pub fn seen(&self, access_code_id: &str, path: &str) -> usize {
        self.scripts.lock().unwrap().seen.get(&(access_code_id.to_string(), path.to_string())).copied().unwrap_or(0)
    }
}

async fn handle(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let id = json.get("access_code_id").and_then(|v| v.as_str()).map(str::to_string);
    let answer = id.as_ref().and_then(|id| {
        let key = (id.clone(), path.clone());
        let mut scripts = s.scripts.lock().unwrap();
        *scripts.seen.entry(key.clone()).or_default() += 1;
        scripts.answers.get(&key).cloned()
    });
    let forwarded = match answer {
        None => body.to_vec(),
        Some(Answer::OtherCode(other)) => {
            json["access_code_id"] = serde_json::Value::String(other);
            json.to_string().into_bytes()
        }
        Some(answer) => return hostile(answer, &body),
    };
    let mut request = s.client.post(format!("{}{path}", s.upstream)).body(forwarded);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v.clone());
        }
    }
    match request.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let retry_after = r.headers().get("retry-after").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut response = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
            if let Some(v) = retry_after {
                response.headers_mut().insert("retry-after", v);
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn hostile(answer: Answer, request: &[u8]) -> Response {
    match answer {
        Answer::NotJson => {
            let echo = String::from_utf8_lossy(request);
            (StatusCode::OK, format!("<html><body>upstream said: {echo} and then broke</body></html>")).into_response()
        }
        Answer::WrongShape => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"ok":true,"access_code":[1,2,3]}"#)
                .into_response()
        }
        Answer::Huge(bytes) => {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            let chunks = bytes.div_ceil(chunk.len());
            let stream = futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
        }
        Answer::SlowDrip => {
            let stream = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), ()))
            });
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
        }
        Answer::Redirect(to) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response(),
        Answer::RetryAfter(value) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, value)],
            r#"{"error":{"type":"rate_limited","message":"slow down"},"ok":false}"#,
        )
            .into_response(),
        Answer::OtherCode(_) => unreachable!("forwarded"),
    }
}
