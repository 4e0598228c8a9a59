//! The Buildkite stand-in, exercised over real HTTP on loopback the way
//! the launcher will use it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use testbed::buildkite::{
    verify_signature, BuildSpec, Config, Fault, FaultKind, JobSpec, JobState, RateLimit, StandIn,
    WebhookAuth, WebhookConfig,
};

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn builds_url(bk: &StandIn) -> String {
    format!("{}/v2/organizations/{}/builds", bk.url(), bk.org())
}

async fn get_builds(bk: &StandIn, url: &str) -> Response {
    client()
        .get(url)
        .bearer_auth(bk.api_token())
        .send()
        .await
        .unwrap()
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The URL a `Link` header gives for `rel`.
fn link(r: &Response, rel: &str) -> Option<String> {
    let value = header(r, "link")?;
    value.split(", ").find_map(|part| {
        let (url, params) = part.split_once(">; ")?;
        (params == format!("rel=\"{rel}\"")).then(|| url.trim_start_matches('<').to_string())
    })
}

fn one_pipeline(bk: &StandIn, builds: usize, jobs_per_build: usize) -> Vec<String> {
    bk.add_pipeline("app").unwrap();
    let mut ids = Vec::new();
    for b in 0..builds {
        let specs = (0..jobs_per_build)
            .map(|j| {
                JobSpec::new(&["queue=kvm"])
                    .step_key(&format!("s{b}-{j}"))
                    .priority(j as i32)
            })
            .collect();
        ids.extend(bk.add_build("app", BuildSpec::new(specs)).unwrap().job_ids);
    }
    ids
}

#[tokio::test]
async fn standin_answers_a_builds_listing() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 1, 1);
    let url = format!("{}?state[]=scheduled&state[]=running", builds_url(&bk));

    let r = get_builds(&bk, &url).await;

    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("200"));
    assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("199"));
    let builds: Value = r.json().await.unwrap();
    let build = &builds[0];
    assert_eq!(build["number"], 1);
    assert_eq!(build["state"], "scheduled");
    assert_eq!(build["pipeline"]["slug"], "app");
    let job = &build["jobs"][0];
    assert_eq!(job["id"], jobs[0].as_str());
    assert_eq!(job["type"], "script");
    assert_eq!(job["state"], "scheduled");
    assert_eq!(job["agent_query_rules"], json!(["queue=kvm"]));
    assert_eq!(job["step_key"], "s0-0");
    assert_eq!(job["priority"], json!({ "number": 0 }));
    assert!(job["scheduled_at"].as_str().unwrap().ends_with('Z'));
    assert!(job["web_url"].as_str().unwrap().contains(&jobs[0]));

    let bad = client()
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.json::<Value>().await.unwrap()["message"].is_string());
}

#[tokio::test]
async fn listing_follows_link_headers_across_three_pages_and_sees_every_job() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 7, 2);
    let mut next = Some(format!(
        "{}?state[]=scheduled&state[]=running&per_page=3",
        builds_url(&bk)
    ));
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    let mut last_response_links = (None, None);

    while let Some(url) = next.take() {
        pages += 1;
        assert!(pages <= 10, "Link rel=next never ended");
        let r = get_builds(&bk, &url).await;
        assert_eq!(r.status(), StatusCode::OK);
        next = link(&r, "next");
        last_response_links = (link(&r, "prev"), link(&r, "first"));
        if pages == 1 {
            assert!(link(&r, "last").unwrap().ends_with("page=3"));
            assert_eq!(link(&r, "prev"), None);
        }
        let builds: Value = r.json().await.unwrap();
        for build in builds.as_array().unwrap() {
            for job in build["jobs"].as_array().unwrap() {
                seen.insert(job["id"].as_str().unwrap().to_string());
            }
        }
    }

    assert_eq!(pages, 3);
    assert_eq!(seen, jobs.into_iter().collect::<BTreeSet<_>>());
    assert!(last_response_links.0.unwrap().ends_with("page=2"));
    assert!(last_response_links
        .1
        .unwrap()
        .contains("state%5B%5D=running"));
}

