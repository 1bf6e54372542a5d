//! `latchkey repartition`: a running deployment moves to another number of
//! partitions, and no desired state is lost or made twice, no older PIN is
//! written over a newer one, while producers and workers go on.

use std::{collections::HashMap, time::Duration};

use latchkey_core::OutcomeState;
use latchkey_store::{Error, QueueConfig, Reconciliations, Redis, RedisConfig};
use latchkey_tests::app::{AppOptions, TestApp, spawn_app};

use crate::{finished, seed_codes, want};

async fn admin(app: &TestApp) -> Reconciliations {
    let redis = Redis::connect(&RedisConfig::new(&app.redis_url)).await.unwrap();
    Reconciliations::open_recorded(redis, QueueConfig { prefix: app.prefix.clone(), ..QueueConfig::default() })
        .await
        .unwrap()
}

async fn opens_with(app: &TestApp, partitions: u32) -> Result<Reconciliations, Error> {
    let redis = Redis::connect(&RedisConfig::new(&app.redis_url)).await.unwrap();
    Reconciliations::open(redis, QueueConfig { prefix: app.prefix.clone(), partitions, ..QueueConfig::default() }).await
}

/// Moves `app` (on `from` partitions) to `to` while a producer keeps giving
/// its codes new PINs, then checks every code ends with the last PIN given,
/// one generation per enqueue.
async fn move_while_running(from: u32, to: u32) {
    let app = spawn_app(AppOptions {
        partitions: from,
        workers: 2,
        device_delay: Duration::from_millis(30),
        ..AppOptions::default()
    })
    .await;
    let codes = seed_codes(&app, 40, Duration::from_millis(30), 4000).await;
    let devices: HashMap<String, String> = codes
        .iter()
        .map(|(id, _)| {
            (id.clone(), app.seam.access_code(id).expect("seeded")["device_id"].as_str().unwrap().to_string())
        })
        .collect();

    // A producer (on the old layout, as a running serve would be) gives
    // codes new PINs throughout the move.
    let producer = {
        let store = app.store.clone();
        let codes: Vec<String> = codes.iter().map(|(id, _)| id.clone()).collect();
        let devices = devices.clone();
        tokio::spawn(async move {
            let mut last: HashMap<String, (u64, String)> = HashMap::new();
            for round in 0..10 {
                for (i, id) in codes.iter().enumerate() {
                    let pin = format!("{}", 5000 + round * 100 + i);
                    let desired = serde_json::json!({"access_code_id": id, "device_id": devices[id], "code": pin});
                    let generation = store.enqueue(want(desired)).await.expect("enqueue during the move");
                    last.insert(id.clone(), (generation, pin));
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let moved = admin(&app).await.repartition(to, |_| {}).await.expect("repartition");
    assert!(!producer.is_finished(), "the move ended while the producer was still enqueueing");
    assert_eq!((moved.from, moved.to, moved.partitions), (from, to, from));
    assert!(moved.codes >= 40, "every code's records moved: {moved:?}");
    let last = producer.await.unwrap();

    for (id, (generation, pin)) in &last {
        assert_eq!(*generation, 11, "{id}: one generation per enqueue, none lost or made twice");
        let o = finished(&app, id, *generation, Duration::from_secs(30)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
        assert_eq!(
            app.seam.access_code(id).unwrap()["code"].as_str(),
            Some(pin.as_str()),
            "{id}: the lock has the last PIN"
        );
        assert_eq!(
            app.store.history(id).await.unwrap().first().map(|h| h.generation),
            Some(11),
            "{id}: its history moved"
        );
    }
    assert_eq!(app.store.queue().depth().await.unwrap().dead, 0, "nothing became a dead letter");

    // The layout is the new one: a process configured for it opens, one
    // configured for the old one is refused, naming both.
    opens_with(&app, to).await.expect("the new layout opens");
    let err = opens_with(&app, from).await.unwrap_err();
    assert!(
        matches!(err, Error::Layout { recorded, configured, .. } if recorded == to && configured == from),
        "{err:?}"
    );
    // A new producer on the new layout finds every code where it is now.
    let fresh = opens_with(&app, to).await.unwrap();
    let (id, (generation, _)) = last.iter().next().unwrap();
    assert_eq!(fresh.outcome(id).await.unwrap().unwrap().generation, *generation);
    let next =
        fresh.enqueue(want(serde_json::json!({"access_code_id": id, "device_id": devices[id], "code": "8642"}))).await;
    assert_eq!(next.unwrap(), generation + 1);
    // Running it again does nothing.
    assert_eq!(admin(&app).await.repartition(to, |_| {}).await.unwrap().partitions, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_single_tag_layout_moves_to_four_partitions_while_it_runs() {
    move_while_running(1, 4).await;
}

#[tokio::test]
async fn sixteen_partitions_move_to_three_while_they_run() {
    move_while_running(16, 3).await;
}

#[tokio::test]
async fn a_move_that_stopped_half_way_is_finished_by_running_it_again() {
    let app = spawn_app(AppOptions { partitions: 4, workers: 1, ..AppOptions::default() }).await;
    let codes = seed_codes(&app, 20, Duration::from_millis(10), 6000).await;
    for (id, generation) in &codes {
        finished(&app, id, *generation, Duration::from_secs(20)).await;
    }
    // As a run that died after it froze one old partition would leave it:
    // the record says where the queue goes, and one partition takes nothing.
    let store = admin(&app).await;
    let redis = Redis::connect(&RedisConfig::new(&app.redis_url)).await.unwrap();
    let mut conn = redis.conn();
    let home = store.queue().home().clone();
    let frozen = store.queue().partitions()[0].clone();
    let _: () = redis::AsyncCommands::hset(&mut conn, home.layout(), "moving_to", 2).await.unwrap();
    let _: () = redis::AsyncCommands::set(&mut conn, frozen.moving(), "frozen 2").await.unwrap();
    // A producer meanwhile: its code's partition may be the frozen one; it waits.
    let (id, _) = &codes[0];
    let device = app.seam.access_code(id).unwrap()["device_id"].as_str().unwrap().to_string();
    let enqueue = {
        let store = app.store.clone();
        let desired = serde_json::json!({"access_code_id": id, "device_id": device, "code": "97531"});
        tokio::spawn(async move { store.enqueue(want(desired)).await })
    };
    let moved = admin(&app).await.repartition(2, |_| {}).await.expect("the move goes on");
    assert_eq!((moved.from, moved.to, moved.partitions), (4, 2, 4));
    let generation = enqueue.await.unwrap().expect("the enqueue that waited went through");
    assert_eq!(generation, 2);
    let o = finished(&app, id, generation, Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    assert_eq!(app.seam.access_code(id).unwrap()["code"].as_str(), Some("97531"));
    for (id, _) in &codes[1..] {
        assert_eq!(app.store.outcome(id).await.unwrap().unwrap().state, OutcomeState::Succeeded, "{id}");
    }
    opens_with(&app, 2).await.expect("the new layout is recorded");
    app.stop().await;
}
