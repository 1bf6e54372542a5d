//! A real headless Chromium, driven over the W3C WebDriver protocol by
//! Debian's `chromedriver` (packages `chromium` and `chromium-driver`, which
//! `.ci/run` installs). The protocol is JSON over HTTP, so this speaks it with
//! the tests' own reqwest: the WebDriver crates pull a second TLS stack in.

use std::{process::Stdio, time::Duration};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session. On drop (a test that panicked before
/// `quit`), the driver's whole process group goes, Chromium with it.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: tokio::process::Child,
    group: Option<u32>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn which(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).map(|p| p.display().to_string())
    })
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> Self {
        let driver_bin = which(&["chromedriver"]).expect(
            "the console tests need Chromium and its WebDriver: apt-get install -y chromium chromium-driver (.ci/run does)",
        );
        let chromium = which(&["chromium", "chromium-browser", "google-chrome"]);
        let port = crate::free_tcp_port();
        let driver = tokio::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400"]
        });
        if let Some(binary) = chromium {
            options["binary"] = json!(binary);
        }
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver could not start Chromium: {created}"))
            .to_string();
        let group = driver.id();
        Self { http, session: format!("{base}/session/{session}"), _driver: driver, group }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method.clone(), path, body)
            .await
            .unwrap_or_else(|(error, message)| panic!("WebDriver {method} {path}: {error}: {message}"))
    }

    /// A WebDriver command; its error (name, message) when it failed.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.expect("chromedriver answers").json().await.expect("JSON");
        match answer["value"]["error"].as_str() {
            Some(error) => Err((error.to_string(), answer["value"]["message"].clone())),
            None => Ok(answer["value"].clone()),
        }
    }

    /// Opens a URL and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// The element matching a CSS selector (the first), if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found =
            self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found.as_array().and_then(|a| a.first()).and_then(|e| e[ELEMENT].as_str()).map(str::to_string)
    }

    async fn must_find(&self, css: &str) -> String {
        match self.find(css).await {
            Some(e) => e,
            None => panic!("no element matches {css:?} on the page:\n{}", self.text("body").await),
        }
    }

    /// Types into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.must_find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }

    /// Clicks the element matching `css` (and waits for a navigation it starts).
    pub async fn click(&self, css: &str) {
        let e = self.must_find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    /// The text a person sees in the element matching `css` ("" when none does).
    /// An element a navigation replaced between finding and reading it (the
    /// page after a click, or its refresh) is found again.
    pub async fn text(&self, css: &str) -> String {
        for _ in 0..20 {
            let Some(e) = Box::pin(self.find(css)).await else { return String::new() };
            match self.try_call(reqwest::Method::GET, &format!("/element/{e}/text"), None).await {
                Ok(text) => return text.as_str().unwrap_or("").to_string(),
                Err((error, _)) if error == "stale element reference" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((error, message)) => panic!("WebDriver text of {css:?}: {error}: {message}"),
            }
        }
        panic!("{css:?} went stale 20 times in a row")
    }

    /// The text of the element matching `css` once it contains `needle`
    /// (a click's navigation may still be under way); panics with what the
    /// page shows after 10 s.
    pub async fn wait_for(&self, css: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            if std::time::Instant::now() > deadline {
                panic!("{css:?} never showed {needle:?}; the page shows:\n{}", self.text("body").await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or("")).expect("a PNG")
    }

    /// Closes the session (the driver goes with the value).
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
