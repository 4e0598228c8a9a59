use std::time::{Duration, SystemTime};

use super::*;
use crate::fake_api::FakeApi;
use crate::retry::Policy;

const JOB: &str = "0190a6d4-1b2c-7def-8123-456789abcdef";
const OTHER: &str = "0190a6d4-1b2c-7def-8123-000000000000";

fn client(api: &FakeApi) -> Client {
    Client::new(&api.base, Secret::new("bkct_cluster")).with_policy(Policy {
        attempts: 3,
        base: Duration::from_millis(1),
        max: Duration::from_millis(2),
    })
}

#[tokio::test]
async fn the_request_has_the_documented_shape_and_the_token_is_matched_to_its_job() {
    // Sooner than the lifetime asked for: Buildkite's expiry counts.
    let expires = "2026-12-01T11:12:45.000Z";
    let api = FakeApi::start(move |_| {
        (
            201,
            format!(
                r#"{{"job_acquisition_tokens":[{{"job_uuid":"{JOB}","job_acquisition_token":"bkjat_one","expires_at":"{expires}"}}],"not_issued":[]}}"#
            ),
        )
    })
    .await;
    let jat = client(&api)
        .job_acquisition_token("kvm-linux-a1", JOB, "debian", Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(jat.job, JOB);
    assert_eq!(jat.token.expose(), "bkjat_one");
    assert_eq!(Some(jat.expires_at), crate::daemon::parse_rfc3339(expires));

    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].path,
        "/v3/stacks/kvm-linux-a1/job-acquisition-tokens"
    );
    assert_eq!(seen[0].authorization, "Token bkct_cluster");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"job_uuids": [JOB], "token_lifetime_seconds": 600})
    );
}

#[tokio::test]
async fn a_job_in_not_issued_gets_no_token() {
    let api = FakeApi::start(|_| {
        (
            201,
            format!(
                r#"{{"job_acquisition_tokens":[{{"job_uuid":"{OTHER}","job_acquisition_token":"bkjat_other","expires_at":"2030-01-01T00:00:00Z"}}],"not_issued":["{JOB}"]}}"#
            ),
        )
    })
    .await;
    let got = client(&api)
        .job_acquisition_token("kvm-linux-a1", JOB, "debian", Duration::from_secs(600))
        .await;
    // Another job's token is never taken for this one.
    assert_eq!(got, Err(JatError::NotIssued));
    assert!(!got.unwrap_err().place_again());
}

#[tokio::test]
async fn a_403_names_the_setting_that_does_without_tokens_and_is_not_retried() {
    let api = FakeApi::start(|_| {
        (
            403,
            r#"{"message":"Job acquisition tokens are not enabled for this organization"}"#.into(),
        )
    })
    .await;
    let err = client(&api)
        .job_acquisition_token("kvm-linux-a1", JOB, "debian", Duration::from_secs(600))
        .await
        .unwrap_err();
    assert_eq!(api.seen().len(), 1, "a 403 is not retried");
    assert!(
        matches!(err, JatError::Refused { status: 403, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("Job acquisition tokens are not enabled for this organization"),
        "{text}"
    );
    assert!(
        text.ends_with("set agent_tokens = \"cluster\" on [[agent]] debian"),
        "{text}"
    );
    assert!(err.note().contains("agent_tokens = \"cluster\""));
    assert!(err.note().len() <= 256, "{}", err.note());
    assert!(!err.place_again());
}

#[tokio::test]
async fn a_404_is_refused_the_same_way() {
    let api = FakeApi::start(|_| (404, r#"{"message":"Not Found"}"#.into())).await;
    let err = client(&api)
        .job_acquisition_token("kvm-linux-a1", JOB, "debian", Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(
        matches!(err, JatError::Refused { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_422_is_refused_without_blaming_the_setting() {
    let api = FakeApi::start(|_| (422, r#"{"message":"job_uuids is invalid"}"#.into())).await;
    let err = client(&api)
        .job_acquisition_token("kvm-linux-a1", JOB, "debian", Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(matches!(err, JatError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("job_uuids is invalid"), "{err}");
    assert!(!err.place_again());
}

#[tokio::test]
async fn a_5xx_is_retried_then_the_job_is_placed_again() {
    let api = FakeApi::start(|_| (502, r#"{"message":"bad gateway"}"#.into())).await;
    let err = client(&api)
        .job_acquisition_token("kvm-linux-a1", JOB, "debian", Duration::from_secs(600))
        .await
        .unwrap_err();
    assert_eq!(api.seen().len(), 3, "tried as often as the policy says");
    assert!(matches!(err, JatError::Unavailable(_)), "{err:?}");
    assert!(err.place_again());
}

#[tokio::test]
async fn a_token_never_outlives_the_lifetime_asked_for() {
    // Buildkite's clock ahead of ours, or an expiry past the request.
    let api = FakeApi::start(|_| {
        (
            201,
            format!(
                r#"{{"job_acquisition_tokens":[{{"job_uuid":"{JOB}","job_acquisition_token":"bkjat_one","expires_at":"2099-01-01T00:00:00Z"}}],"not_issued":[]}}"#
            ),
        )
    })
    .await;
    let t0 = SystemTime::now();
    let jat = client(&api)
        .job_acquisition_token("kvm-linux-a1", JOB, "debian", Duration::from_secs(90))
        .await
        .unwrap();
    let left = jat.expires_at.duration_since(t0).unwrap();
    assert!(left <= Duration::from_secs(91), "{left:?}");
}

#[test]
fn the_lifetime_covers_the_boot_and_stays_within_an_hour() {
    assert_eq!(lifetime(Duration::from_secs(120)), Duration::from_secs(180));
    assert_eq!(lifetime(Duration::from_secs(3600)), MAX_LIFETIME);
}

#[test]
fn tokens_never_show_in_debug_output() {
    let jat = Jat {
        job: JOB.into(),
        token: Secret::new("bkjat_secret"),
        expires_at: SystemTime::UNIX_EPOCH,
    };
    assert!(!format!("{jat:?}").contains("bkjat_secret"));
}
