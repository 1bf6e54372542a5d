//! Client behaviour against a plain HTTP server that answers what a test
//! needs, for cases no Seam simulator should produce: a 2xx whose body is not
//! JSON, and inspection of the headers the client sends.

use std::sync::{Arc, Mutex};

use axum::{Router, http::HeaderMap, routing::post};
use latchkey_seam::{ApiKey, Error, ErrorClass, SeamClient, SeamConfig, USER_AGENT_VALUE};

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