#[tokio::test]
async fn the_state_filter_leaves_out_finished_builds() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 2, 1);
    bk.set_job_state(&jobs[0], JobState::Running).unwrap();
    bk.set_job_state(&jobs[0], JobState::Finished { exit_status: 0 })
        .unwrap();
    let url = format!("{}?state[]=scheduled&state[]=running", builds_url(&bk));

    let builds: Value = get_builds(&bk, &url).await.json().await.unwrap();

    let numbers: Vec<_> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["number"].clone())
        .collect();
    assert_eq!(numbers, vec![json!(2)]);
    let all: Value = get_builds(&bk, &builds_url(&bk))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all[1]["state"], "passed");
    assert_eq!(all[1]["jobs"][0]["exit_status"], 0);
}

#[tokio::test]
async fn requests_past_the_rate_limit_get_429_with_headers() {
    let bk = StandIn::start(Config {
        rest_rate_limit: RateLimit {
            limit: 3,
            window: Duration::from_secs(60),
        },
        ..Config::default()
    })
    .unwrap();
    let url = builds_url(&bk);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get_builds(&bk, &url).await;
        assert_eq!(r.status(), StatusCode::OK);
        remaining.push(header(&r, "ratelimit-remaining").unwrap());
    }

    let r = get_builds(&bk, &url).await;

    assert_eq!(remaining, ["2", "1", "0"]);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("0"));
    let reset: u64 = header(&r, "ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset), "reset {reset}");
}

struct Stacks<'a> {
    bk: &'a StandIn,
    http: Client,
}

