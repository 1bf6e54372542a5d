//! The console on `latchkey serve` (`/console`), in a real headless Chromium:
//! what the on-call engineer sees and does (sign in, the codes that need a
//! human, a search, a dead letter retried), and the refusals that keep it
//! safe (a read token cannot act; a form from another site is refused).

use std::time::{Duration, Instant};

use latchkey_core::{KIND_GAVE_UP, OutcomeState};
use latchkey_fake_seam::SeedCode;
use latchkey_tests::{
    app::{AppOptions, TEST_READ_TOKEN, TEST_WRITE_TOKEN, TestApp, spawn_app},
    browser::Browser,
};
use redis::AsyncCommands;
use serde_json::json;

use crate::{device, raw, reconcile, want};

/// Starts the worker on an app spawned without one, with one access code
/// whose job record someone broke (its `attempts` counter is not a number):
/// the job becomes a dead letter with the reason and its outcome `failed`
/// (`gave_up`); re-queued, it runs from a fresh budget and succeeds. Returns
/// that code's id once it is dead.
async fn dead_letter(app: &mut TestApp) -> String {
    let d = device(app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    app.store.enqueue(want(json!({"access_code_id": id, "code": "9753"}))).await.unwrap();
    let job = app.store.queue().keys_of(&id).job(&id);
    let _: () = raw(app).await.hset(job, "attempts", "abc").await.unwrap();
    app.start_worker();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.store.queue().dead_letters(10).await.unwrap().iter().any(|d| d.id == id) {
        assert!(Instant::now() < deadline, "{id} never became a dead letter: {:?}", app.store.outcome(&id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = app.store.outcome(&id).await.unwrap().unwrap();
    assert_eq!((o.state, o.error.as_ref().map(|e| e.kind.as_str())), (OutcomeState::Failed, Some(KIND_GAVE_UP)));
    id
}

#[tokio::test]
async fn the_on_call_engineer_signs_in_finds_a_code_and_retries_a_dead_letter() {
    let mut app = spawn_app(AppOptions { cluster: false, api: true, workers: 0, ..AppOptions::default() }).await;
    let bad = dead_letter(&mut app).await;
    let d = device(&app, 50);
    let good = app.seam.add_access_code(&d, SeedCode::default());
    // (eight digits: four, such as 1357, turn up by chance in the page's ids)
    let o = reconcile(&app, json!({"access_code_id": good, "code": "86420975"}), Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    let console = format!("{}/console", app.serve_url.as_ref().unwrap());

    let browser = Browser::start().await;
    browser.goto(&console).await;
    browser.wait_for("#login", "Sign in").await;
    // A token that is not in the file: refused, still on the sign-in form.
    browser.type_into("input[name=token]", "not-a-token-at-all-0000").await;
    browser.click("#login button").await;
    browser.wait_for("#login", "not one of").await;

    // A read token looks, and is offered no button that acts.
    browser.type_into("input[name=token]", TEST_READ_TOKEN).await;
    browser.click("#login button").await;
    browser.wait_for("header", "console (read)").await;
    let queue = browser.text("#queue").await;
    assert!(queue.contains("Workers alive") && queue.contains("Dead letters"), "{queue}");
    assert!(browser.text("#dead").await.contains(&bad));
    assert!(browser.find("#dead button").await.is_none(), "a read token sees no retry button");
    let attention = browser.text("#attention").await;
    assert!(attention.contains(&bad) && attention.contains("gave_up"), "{attention}");
    assert!(!attention.contains(&good), "{attention}");
    browser.click("header button").await;

    // A write token: the search shows the code's state, what Seam showed, its
    // history, and never the PIN.
    browser.wait_for("#login", "Sign in").await;
    browser.type_into("input[name=token]", TEST_WRITE_TOKEN).await;
    browser.click("#login button").await;
    browser.wait_for("header", "producer (write)").await;
    browser.type_into("input[name=code]", &good).await;
    browser.click("#search button").await;
    let detail = browser.wait_for("#code-detail", &good).await;
    assert!(detail.contains("succeeded") && detail.contains("History") && detail.contains("pending"), "{detail}");
    assert!(detail.contains("Last seen at Seam") && detail.contains("set"), "{detail}");
    assert!(!browser.text("body").await.contains("86420975"), "the page shows no PIN");
    // (the README's picture of the console)
    let shot = latchkey_tests::workspace_root().join("target/console.png");
    std::fs::write(&shot, browser.screenshot().await).unwrap();

    // Retry: the dead letter leaves the list at once, the code is reconciled,
    // and it no longer needs a human.
    browser.click("#dead button").await;
    browser.wait_for("#notice", "re-queued").await;
    assert!(!browser.text("#dead").await.contains(&bad), "{}", browser.text("#dead").await);
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.store.outcome(&bad).await.unwrap().unwrap().state != OutcomeState::Succeeded {
        assert!(Instant::now() < deadline, "the retried code was never reconciled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.goto(&format!("{console}?state=succeeded")).await;
    let recent = browser.wait_for("#recent", &bad).await;
    assert!(recent.contains(&good) && recent.contains("succeeded"), "{recent}");
    assert!(!browser.text("#attention").await.contains(&bad));
    assert!(browser.text("#dead").await.contains("None"));

    browser.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn the_console_refuses_cross_site_forms_read_tokens_that_act_and_strangers() {
    let mut app = spawn_app(AppOptions { cluster: false, api: true, workers: 0, ..AppOptions::default() }).await;
    let bad = dead_letter(&mut app).await;
    let console = format!("{}/console", app.serve_url.as_ref().unwrap());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = |token: &'static str| {
        let http = http.clone();
        let console = console.clone();
        async move {
            let r = http.post(format!("{console}/login")).form(&[("token", token)]).send().await.unwrap();
            assert_eq!(r.status(), 303);
            let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
            assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
            assert!(!cookie.contains(token), "the cookie holds no token");
            cookie.split(';').next().unwrap().to_string()
        }
    };
    let page = |cookie: String| {
        let http = http.clone();
        let console = console.clone();
        async move { http.get(&console).header("cookie", cookie).send().await.unwrap().text().await.unwrap() }
    };
    let csrf_of = |html: &str| html.split("name=\"csrf\" value=\"").nth(1).map(|r| r[..64].to_string());

    // Without a session: the sign-in form and nothing else.
    let anonymous = http.get(&console).send().await.unwrap();
    assert!(anonymous.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = anonymous.text().await.unwrap();
    assert!(html.contains("Sign in") && !html.contains(&bad));
    let r =
        http.post(format!("{console}/dead/retry")).form(&[("id", bad.as_str()), ("csrf", "x")]).send().await.unwrap();
    assert_eq!(r.status(), 303, "no session: back to sign-in");

    let writer = sign_in(TEST_WRITE_TOKEN).await;
    let csrf = csrf_of(&page(writer.clone()).await).expect("a write session's page has a retry form");
    let own = app.serve_url.clone().unwrap();
    let retry = |cookie: String, csrf: String, origin: String| {
        let http = http.clone();
        let console = console.clone();
        let bad = bad.clone();
        async move {
            http.post(format!("{console}/dead/retry"))
                .header("cookie", cookie)
                .header("origin", origin)
                .form(&[("id", bad.as_str()), ("csrf", csrf.as_str())])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // From another site, or without the page's CSRF token: refused, still dead.
    assert_eq!(retry(writer.clone(), csrf.clone(), "https://evil.example".into()).await, 403);
    assert_eq!(retry(writer.clone(), "0".repeat(64), own.clone()).await, 403);
    // A read token's session, even with a write session's CSRF token: refused.
    let reader = sign_in(TEST_READ_TOKEN).await;
    assert!(csrf_of(&page(reader.clone()).await).is_none());
    assert_eq!(retry(reader, csrf.clone(), own.clone()).await, 403);
    assert_eq!(app.store.queue().dead_letters(10).await.unwrap().len(), 1, "nothing was retried");
    // The page's own form: retried.
    assert_eq!(retry(writer, csrf, own).await, 303);
    assert!(app.store.queue().dead_letters(10).await.unwrap().is_empty());
    app.stop().await;
}
