//! The real client against the Seam simulator: one test per behaviour. The
//! simulator is written from Seam's docs, not from this client, so a request
//! field the client names wrongly is not applied and fails here.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use latchkey_core::{AttemptStatus, CodeStatus, CodeType};
use latchkey_fake_seam::{DeviceBehaviour, FakeSeam, Faults, SeedCode, SimConfig};
use latchkey_seam::{ApiKey, Error, ErrorClass, SeamClient, SeamConfig, UpdateAccessCode};

const KEY: &str = "seam_test_key";

async fn setup() -> (FakeSeam, SeamClient, String) {
    let seam = FakeSeam::spawn(SimConfig::default()).await.unwrap();
    let client = SeamClient::new(&SeamConfig::new(seam.url(), ApiKey::new(KEY))).unwrap();
    let device = seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(30) });
    let id = seam.add_access_code(&device, SeedCode { code: Some("1111".into()), ..SeedCode::default() });
    (seam, client, id)
}

fn update(id: &str) -> UpdateAccessCode {
    UpdateAccessCode { access_code_id: id.into(), ..UpdateAccessCode::default() }
}

#[tokio::test]
async fn every_field_the_client_sends_is_applied_and_read_back() {
    let (_seam, client, id) = setup().await;
    let starts = (Utc::now() + chrono::Duration::hours(1)).trunc_subsecs(0);
    let ends = starts + chrono::Duration::days(2);
    let sent = client
        .update_access_code(&UpdateAccessCode {
            code: Some("4242".into()),
            name: Some("Guest 7".into()),
            starts_at: Some(starts),
            ends_at: Some(ends),
            is_one_time_use: Some(false),
            ..update(&id)
        })
        .await
        .unwrap();
    let attempt = sent.action_attempt.expect("the current API returns an action attempt");
    assert_eq!((attempt.status, attempt.action_type.as_str()), (AttemptStatus::Pending, "UPDATE_ACCESS_CODE"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = loop {
        let a = client.get_action_attempt(&attempt.action_attempt_id).await.unwrap();
        if a.status != AttemptStatus::Pending {
            break a;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.status, AttemptStatus::Success);
    let code = client.get_access_code(&id).await.unwrap();
    assert_eq!(code.code.as_deref(), Some("4242"));
    assert_eq!(code.name.as_deref(), Some("Guest 7"));
    assert_eq!((code.code_type, code.starts_at, code.ends_at), (CodeType::TimeBound, Some(starts), Some(ends)));
    assert_eq!(
        (code.status, code.is_scheduled_on_device),
        (CodeStatus::Unset, Some(true)),
        "a future time-bound code waits on the lock"
    );

    client.update_access_code(&UpdateAccessCode { code_type: Some(CodeType::Ongoing), ..update(&id) }).await.unwrap();
    let code = client.get_access_code(&id).await.unwrap();
    assert_eq!((code.code_type, code.starts_at), (CodeType::Ongoing, None), "type ongoing converts back (seed 002)");
}

#[tokio::test]
async fn invalid_input_is_permanent_with_seams_validation_errors() {
    let (_seam, client, id) = setup().await;
    let err =
        client.update_access_code(&UpdateAccessCode { code: Some("12ab".into()), ..update(&id) }).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let api = err.api_error().unwrap();
    assert_eq!(api.error_type, "invalid_input");
    assert!(api.validation_errors.as_ref().unwrap()["code"]["_errors"].is_array());
    assert!(api.request_id.is_some());
}

#[tokio::test]
async fn an_unknown_access_code_is_not_found_and_permanent() {
    let (_seam, client, id) = setup().await;
    let err = client.get_access_code("does-not-exist").await.unwrap_err();
    assert!(matches!(&err, Error::Rejected { status: 404, error } if error.error_type == "not_found"), "{err:?}");
    assert!(err.is_not_found() && err.class() == ErrorClass::Permanent, "{err:?}");
    let err = client
        .update_access_code(&UpdateAccessCode { code: Some("1234".into()), ..update("does-not-exist") })
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "update says access_code_not_found: {err:?}");
    assert!(client.get_access_code(&id).await.is_ok());
}

#[tokio::test]
async fn a_refused_key_is_the_workers_fault_and_a_replaced_key_works_at_once() {
    let (seam, client, id) = setup().await;
    let other = client.clone();
    assert!(!client.key_refused());
    seam.set_api_key(Some("seam_rotated".into()));
    let err = client.get_access_code(&id).await.unwrap_err();
    assert!(matches!(&err, Error::Rejected { status: 401, error } if error.error_type == "unauthorized"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Unauthorized);
    assert!(other.key_refused(), "every clone knows the key is refused");
    assert!(!format!("{err:?} {err} {client:?}").contains("seam_test_key"), "no key in errors or Debug");
    other.set_api_key(&ApiKey::new("seam_rotated")).unwrap();
    assert!(!client.key_refused(), "a new key gets a fresh chance");
    assert_eq!(client.get_access_code(&id).await.unwrap().access_code_id, id, "every clone uses the new key");
}

#[tokio::test]
async fn a_500_with_a_text_body_is_transient() {
    let (seam, client, id) = setup().await;
    seam.set_faults(Faults { error_rate: 1.0, fail_status: Some(500), ..Faults::default() });
    let err = client.get_access_code(&id).await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 500, error: None }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_503_with_an_empty_body_is_transient() {
    let (seam, client, id) = setup().await;
    seam.set_faults(Faults { error_rate: 1.0, fail_status: Some(503), ..Faults::default() });
    let err = client.update_access_code(&update(&id)).await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 503, error: None }), "{err:?}");
}

