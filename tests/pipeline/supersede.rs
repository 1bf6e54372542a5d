//! Desired state, not a list of commands: a newer generation supersedes an
//! older one whatever the order jobs run in, two reconciliations of one code
//! never run at once, and a burst of updates costs at most two update calls.

use std::time::Duration;

use latchkey_core::OutcomeState;
use latchkey_fake_seam::{DeviceBehaviour, SeedCode};
use latchkey_tests::app::{AppOptions, spawn_app};
use serde_json::json;

use crate::{calls, finished, update_landed, want};

#[tokio::test]
async fn ten_updates_of_one_code_in_a_second_cost_at_most_two_update_calls() {
    let app = spawn_app(AppOptions::default()).await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(200) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    app.store.enqueue(want(json!({"access_code_id": id, "code": "1000"}))).await.unwrap();
    // The first update is on its way to the lock; the next nine arrive within
    // the update spacing (1 s) and must coalesce into one more update.
    update_landed(&app, &id).await;
    let mut last = 0;
    for i in 1..10 {
        last = app.store.enqueue(want(json!({"access_code_id": id, "code": format!("{}", 1000 + i)}))).await.unwrap();
    }
    let o = finished(&app, &id, last, Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert_eq!(app.seam.access_code(&id).unwrap()["code"], "1009", "the newest PIN is on the lock");
    let updates = calls(&app, &id, "/access_codes/update");
    assert_eq!(updates.len(), 2, "a burst of ten: the first update and one for the other nine: {updates:#?}");
    app.stop().await;
}

#[tokio::test]
async fn racing_generations_across_two_workers_end_with_the_newest_on_the_lock() {
    let app = spawn_app(AppOptions { workers: 2, ..AppOptions::default() }).await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(30) });
        codes.push(app.seam.add_access_code(&device, SeedCode::default()));
    }
    // Ten generations of each code, interleaved, from several producers at once.
    let mut producers = Vec::new();
    for p in 0..4u32 {
        let store = app.store.clone();
        let codes = codes.clone();
        producers.push(tokio::spawn(async move {
            for g in 0..10u32 {
                for (c, id) in codes.iter().enumerate() {
                    if (c as u32 + g) % 4 == p {
                        let pin = format!("{:04}", g * 100 + c as u32);
                        store
                            .enqueue(want(json!({"access_code_id": id, "code": pin, "name": format!("gen {g}")})))
                            .await
                            .unwrap();
                    }
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    for id in &codes {
        let newest = app.store.outcome(id).await.unwrap().unwrap().generation;
        let o = finished(&app, id, newest, Duration::from_secs(30)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
        let on_seam = app.seam.access_code(id).unwrap();
        let desired = app.store.load(id).await.unwrap().unwrap().desired;
        assert_eq!(on_seam["code"].as_str(), desired.code.as_deref(), "{id}: the lock has the newest generation's PIN");
        assert_eq!(o.last_seen.unwrap().code, desired.code);
    }
    app.stop().await;
}