impl Stacks<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/v3/stacks{path}", self.bk.url())
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Response {
        let mut request = self.http.request(method, self.url(path)).header(
            "Authorization",
            format!("Token {}", self.bk.cluster_token()),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let r = self.send(method, path, body).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn list(&self, query: &str) -> Value {
        self.json(
            reqwest::Method::GET,
            &format!("/lx/scheduled-jobs?{query}"),
            None,
        )
        .await
    }

    async fn register(&self) -> StatusCode {
        let body =
            json!({"key": "lx", "type": "custom", "queue_key": "kvm", "metadata": {"v": "1"}});
        self.send(reqwest::Method::POST, "/register", Some(body))
            .await
            .status()
    }
}

fn ids(listing: &Value) -> Vec<String> {
    listing["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn stacks_register_list_reserve_finish_round_trip() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 1, 2);
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    assert_eq!(api.register().await, StatusCode::CREATED);
    assert_eq!(api.register().await, StatusCode::OK);

    let listing = api.list("queue_key=kvm").await;
    assert_eq!(ids(&listing), jobs);
    let first = &listing["jobs"][0];
    assert_eq!(first["agent_query_rules"], json!(["queue=kvm"]));
    assert_eq!(first["pipeline"]["slug"], "app");
    assert_eq!(first["build"]["number"], 1);
    assert_eq!(first["step"]["key"], "s0-0");
    assert_eq!(listing["page_info"]["has_next_page"], false);
    assert_eq!(listing["cluster_queue"]["key"], "kvm");
    assert_eq!(listing["cluster_queue"]["dispatch_paused"], false);
    assert!(bk.queue_connected("kvm"));

    let reserve = json!({"job_uuids": [jobs[0], "no-such-job"], "reservation_expiry_seconds": 600});
    let reserved = api
        .json(
            reqwest::Method::PUT,
            "/lx/scheduled-jobs/batch-reserve",
            Some(reserve),
        )
        .await;
    assert_eq!(
        reserved,
        json!({"reserved": [jobs[0]], "not_reserved": ["no-such-job"]})
    );
    assert_eq!(ids(&api.list("queue_key=kvm").await), vec![jobs[1].clone()]);
    let states = api
        .json(
            reqwest::Method::POST,
            "/lx/jobs/get-states",
            Some(json!({"job_uuids": jobs})),
        )
        .await;
    assert_eq!(states["states"][&jobs[0]], "reserved");
    assert_eq!(states["states"][&jobs[1]], "scheduled");

    let finish = json!({"exit_status": -1, "detail": "no host could be woken"});
    api.json(
        reqwest::Method::POST,
        &format!("/lx/jobs/{}/finish", jobs[0]),
        Some(finish.clone()),
    )
    .await;
    let job = bk.job(&jobs[0]).unwrap();
    assert_eq!(job.state, JobState::Finished { exit_status: -1 });
    assert_eq!(job.finish_detail.as_deref(), Some("no host could be woken"));
    let again = api
        .send(
            reqwest::Method::POST,
            &format!("/lx/jobs/{}/finish", jobs[0]),
            Some(finish),
        )
        .await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let states = api
        .json(
            reqwest::Method::POST,
            "/lx/jobs/get-states",
            Some(json!({"job_uuids": [jobs[0]]})),
        )
        .await;
    assert_eq!(states["states"][&jobs[0]], "finished");

    let wrong = client()
        .get(api.url("/lx/scheduled-jobs?queue_key=kvm"))
        .header("Authorization", format!("Token {}", bk.api_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let gone = api
        .send(reqwest::Method::POST, "/lx/deregister", None)
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let after = api
        .send(
            reqwest::Method::GET,
            "/lx/scheduled-jobs?queue_key=kvm",
            None,
        )
        .await;
    assert_eq!(after.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_expired_reservation_puts_the_job_back_in_the_listing() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 1, 1);
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    api.register().await;
    let reserve = json!({"job_uuids": [jobs[0]], "reservation_expiry_seconds": 1});
    api.json(
        reqwest::Method::PUT,
        "/lx/scheduled-jobs/batch-reserve",
        Some(reserve),
    )
    .await;
    assert!(ids(&api.list("queue_key=kvm").await).is_empty());

    // The reservation lasts 1 s. The stand-in's own record is polled (the
    // listing is rate limited): once it has expired, the job is listed again.
    let expired = testbed::util::poll_until_async(Duration::from_secs(10), || async {
        bk.job(&jobs[0])
            .filter(|j| !j.reserved_at(Instant::now()))
            .map(|_| ())
    })
    .await;
    assert!(expired.is_some(), "the reservation never expired");
    assert_eq!(ids(&api.list("queue_key=kvm").await), jobs);
}

#[tokio::test]
async fn scheduled_jobs_page_with_cursors_oldest_first() {
    let bk = StandIn::start(Config::default()).unwrap();
    bk.add_pipeline("app").unwrap();
    let base = SystemTime::now() - Duration::from_secs(100);
    // Added newest first, so the order comes from scheduled_at alone.
    let specs = (0..5)
        .rev()
        .map(|i| JobSpec::new(&["queue=kvm"]).scheduled_at(base + Duration::from_secs(i)))
        .collect();
    let mut jobs = bk.add_build("app", BuildSpec::new(specs)).unwrap().job_ids;
    jobs.reverse();
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    api.register().await;
    let mut seen = Vec::new();
    let mut query = "queue_key=kvm&limit=2".to_string();
    let mut pages = 0;

    loop {
        pages += 1;
        assert!(pages <= 10, "has_next_page never became false");
        let listing = api.list(&query).await;
        seen.extend(ids(&listing));
        if listing["page_info"]["has_next_page"] == false {
            break;
        }
        let cursor = listing["page_info"]["end_cursor"].as_str().unwrap();
        query = format!("queue_key=kvm&limit=2&after={cursor}");
    }

    assert_eq!(pages, 3);
    assert_eq!(seen, jobs);
}

#[tokio::test]
async fn metrics_count_jobs_per_queue_and_set_the_poll_header() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 1, 3);
    bk.set_job_state(&jobs[0], JobState::Running).unwrap();
    bk.add_job(
        &bk.add_build("app", BuildSpec::new(vec![])).unwrap().id,
        JobSpec::new::<&str>(&[]).state(JobState::Waiting),
    )
    .unwrap();
    bk.set_agent_counts("kvm", 1, 2);

    let r = client()
        .get(format!("{}/v3/metrics", bk.url()))
        .header("Authorization", format!("Token {}", bk.agent_token()))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "buildkite-agent-metrics-poll-duration").as_deref(),
        Some("15")
    );
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["organization"]["slug"], "test-org");
    assert_eq!(
        m["jobs"]["queues"]["kvm"],
        json!({"scheduled": 2, "running": 1, "waiting": 0, "total": 3})
    );
    assert_eq!(m["jobs"]["queues"]["default"]["waiting"], 1);
    assert_eq!(m["jobs"]["total"], 4);
    assert_eq!(
        m["agents"]["queues"]["kvm"],
        json!({"idle": 1, "busy": 2, "total": 3})
    );
    let bad = client()
        .get(format!("{}/v3/metrics", bk.url()))
        .header("Authorization", "Token nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
}

