//! The JSON API through the router, on an in-memory backend with a worker.

use super::*;
use axum::body::Body;
use axum::http::Request;
use durable_runtime::{MemoryBackend, OrchestrationStatus, Registry, ScheduleOptions, Worker};
use std::time::Duration;
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(30);

fn registry() -> Registry {
    Registry::new()
        .orchestrator_fn("approval", |ctx, _: ()| async move {
            ctx.set_custom_status(&"waiting");
            let approved: bool = ctx.wait_for_external_event("approve").await?;
            Ok(approved)
        })
        .orchestrator_fn("fails", |_ctx, _: ()| async move {
            Err::<(), _>(durable_runtime::OrchestrationError::with_type(
                "Broken",
                "on purpose",
            ))
        })
}

struct Env {
    backend: Arc<MemoryBackend>,
    client: Client,
    worker: durable_runtime::WorkerHandle,
}

async fn env() -> Env {
    let backend = Arc::new(MemoryBackend::new());
    let worker = Worker::new(backend.clone(), registry()).start().unwrap();
    let client = Client::new(backend.clone());
    Env {
        backend,
        client,
        worker,
    }
}

impl Env {
    fn router(&self, options: DashboardOptions) -> Router {
        router(self.backend.clone(), options)
    }

    async fn start(&self, name: &str, id: &str) -> String {
        let id = self
            .client
            .schedule_by_name(name, &(), ScheduleOptions::with_id(id))
            .await
            .unwrap();
        self.client.wait_for_start(&id, LIMIT).await.unwrap();
        id
    }
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value, HeaderMap) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value, headers)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn ids(list: &Value) -> Vec<&str> {
    list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_list_filters_and_pages() {
    let env = env().await;
    for id in ["a-1", "a-2", "b-1"] {
        env.start("approval", id).await;
    }
    let failed = env.start("fails", "f-1").await;
    env.client
        .wait_for_completion(&failed, LIMIT)
        .await
        .unwrap();
    let r = env.router(DashboardOptions::default());

    let (status, all, _) = call(&r, get("/api/instances")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&all), ["a-1", "a-2", "b-1", "f-1"]);
    assert_eq!(all["continuation_token"], Value::Null);
    assert_eq!(all["instances"][0]["name"], "approval");
    assert_eq!(all["instances"][0]["status"], "Running");

    let (_, running, _) = call(&r, get("/api/instances?status=running&prefix=a-")).await;
    assert_eq!(ids(&running), ["a-1", "a-2"]);
    let (_, by_name, _) = call(&r, get("/api/instances?name=fails")).await;
    assert_eq!(ids(&by_name), ["f-1"]);
    let (_, failed, _) = call(&r, get("/api/instances?status=failed,completed")).await;
    assert_eq!(ids(&failed), ["f-1"]);
    let (_, future, _) = call(&r, get("/api/instances?created_after=2999-01-01T00:00:00Z")).await;
    assert_eq!(ids(&future), Vec::<&str>::new());

    // Two at a time: the token leads to the rest.
    let (_, first, _) = call(&r, get("/api/instances?page_size=2")).await;
    assert_eq!(ids(&first), ["a-1", "a-2"]);
    let token = first["continuation_token"].as_str().expect("more follow");
    let next = format!(
        "/api/instances?page_size=2&continue={}",
        token
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let (_, second, _) = call(&r, get(&next)).await;
    assert_eq!(ids(&second), ["b-1", "f-1"]);
    env.worker.shutdown().await;
}

#[tokio::test]
async fn bad_filters_are_400_naming_the_problem() {
    let env = env().await;
    let r = env.router(DashboardOptions::default());
    for (query, says) in [
        ("status=sleeping", "unknown status \"sleeping\""),
        ("created_before=tomorrow", "created_before:"),
        ("page_size=0", "1 to 1000"),
        ("sort=name", "unknown parameter \"sort\""),
        (
            "created_after=2030-01-02T00:00:00Z&created_before=2030-01-01T00:00:00Z",
            "must be earlier",
        ),
    ] {
        let (status, body, _) = call(&r, get(&format!("/api/instances?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    env.worker.shutdown().await;
}

#[tokio::test]
async fn an_unknown_instance_is_404_for_reads_and_actions() {
    let env = env().await;
    let r = env.router(DashboardOptions::default());
    let (status, body, _) = call(&r, get("/api/instances/nobody")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("\"nobody\""),
        "{body}"
    );
    for action in ACTIONS {
        let body = if action == "raise" {
            json!({"name": "approve"})
        } else {
            json!({})
        };
        let (status, _, _) = call(&r, post(&format!("/api/instances/nobody/{action}"), body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}");
    }
    let (status, body, _) = call(&r, post("/api/instances/x/explode", json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("unknown action"),
        "{body}"
    );
    let (status, _, _) = call(&r, get("/api/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    env.worker.shutdown().await;
}

#[tokio::test]
async fn the_token_is_required_when_set() {
    let env = env().await;
    let id = env.start("approval", "t-1").await;
    let r = env.router(DashboardOptions {
        token: Some("s3cret".into()),
        hosts: None,
    });
    let (status, body, headers) = call(&r, get("/api/instances")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"].as_str().unwrap().contains("bearer token"),
        "{body}"
    );
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    let with = |token: &str, request: Request<Body>| {
        let mut request = request;
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        request
    };
    let (status, _, _) = call(&r, with("wrong", get("/api/instances"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let terminate = || post(&format!("/api/instances/{id}/terminate"), json!({}));
    let (status, _, _) = call(&r, terminate()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an action without the token"
    );
    let still = env.client.get_status(&id).await.unwrap().unwrap();
    assert_eq!(still.status(), OrchestrationStatus::Running);

    let (status, list, _) = call(&r, with("s3cret", get("/api/instances"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&list), ["t-1"]);
    // The page itself holds no data and loads without the token.
    let (status, page, _) = call(&r, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("<script src=\"/app.js\">"));
    let (status, _, _) = call(&r, with("s3cret", terminate())).await;
    assert_eq!(status, StatusCode::OK);
    let state = env.client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Terminated);
    env.worker.shutdown().await;
}

#[tokio::test]
async fn actions_from_other_sites_are_refused() {
    let env = env().await;
    let id = env.start("approval", "o-1").await;
    let r = env.router(DashboardOptions {
        token: None,
        hosts: loopback_hosts("127.0.0.1:8082".parse().unwrap()),
    });
    let path = format!("/api/instances/{id}/terminate");
    // A form post (no preflight in a browser) is not JSON.
    let form = Request::post(&path)
        .header("host", "127.0.0.1:8082")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("reason=x"))
        .unwrap();
    assert_eq!(call(&r, form).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut foreign = post(&path, json!({}));
    foreign
        .headers_mut()
        .insert("host", HeaderValue::from_static("127.0.0.1:8082"));
    foreign
        .headers_mut()
        .insert("origin", HeaderValue::from_static("http://evil.example"));
    assert_eq!(call(&r, foreign).await.0, StatusCode::FORBIDDEN);
    // A name of another site pointed at loopback.
    let rebound = Request::get("/api/instances")
        .header("host", "evil.example:8082")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = call(&r, rebound).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("http://127.0.0.1:8082/"));
    let still = env.client.get_status(&id).await.unwrap().unwrap();
    assert_eq!(still.status(), OrchestrationStatus::Running);

    let mut own = post(&path, json!({"reason": "from the page"}));
    own.headers_mut()
        .insert("host", HeaderValue::from_static("localhost:8082"));
    own.headers_mut()
        .insert("origin", HeaderValue::from_static("http://localhost:8082"));
    assert_eq!(call(&r, own).await.0, StatusCode::OK);
    let state = env.client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Terminated);
    assert_eq!(state.output_json(), Some("\"from the page\""));
    env.worker.shutdown().await;
}

#[tokio::test]
async fn the_instance_page_data_and_every_action() {
    let env = env().await;
    let id = env.start("approval", "w-1").await;
    let r = env.router(DashboardOptions::default());
    let path = |action: &str| format!("/api/instances/{id}/{action}");

    let (status, page, _) = call(&r, get(&format!("/api/instances/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["instance"]["status"], "Running");
    assert_eq!(page["instance"]["custom_status"], "waiting");
    assert_eq!(page["instance"]["input"], Value::Null);
    assert_eq!(page["history"][1]["type"], "ExecutionStarted");
    assert_eq!(page["timeline"]["marks"][0]["kind"], "started");

    // Bad bodies change nothing.
    for (action, body, says) in [
        ("raise", json!({}), "give the event's \"name\""),
        ("raise", json!({"name": 3}), "\"name\" must be text"),
        ("terminate", json!({"recursive": "yes"}), "true or false"),
        ("suspend", json!({"why": "x"}), "unknown field \"why\""),
        ("resume", json!([1]), "must be a JSON object"),
    ] {
        let (status, err, _) = call(&r, post(&path(action), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action}");
        assert!(
            err["error"].as_str().unwrap().contains(says),
            "{action}: {err}"
        );
    }
    let broken = Request::post(path("raise"))
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let (status, err, _) = call(&r, broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"].as_str().unwrap().contains("not valid JSON"),
        "{err}"
    );

    // What the status does not allow is 409.
    for action in ["rewind", "purge", "restart"] {
        let (status, err, _) = call(&r, post(&path(action), json!({}))).await;
        assert!(
            status == StatusCode::CONFLICT,
            "{action} of a running instance: {status} {err}"
        );
    }

    let (status, _, _) = call(&r, post(&path("suspend"), json!({"reason": "look"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&r, post(&path("resume"), json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, done, _) = call(
        &r,
        post(&path("raise"), json!({"name": "approve", "data": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let state = env.client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    assert!(state.output::<bool>().unwrap());
    let history = env.client.history(&id).await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.type_name()).collect();
    for kind in ["ExecutionSuspended", "ExecutionResumed", "EventRaised"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }

    let (status, err, _) = call(&r, post(&path("terminate"), json!({}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["error"].as_str().unwrap().contains("already finished"));
    let (status, restarted, _) = call(&r, post(&path("restart"), json!({"new_id": true}))).await;
    assert_eq!(status, StatusCode::OK);
    let new_id = restarted["instance_id"].as_str().unwrap();
    assert_ne!(new_id, id);
    env.client.wait_for_start(new_id, LIMIT).await.unwrap();
    let (status, purged, _) = call(&r, post(&path("purge"), json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(purged["purged"], 1);
    assert!(env.client.get_status(&id).await.unwrap().is_none());

    // A failed instance rewinds (and fails again: the code still fails).
    let failed = env.start("fails", "f-2").await;
    env.client
        .wait_for_completion(&failed, LIMIT)
        .await
        .unwrap();
    let (status, page, _) = call(&r, get("/api/instances/f-2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["instance"]["failure"]["error_type"], "Broken");
    let (status, _, _) = call(
        &r,
        post("/api/instances/f-2/rewind", json!({"reason": "retry"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let history = env.client.history(&failed).await.unwrap();
        if history.iter().any(|e| {
            matches!(
                e.kind,
                durable_runtime::history::EventKind::ExecutionRewound { .. }
            )
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ExecutionRewound in {failed}'s history within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.worker.shutdown().await;
}

#[tokio::test]
async fn pages_refuse_to_be_framed_by_other_sites() {
    let env = env().await;
    let r = env.router(DashboardOptions {
        token: None,
        hosts: None,
    });
    for (path, _, _) in ASSETS {
        let (status, _, headers) = call(&r, get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'none'",
            "{path}"
        );
    }
    env.worker.shutdown().await;
}
