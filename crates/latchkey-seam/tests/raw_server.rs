//! Client behaviour against a plain HTTP server that answers what a test
//! needs, for cases no Seam simulator should produce: a 2xx whose body is not
//! JSON, inspection of the headers the client sends, and hostile answers
//! (huge or dripping bodies, redirects, another code's data, PINs in bodies
//! that cannot be read). Answers HTTP itself cannot express wrongly enough
//! come from a raw TCP listener.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use latchkey_core::{CodeStatus, CodeType};
use latchkey_seam::{
    ApiKey, Error, ErrorClass, MAX_RETRY_AFTER, SeamClient, SeamConfig, USER_AGENT_VALUE, UpdateAccessCode,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn client(url: &str) -> SeamClient {
    SeamClient::new(&SeamConfig::new(url, ApiKey::new("seam_test_secret_key"))).unwrap()
}

#[tokio::test]
async fn requests_carry_the_bearer_key_the_user_agent_and_json() {
    let seen: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
    let store = seen.clone();
    let url = serve(Router::new().route(
        "/access_codes/get",
        post(move |headers: HeaderMap| async move {
            *store.lock().unwrap() = Some(headers);
            r#"{"access_code":{"access_code_id":"a","device_id":"d","type":"ongoing","status":"set","code":"1234","name":"n","errors":[],"warnings":[]},"ok":true}"#
        }),
    ))
    .await;
    let code = client(&url).get_access_code("a").await.unwrap();
    assert_eq!(code.code.as_deref(), Some("1234"));
    let headers = seen.lock().unwrap().clone().unwrap();
    assert_eq!(headers["authorization"], "Bearer seam_test_secret_key");
    assert_eq!(headers["user-agent"], USER_AGENT_VALUE);
    assert!(USER_AGENT_VALUE.starts_with("latchkey/"));
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_2xx_body_that_is_not_json_is_malformed() {
    let url = serve(Router::new().route("/access_codes/get", post(|| async { "<html>maintenance</html>" }))).await;
    let err = client(&url).get_access_code("a").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Malformed);
    assert!(err.to_string().contains("<html>maintenance</html>"), "{err}");
}

#[tokio::test]
async fn a_2xx_json_without_the_documented_fields_is_malformed() {
    let url =
        serve(Router::new().route("/access_codes/get", post(|| async { r#"{"ok":true,"access_code":{"id":"a"}}"# })))
            .await;
    let err = client(&url).get_access_code("a").await.unwrap_err();
    assert!(matches!(err, Error::Malformed { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_the_key_is_not_in_the_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = client(&url).get_access_code("a").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    let shown = format!("{err} {err:?} {}", full_chain(&err));
    assert!(!shown.contains("seam_test_secret_key"), "{shown}");
}

fn full_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(&format!(": {e}"));
        cur = e.source();
    }
    s
}

fn client_with_timeout(url: &str, request_timeout: Duration) -> SeamClient {
    let mut config = SeamConfig::new(url, ApiKey::new("seam_test_secret_key"));
    config.request_timeout = request_timeout;
    SeamClient::new(&config).unwrap()
}

/// Reads one request (headers and a `Content-Length` body) so that closing the
/// socket later does not reset the connection over unread bytes.
async fn read_request(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client hung up before sending its request");
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            while seen.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            return;
        }
    }
}

/// A raw server that answers one request with `head`, then runs `body` on the
/// socket; its task returns what `body` returns.
async fn raw<F, Fut>(head: &'static str, body: F) -> (String, JoinHandle<u64>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        body(stream).await
    });
    (url, task)
}

const FIFTY_MB: u64 = 50 * 1024 * 1024;

/// Writes 50 MB of JSON-ish filler (chunked-encoded when asked) until the
/// client stops reading; returns how much got written.
async fn flood(mut stream: TcpStream, chunked: bool) -> u64 {
    let piece = vec![b' '; 64 * 1024];
    let mut written = 0;
    while written < FIFTY_MB {
        let framed = if chunked {
            [format!("{:x}\r\n", piece.len()).into_bytes(), piece.clone(), b"\r\n".to_vec()].concat()
        } else {
            piece.clone()
        };
        if stream.write_all(&framed).await.is_err() {
            return written;
        }
        written += piece.len() as u64;
    }
    let _ = stream.write_all(if chunked { b"0\r\n\r\n" as &[u8] } else { b"" }).await;
    written
}

async fn assert_flood_refused(head: &'static str, chunked: bool) {
    let (url, server) = raw(head, move |s| flood(s, chunked)).await;
    let started = Instant::now();
    let err = client(&url).get_access_code("a").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Malformed { status: 200, .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Malformed);
    assert!(err.to_string().contains("body over 1 MiB"), "{err}");
    let written = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    // What the client read plus what the kernel buffered, far from 50 MB.
    assert!(written < FIFTY_MB / 2, "the server got to write {written} bytes");
}

#[tokio::test]
async fn a_50_mb_body_without_content_length_is_malformed_after_the_first_mib() {
    assert_flood_refused("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n", false).await;
}

#[tokio::test]
async fn a_50_mb_chunked_body_is_malformed_after_the_first_mib() {
    assert_flood_refused(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        true,
    )
    .await;
}

#[tokio::test]
async fn a_content_length_over_the_cap_is_refused_before_the_body_is_read() {
    // It announces 50 MB, then sends nothing: only the header can be judged.
    let (url, _server) =
        raw("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 52428800\r\n\r\n", |s| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
            0
        })
        .await;
    let started = Instant::now();
    let err = client_with_timeout(&url, Duration::from_secs(10)).get_access_code("a").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Malformed { status: 200, .. }), "{err:?}");
    assert!(err.to_string().contains("body over 1 MiB (Content-Length 52428800)"), "{err}");
}