type Captured = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// A webhook receiver on loopback that keeps every request it gets.
async fn receiver() -> (String, Captured) {
    let captured: Captured = Arc::default();
    let keep = captured.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, captured)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_arrive_as_signed_webhooks() {
    let (url, captured) = receiver().await;
    let bk = StandIn::start(Config {
        webhook: Some(WebhookConfig {
            url,
            auth: WebhookAuth::Secret("hook-secret".into()),
        }),
        ..Config::default()
    })
    .unwrap();
    let jobs = one_pipeline(&bk, 1, 1);
    bk.set_job_state(&jobs[0], JobState::Running).unwrap();
    bk.set_job_state(&jobs[0], JobState::Finished { exit_status: 0 })
        .unwrap();

    let deliveries =
        tokio::task::block_in_place(|| bk.wait_for_webhooks(3, Duration::from_secs(10)));

    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:?}"
    );
    let got = captured.lock().unwrap().clone();
    let events: Vec<_> = got
        .iter()
        .map(|(h, _)| h["x-buildkite-event"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["job.scheduled", "job.started", "job.finished"]);
    for (headers, body) in &got {
        let signature = headers["x-buildkite-signature"].to_str().unwrap();
        verify_signature(
            signature,
            body.as_bytes(),
            "hook-secret",
            SystemTime::now(),
            Duration::from_secs(60),
        )
        .unwrap();
        let payload: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            payload["event"],
            headers["x-buildkite-event"].to_str().unwrap()
        );
        assert_eq!(payload["job"]["id"], jobs[0].as_str());
        assert_eq!(payload["pipeline"]["slug"], "app");
        assert!(payload["build"]["number"].is_number());
        assert!(payload["sender"]["name"].is_string());
    }
    let last: Value = serde_json::from_str(&got[2].1).unwrap();
    assert_eq!(last["job"]["state"], "passed");
    let tampered = got[0].1.replace("job.scheduled", "job.finished");
    let signature = got[0].0["x-buildkite-signature"].to_str().unwrap();
    assert!(verify_signature(
        signature,
        tampered.as_bytes(),
        "hook-secret",
        SystemTime::now(),
        Duration::from_secs(60)
    )
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_webhooks_carry_the_token_header() {
    let (url, captured) = receiver().await;
    let bk = StandIn::start(Config {
        webhook: Some(WebhookConfig {
            url,
            auth: WebhookAuth::Token("tok".into()),
        }),
        ..Config::default()
    })
    .unwrap();
    one_pipeline(&bk, 1, 1);

    let deliveries =
        tokio::task::block_in_place(|| bk.wait_for_webhooks(1, Duration::from_secs(10)));

    assert_eq!(deliveries.len(), 1);
    let got = captured.lock().unwrap().clone();
    assert_eq!(got[0].0["x-buildkite-token"], "tok");
    assert!(!got[0].0.contains_key("x-buildkite-signature"));
}

#[tokio::test]
async fn a_server_error_fault_hits_only_matching_paths_the_given_times() {
    let bk = StandIn::start(Config::default()).unwrap();
    bk.inject_fault(Fault::server_error(503).times(2).on_path("/builds"))
        .unwrap();
    let metrics = client()
        .get(format!("{}/v3/metrics", bk.url()))
        .header("Authorization", format!("Token {}", bk.agent_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get_builds(&bk, &builds_url(&bk)).await.status().as_u16());
    }

    assert_eq!(statuses, [503, 503, 200]);
    assert!(bk.pending_faults().is_empty());
    let faults: Vec<_> = bk.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            None,
            Some(FaultKind::ServerError(503)),
            Some(FaultKind::ServerError(503)),
            None
        ]
    );
}