#[tokio::test]
async fn a_429_with_retry_after_carries_the_delay() {
    let (seam, client, id) = setup().await;
    seam.set_faults(Faults { force_429: 1, retry_after: Some(3), ..Faults::default() });
    let err = client.get_access_code(&id).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited(Some(Duration::from_secs(3))));
}

#[tokio::test]
async fn a_429_without_retry_after_is_rate_limited_with_no_delay() {
    let (seam, client, id) = setup().await;
    seam.set_faults(Faults { force_429: 1, ..Faults::default() });
    let err = client.get_access_code(&id).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited(None));
    assert_eq!(err.api_error().unwrap().error_type, "rate_limit_exceeded");
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_a_transient_timeout() {
    let (seam, _, id) = setup().await;
    seam.set_faults(Faults { latency_ms: 800, ..Faults::default() });
    let config =
        SeamConfig { request_timeout: Duration::from_millis(200), ..SeamConfig::new(seam.url(), ApiKey::new(KEY)) };
    let client = SeamClient::new(&config).unwrap();
    let t = Instant::now();
    let err = client.get_access_code(&id).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(t.elapsed() < Duration::from_millis(700), "gave up after {:?}", t.elapsed());
}

#[tokio::test]
async fn a_failed_action_attempt_reports_its_error() {
    let seam = FakeSeam::spawn(SimConfig::default()).await.unwrap();
    let client = SeamClient::new(&SeamConfig::new(seam.url(), ApiKey::new(KEY))).unwrap();
    let device = seam.add_device(DeviceBehaviour::fails(Duration::from_millis(20)));
    let id = seam.add_access_code(&device, SeedCode::default());
    let attempt = client
        .update_access_code(&UpdateAccessCode { code: Some("5678".into()), ..update(&id) })
        .await
        .unwrap()
        .action_attempt
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let a = client.get_action_attempt(&attempt.action_attempt_id).await.unwrap();
    assert_eq!(a.status, AttemptStatus::Error);
    assert_eq!(a.error.unwrap().code, "failed_to_set_on_device");
    let code = client.get_access_code(&id).await.unwrap();
    assert_eq!(code.errors[0].code, "failed_to_set_on_device");
}