#[tokio::test]
async fn a_huge_error_page_is_classified_by_its_status_from_its_first_mib() {
    let (url, server) =
        raw("HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n", |s| flood(s, true)).await;
    let err = client(&url).get_access_code("a").await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 503, error: None }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    let written = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    assert!(written < FIFTY_MB / 2, "the server got to write {written} bytes");
}

#[tokio::test]
async fn a_body_dripping_one_byte_at_a_time_is_cut_off_by_the_request_timeout() {
    let (url, _server) =
        raw("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n", |mut s| async move {
            for _ in 0..1000 {
                if s.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            0
        })
        .await;
    let started = Instant::now();
    let err = client_with_timeout(&url, Duration::from_millis(600)).get_access_code("a").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Timeout(..)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_names_only_the_host() {
    let elsewhere_hits = Arc::new(AtomicUsize::new(0));
    let hits = elsewhere_hits.clone();
    let elsewhere = serve(Router::new().fallback(move || async move {
        hits.fetch_add(1, Ordering::SeqCst);
        r#"{"ok":true}"#
    }))
    .await;
    let target = format!("{elsewhere}/access_codes/update?steal=1");
    let url =
        serve(Router::new().fallback(move || async move {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target.clone())], "")
        }))
        .await;
    let update =
        UpdateAccessCode { access_code_id: "a".into(), code: Some("8642".into()), ..UpdateAccessCode::default() };
    let err = client(&url).update_access_code(&update).await.unwrap_err();
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0, "the PIN went to the redirect's target");
    assert!(matches!(err, Error::Malformed { status: 307, .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains(elsewhere.trim_start_matches("http://")), "{shown}");
    assert!(!shown.contains("steal") && !shown.contains("8642"), "{shown}");
}

const OTHER_CODE: &str = r#"{"access_code":{"access_code_id":"someone_else","device_id":"d","type":"ongoing","status":"set","code":"1357","errors":[],"warnings":[]},"ok":true}"#;

#[tokio::test]
async fn an_answer_about_another_access_code_is_malformed() {
    let url = serve(
        Router::new()
            .route("/access_codes/get", post(|| async { OTHER_CODE }))
            .route(
                "/access_codes/update",
                post(|| async {
                    r#"{"action_attempt":{"action_attempt_id":"aa","action_type":"UPDATE_ACCESS_CODE","status":"pending"},"access_code":{"access_code_id":"someone_else","device_id":"d","type":"ongoing","status":"setting"},"ok":true}"#
                }),
            )
            .route(
                "/action_attempts/get",
                post(|| async {
                    r#"{"action_attempt":{"action_attempt_id":"another_attempt","action_type":"UPDATE_ACCESS_CODE","status":"success"},"ok":true}"#
                }),
            ),
    )
    .await;
    let client = client(&url);
    for err in [
        client.get_access_code("mine").await.unwrap_err(),
        client.find_access_code("mine").await.unwrap_err(),
        client
            .update_access_code(&UpdateAccessCode { access_code_id: "mine".into(), ..UpdateAccessCode::default() })
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, Error::Malformed { status: 200, .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains("\"mine\"") && shown.contains("\"someone_else\""), "{shown}");
        assert!(!shown.contains("1357"), "{shown}");
    }
    let err = client.get_action_attempt("my_attempt").await.unwrap_err();
    assert!(err.to_string().contains("\"my_attempt\"") && err.to_string().contains("\"another_attempt\""), "{err}");
}

#[tokio::test]
async fn no_error_about_an_unreadable_body_shows_the_pin() {
    let url = serve(
        Router::new()
            // The PIN as a number: the parser itself quotes it.
            .route(
                "/access_codes/get",
                post(|| async {
                    r#"{"access_code":{"access_code_id":"a","device_id":"d","type":"ongoing","status":"set","code":97531},"ok":true}"#
                }),
            )
            // Cut off mid-PIN.
            .route("/access_codes/update", post(|| async { r#"{"access_code":{"access_code_id":"a","code":"97531"# }))
            // An error page quoting the request.
            .route(
                "/access_codes/delete",
                post(|| async { (StatusCode::BAD_REQUEST, r#"<pre>{"access_code_id":"a","code":"97531"}</pre>"#) }),
            ),
    )
    .await;
    let client = client(&url);
    let update = UpdateAccessCode { access_code_id: "a".into(), ..UpdateAccessCode::default() };
    for err in [
        client.get_access_code("a").await.unwrap_err(),
        client.update_access_code(&update).await.unwrap_err(),
        client.delete_access_code("a").await.unwrap_err(),
    ] {
        let shown = format!("{err} {err:?} {}", full_chain(&err));
        assert!(!shown.contains("97531"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}

#[tokio::test]
async fn an_access_code_of_a_type_seam_added_later_is_read_not_refused() {
    let url = serve(Router::new().route(
        "/access_codes/get",
        post(|| async {
            r#"{"access_code":{"access_code_id":"a","device_id":"d","type":"recurring","status":"set","code":"1234"},"ok":true}"#
        }),
    ))
    .await;
    let code = client(&url).get_access_code("a").await.unwrap();
    assert_eq!((code.code_type, code.status), (CodeType::Ongoing, CodeStatus::Unknown));
}

#[tokio::test]
async fn an_absurd_retry_after_is_clamped_and_a_zero_one_is_no_hint() {
    for (value, expected) in [
        ("99999999", Some(MAX_RETRY_AFTER)),
        ("18446744073709551615", Some(MAX_RETRY_AFTER)),
        ("0", None),
        ("Thu, 01 Jan 1970 00:00:00 GMT", None),
        ("tomorrow", None),
    ] {
        let url = serve(
            Router::new()
                .fallback(move || async move { (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, value)], "") }),
        )
        .await;
        let err = client(&url).get_access_code("a").await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::RateLimited(expected), "{value}");
    }
}