#[tokio::test]
async fn a_delay_fault_answers_late_but_correctly() {
    let bk = StandIn::start(Config::default()).unwrap();
    bk.inject_fault(Fault::delay(Duration::from_millis(400)))
        .unwrap();
    let started = Instant::now();

    let r = get_builds(&bk, &builds_url(&bk)).await;

    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
}

#[tokio::test]
async fn a_hang_fault_leaves_the_client_to_time_out() {
    let bk = StandIn::start(Config::default()).unwrap();
    bk.inject_fault(Fault::hang()).unwrap();
    let impatient = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let err = impatient
        .get(builds_url(&bk))
        .bearer_auth(bk.api_token())
        .send()
        .await
        .unwrap_err();

    assert!(err.is_timeout(), "{err}");
    assert_eq!(bk.requests()[0].status, None);
    assert_eq!(
        get_builds(&bk, &builds_url(&bk)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_malformed_fault_sends_json_that_does_not_parse() {
    let bk = StandIn::start(Config::default()).unwrap();
    one_pipeline(&bk, 1, 1);
    bk.inject_fault(Fault::malformed()).unwrap();

    let r = get_builds(&bk, &builds_url(&bk)).await;

    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.starts_with("[{"), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_err());
}

#[tokio::test]
async fn a_rate_limit_fault_answers_429_with_stacks_headers() {
    let bk = StandIn::start(Config::default()).unwrap();
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    api.register().await;
    bk.inject_fault(Fault::rate_limited().on_path("/scheduled-jobs"))
        .unwrap();

    let r = api
        .send(
            reqwest::Method::GET,
            "/lx/scheduled-jobs?queue_key=kvm",
            None,
        )
        .await;

    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&r, "ratelimit-scope").as_deref(),
        Some("list-scheduled-jobs")
    );
    assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header(&r, "ratelimit-reset").as_deref(), Some("1"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "list-scheduled-jobs");
    assert_eq!(api.list("queue_key=kvm").await["jobs"], json!([]));
}

#[tokio::test]
async fn per_page_is_capped_at_one_hundred() {
    let bk = StandIn::start(Config::default()).unwrap();
    one_pipeline(&bk, 105, 1);

    let r = get_builds(&bk, &format!("{}?per_page=500", builds_url(&bk))).await;

    assert!(link(&r, "next").unwrap().ends_with("page=2"));
    assert!(link(&r, "last").unwrap().ends_with("page=2"));
    let builds: Value = r.json().await.unwrap();
    assert_eq!(builds.as_array().unwrap().len(), 100);
    assert_eq!(builds[0]["number"], 105);
    let bad = get_builds(&bk, &format!("{}?page=0", builds_url(&bk))).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_paused_default_queue_is_reported_and_goes_disconnected_without_polls() {
    let bk = StandIn::start(Config {
        queue_connected_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .unwrap();
    bk.add_pipeline("app").unwrap();
    let jobs = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["os=linux"])]))
        .unwrap()
        .job_ids;
    bk.set_queue_paused("default", true);
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    api.register().await;
    assert!(!bk.queue_connected("default"));

    let listing = api.list("queue_key=__default__").await;

    assert_eq!(ids(&listing), jobs);
    assert_eq!(listing["cluster_queue"]["key"], "default");
    assert_eq!(listing["cluster_queue"]["dispatch_paused"], true);
    assert!(bk.queue_connected("__default__"));
    let gone = testbed::util::poll_until(Duration::from_secs(10), || {
        (!bk.queue_connected("default")).then_some(())
    });
    assert!(gone.is_some(), "still connected 10 s after the last poll");
}

/// One agent API client: registers with `token` and `tags`.
struct AgentCalls {
    base: String,
    http: Client,
    token: String,
}

impl AgentCalls {
    async fn register(bk: &StandIn, token: &str, tags: &[&str]) -> Result<AgentCalls, StatusCode> {
        let http = client();
        let r = http
            .post(format!("{}/v3/register", bk.url()))
            .header("Authorization", format!("Token {token}"))
            .json(&json!({"name": "a1", "hostname": "h", "version": "3.78.0", "meta_data": tags}))
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            return Err(r.status());
        }
        let body: Value = r.json().await.unwrap();
        Ok(AgentCalls {
            base: format!("{}/v3", bk.url()),
            http,
            token: body["access_token"].as_str().unwrap().to_string(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("Token {}", self.token))
    }

    async fn put(&self, path: &str, body: Value) -> Response {
        self.request(reqwest::Method::PUT, path)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn chunk(&self, job: &str, seq: u64, offset: u64, data: &[u8]) -> StatusCode {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        let body = gz.finish().unwrap();
        self.request(
            reqwest::Method::POST,
            &format!(
                "/jobs/{job}/chunks?sequence={seq}&offset={offset}&size={}",
                data.len()
            ),
        )
        .header("Content-Type", "text/plain")
        .header("Content-Encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
    }
}

#[tokio::test]
async fn the_agent_api_acquires_only_what_an_agent_may_run_and_keeps_its_log() {
    let bk = StandIn::start(Config::default()).unwrap();
    bk.add_pipeline("app").unwrap();
    let b = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=kvm", "os=linux"]).command("make test"),
                JobSpec::new(&["queue=kvm"]).state(JobState::Waiting),
                JobSpec::new(&["queue=other"]),
            ]),
        )
        .unwrap();
    let (job, waiting, elsewhere) = (&b.job_ids[0], &b.job_ids[1], &b.job_ids[2]);

    assert_eq!(
        AgentCalls::register(&bk, bk.api_token(), &["queue=kvm"])
            .await
            .err(),
        Some(StatusCode::UNAUTHORIZED),
        "a REST token registers no agent"
    );
    // Either the registration token or the cluster token registers.
    let wrong_tags = AgentCalls::register(&bk, bk.agent_token(), &["queue=kvm", "os=mac"])
        .await
        .unwrap();
    let agent = AgentCalls::register(&bk, bk.cluster_token(), &["queue=kvm", "os=linux"])
        .await
        .unwrap();
    assert_eq!(bk.registered_agents().len(), 2);

    let r = wrong_tags
        .put(&format!("/jobs/{job}/acquire"), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = agent
        .put(&format!("/jobs/{elsewhere}/acquire"), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = agent
        .put(&format!("/jobs/{waiting}/acquire"), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::LOCKED);
    assert_eq!(r.headers()["retry-after"], "1");

    // A job a stack reserved is still the agent's to acquire.
    let stacks = Stacks {
        bk: &bk,
        http: client(),
    };
    assert_eq!(stacks.register().await, StatusCode::CREATED);
    let reserved = stacks
        .json(
            reqwest::Method::PUT,
            "/lx/scheduled-jobs/batch-reserve",
            Some(json!({"job_uuids": [job], "reservation_expiry_seconds": 600})),
        )
        .await;
    assert_eq!(reserved["reserved"], json!([job]));
    let r = agent.put(&format!("/jobs/{job}/acquire"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let acquired: Value = r.json().await.unwrap();
    assert_eq!(acquired["id"], job.as_str());
    assert_eq!(acquired["state"], "accepted");
    assert_eq!(acquired["env"]["BUILDKITE_COMMAND"], "make test");
    assert_eq!(acquired["env"]["BUILDKITE_AGENT_NAME"], "a1");
    assert_eq!(acquired["env"]["BUILDKITE_PIPELINE_SLUG"], "app");
    assert!(acquired["token"].as_str().is_some_and(|t| !t.is_empty()));
    // Only once, and only by the agent holding it.
    let r = agent.put(&format!("/jobs/{job}/acquire"), json!({})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = wrong_tags
        .put(&format!("/jobs/{job}/start"), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = agent.put(&format!("/jobs/{job}/start"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(bk.job(job).unwrap().state, JobState::Running);
    // Chunks out of order land at their offsets.
    assert_eq!(
        agent.chunk(job, 2, 6, b"world\n").await,
        StatusCode::CREATED
    );
    assert_eq!(agent.chunk(job, 1, 0, b"hello ").await, StatusCode::CREATED);
    let r = agent
        .put(
            &format!("/jobs/{job}/finish"),
            json!({"exit_status": "3", "chunks_failed_count": 0}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        bk.job(job).unwrap().state,
        JobState::Finished { exit_status: 3 }
    );
    let run = bk.job_run(job).unwrap();
    assert_eq!(run.log_text(), "hello world\n");
    assert_eq!(run.exit_status.as_deref(), Some("3"));
    let r = agent
        .put(&format!("/jobs/{job}/finish"), json!({"exit_status": "0"}))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "finished twice"
    );
}

#[tokio::test]
async fn ping_assigns_the_job_an_agent_fits_and_accept_takes_it() {
    let bk = StandIn::start(Config::default()).unwrap();
    bk.add_pipeline("app").unwrap();
    let b = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=kvm"]).command("true"),
                JobSpec::new(&["queue=kvm"]).priority(5),
                JobSpec::new(&["queue=other"]),
            ]),
        )
        .unwrap();
    let (old, urgent, elsewhere) = (&b.job_ids[0], &b.job_ids[1], &b.job_ids[2]);
    let ping = |a: &AgentCalls| {
        let r = a.request(reqwest::Method::GET, "/ping");
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let mac = AgentCalls::register(&bk, bk.agent_token(), &["queue=mac"])
        .await
        .unwrap();
    assert_eq!(ping(&mac).await, json!({"action": "idle"}));

    // Higher priority first; the job is assigned to the agent until it accepts.
    let a = AgentCalls::register(&bk, bk.agent_token(), &["queue=kvm"])
        .await
        .unwrap();
    let p = ping(&a).await;
    assert_eq!(p["job"]["id"], urgent.as_str(), "{p}");
    assert_eq!(p["job"]["state"], "assigned");
    assert!(p["job"]["env"]["BUILDKITE_JOB_ID"] == urgent.as_str());
    assert_eq!(bk.job(urgent).unwrap().state, JobState::Assigned);
    assert_eq!(
        ping(&a).await["job"]["id"],
        urgent.as_str(),
        "handed out again"
    );
    // Another agent gets the next job, never the one assigned.
    let b2 = AgentCalls::register(&bk, bk.agent_token(), &["queue=kvm"])
        .await
        .unwrap();
    assert_eq!(ping(&b2).await["job"]["id"], old.as_str());
    let r = b2.put(&format!("/jobs/{urgent}/accept"), json!({})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = a.put(&format!("/jobs/{urgent}/accept"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["state"], "accepted");
    assert_eq!(bk.job(urgent).unwrap().state, JobState::Accepted);
    let r = a.put(&format!("/jobs/{urgent}/start"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(bk.job(urgent).unwrap().state, JobState::Running);

    // A paused queue dispatches nothing.
    let late = bk.add_job(&b.id, JobSpec::new(&["queue=kvm"])).unwrap();
    bk.set_queue_paused("kvm", true);
    let c = AgentCalls::register(&bk, bk.agent_token(), &["queue=kvm"])
        .await
        .unwrap();
    assert_eq!(ping(&c).await, json!({"action": "idle"}));
    bk.set_queue_paused("kvm", false);
    assert_eq!(ping(&c).await["job"]["id"], late.as_str());
    assert_eq!(bk.job(elsewhere).unwrap().state, JobState::Scheduled);

    // A disconnected agent is told so.
    let r = a
        .request(reqwest::Method::POST, "/disconnect")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(ping(&a).await["action"], "disconnect");
}

#[tokio::test]
async fn a_job_acquisition_token_registers_one_agent_that_acquires_only_its_job() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 1, 3);
    let (job, other, unreserved) = (&jobs[0], &jobs[1], &jobs[2]);
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    api.register().await;
    let reserve = json!({"job_uuids": [job, other], "reservation_expiry_seconds": 600});
    api.json(
        reqwest::Method::PUT,
        "/lx/scheduled-jobs/batch-reserve",
        Some(reserve),
    )
    .await;

    let r = api
        .send(
            reqwest::Method::POST,
            "/lx/job-acquisition-tokens",
            Some(json!({"job_uuids": [job, unreserved], "token_lifetime_seconds": 120})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let issued: Value = r.json().await.unwrap();
    assert_eq!(issued["not_issued"], json!([unreserved]));
    let tokens = issued["job_acquisition_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["job_uuid"], json!(job));
    let jat = tokens[0]["job_acquisition_token"].as_str().unwrap();
    assert!(jat.starts_with("bkjat_"), "{jat}");
    let expires = tokens[0]["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z'), "{expires}");

    let out_of_range = api
        .send(
            reqwest::Method::POST,
            "/lx/job-acquisition-tokens",
            Some(json!({"job_uuids": [job], "token_lifetime_seconds": 3601})),
        )
        .await;
    assert_eq!(out_of_range.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let agent = AgentCalls::register(&bk, jat, &["queue=kvm"])
        .await
        .unwrap();
    assert_eq!(
        AgentCalls::register(&bk, jat, &["queue=kvm"]).await.err(),
        Some(StatusCode::UNAUTHORIZED),
        "a token registers one agent"
    );
    let r = agent
        .put(&format!("/jobs/{other}/acquire"), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another job");
    let r = agent.put(&format!("/jobs/{job}/acquire"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(bk.job(job).unwrap().state, JobState::Accepted);

    let issued = bk.job_acquisition_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].job_id, *job);
    assert_eq!(issued[0].refused, 1);
    let registered = bk
        .registered_agents()
        .into_iter()
        .find(|a| issued[0].agent_id.as_ref() == Some(&a.id))
        .expect("the token's agent registered");
    assert_eq!(registered.acquire_only.as_deref(), Some(job.as_str()));
}

#[tokio::test]
async fn an_expired_job_acquisition_token_registers_no_agent() {
    let bk = StandIn::start(Config::default()).unwrap();
    let jobs = one_pipeline(&bk, 1, 1);
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    api.register().await;
    api.json(
        reqwest::Method::PUT,
        "/lx/scheduled-jobs/batch-reserve",
        Some(json!({"job_uuids": [jobs[0]], "reservation_expiry_seconds": 600})),
    )
    .await;
    let issued = api
        .json(
            reqwest::Method::POST,
            "/lx/job-acquisition-tokens",
            Some(json!({"job_uuids": [jobs[0]], "token_lifetime_seconds": 1})),
        )
        .await;
    let jat = issued["job_acquisition_tokens"][0]["job_acquisition_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Outlive the token's one-second lifetime: its expiry is under test.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        AgentCalls::register(&bk, &jat, &["queue=kvm"]).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert!(bk.registered_agents().is_empty());
}

#[tokio::test]
async fn without_job_acquisition_tokens_the_stacks_api_answers_403() {
    let bk = StandIn::start(Config {
        job_acquisition_tokens: false,
        ..Config::default()
    })
    .unwrap();
    let jobs = one_pipeline(&bk, 1, 1);
    let api = Stacks {
        bk: &bk,
        http: client(),
    };
    api.register().await;
    let r = api
        .send(
            reqwest::Method::POST,
            "/lx/job-acquisition-tokens",
            Some(json!({"job_uuids": [jobs[0]]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("not enabled"),
        "{body}"
    );
}
