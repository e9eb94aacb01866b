//! The dashboard of `durable serve`: a web UI (the instance list, an
//! instance page with its timeline and history, actions) and the small
//! JSON API it reads, over the [`Client`] of the served store.
//!
//! Everything is in the binary: the page, its script and its style are
//! embedded ([`ASSETS`]), so nothing else is served or installed. The API:
//!
//! | call | what it answers |
//! |---|---|
//! | `GET /api/instances?status=&name=&prefix=&created_after=&created_before=&page_size=&continue=` | one page of instances (no payloads) and the token of the next |
//! | `GET /api/instances/{id}` | the instance with its payloads, its Gantt chart ([`view::gantt`]) and history ([`view::history_rows`]) |
//! | `POST /api/instances/{id}/{action}` | `raise`, `terminate`, `suspend`, `resume`, `purge`, `restart`, `rewind`, with a JSON body |
//!
//! Errors are `{"error": "..."}` with 400 (bad filters or body), 401 (no
//! or a wrong bearer token when the server has one; every API call needs
//! it then), 403 (a page of another origin posting), 404 (unknown
//! instance), 409 (an action the instance's status does not allow), 415
//! (an action whose body is not JSON) and 503 (the store does not answer).

pub mod view;

use crate::exit::CliError;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use durable_runtime::backend::{BackendError, InstanceMetadata};
use durable_runtime::{Backend, Client};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where `durable serve` serves the dashboard by default (the port of the
/// Durable Task Scheduler emulator's dashboard).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8082";

/// The embedded front end: path, content type, content.
pub const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

/// The actions `POST /api/instances/{id}/{action}` takes.
pub const ACTIONS: [&str; 7] = [
    "raise",
    "terminate",
    "suspend",
    "resume",
    "purge",
    "restart",
    "rewind",
];

/// How the dashboard is served.
#[derive(Clone, Default)]
pub struct DashboardOptions {
    /// When set, every API call needs `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// When set, requests must name one of these in their `Host` header
    /// (`durable serve` sets the loopback names of its port, so another
    /// site cannot reach the API by pointing a name of its own at
    /// 127.0.0.1).
    pub hosts: Option<Vec<String>>,
}

impl std::fmt::Debug for DashboardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardOptions")
            .field("token", &self.token.as_ref().map(|_| "..."))
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// The `Host` names a dashboard listening on `addr` answers: for a
/// loopback address its loopback names with the port; otherwise any
/// (`None`: a server reachable from other machines has other names).
///
/// ```
/// use durable_cli::dashboard::loopback_hosts;
/// let hosts = loopback_hosts("127.0.0.1:8082".parse().unwrap()).unwrap();
/// assert!(hosts.contains(&"localhost:8082".to_string()));
/// assert!(loopback_hosts("0.0.0.0:8082".parse().unwrap()).is_none());
/// ```
pub fn loopback_hosts(addr: SocketAddr) -> Option<Vec<String>> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let port = addr.port();
    let mut hosts = vec![format!("{addr}")];
    for name in ["localhost", "127.0.0.1", "[::1]"] {
        let host = format!("{name}:{port}");
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Some(hosts)
}

struct Shared {
    client: Client,
    options: DashboardOptions,
}

type AppState = Arc<Shared>;

/// The dashboard's routes: the embedded pages and the API, over `backend`.
pub fn router(backend: Arc<dyn Backend>, options: DashboardOptions) -> Router {
    let state: AppState = Arc::new(Shared {
        client: Client::new(backend),
        options,
    });
    let api = Router::new()
        .route("/instances", get(list))
        .route("/instances/{id}", get(instance))
        .route("/instances/{id}/{action}", post(action))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API call; see docs/serve.md") })
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    let mut pages = Router::new();
    for (path, content_type, body) in ASSETS {
        pages = pages.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                        // Never inside another site's frame: its actions
                        // take one click, and with no token set nothing
                        // else stops a framing page from tricking a user.
                        (header::X_FRAME_OPTIONS, "DENY"),
                        (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
                    ],
                    body,
                )
            }),
        );
    }
    pages
        .nest("/api", api)
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| CliError::Other(format!("the dashboard stopped: {e}")))
}

/// The dashboard `durable serve` was asked for, bound before the server
/// says it listens.
pub struct Bound {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
}

/// Binds the dashboard of `durable serve` (none with `--no-dashboard`)
/// over `backend`, the store's default task hub. An address in use is an
/// error saying how to move the dashboard or turn it off.
pub async fn bind(
    args: &crate::args::ServeArgs,
    token: Option<&str>,
    backend: Arc<dyn Backend>,
) -> Result<Option<Bound>, CliError> {
    if args.no_dashboard {
        return Ok(None);
    }
    let addr = check_addr(&args.dashboard, token.is_some(), args.insecure)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError::Unavailable(format!(
            "cannot serve the dashboard on {addr}: {e}; move it with --dashboard ADDR (port 0 \
             takes a free one) or turn it off with --no-dashboard"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Unavailable(format!("cannot read the dashboard's address: {e}")))?;
    let router = router(
        backend,
        DashboardOptions {
            token: token.map(str::to_string),
            hosts: loopback_hosts(addr),
        },
    );
    Ok(Some(Bound {
        listener,
        addr,
        router,
    }))
}

/// Stops a started dashboard.
pub struct Stopper(tokio::sync::watch::Sender<bool>);

impl Stopper {
    /// Asks the dashboard to stop: it answers the requests in flight and
    /// closes.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A started dashboard (or none).
pub struct Running(Option<tokio::task::JoinHandle<Result<(), CliError>>>);

impl Running {
    /// Waits (at most five seconds) for the dashboard to stop after
    /// [`Stopper::stop`].
    pub async fn stopped(self) {
        let Some(task) = self.0 else { return };
        let abort = task.abort_handle();
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => eprintln!("durable serve: {e}"),
            Ok(_) => {}
            Err(_) => abort.abort(),
        }
    }
}

/// Starts serving a bound dashboard on the running tokio runtime and
/// prints where (`durable serve: dashboard on http://ADDR/`).
pub fn start(bound: Option<Bound>, out: &mut dyn std::io::Write) -> (Stopper, Running) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let Some(bound) = bound else {
        return (Stopper(tx), Running(None));
    };
    let _ = writeln!(out, "durable serve: dashboard on http://{}/", bound.addr);
    let stop = async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let task = tokio::spawn(serve(bound.listener, bound.router, stop));
    (Stopper(tx), Running(Some(task)))
}

/// Checks `--dashboard ADDR` as `--listen` is checked: it parses, and an
/// address reachable from other machines needs a token or `--insecure`.
pub fn check_addr(addr: &str, token: bool, insecure: bool) -> Result<SocketAddr, CliError> {
    let parsed: SocketAddr = addr.parse().map_err(|e| {
        CliError::Usage(format!(
            "--dashboard {addr}: {e}; give an IP address and a port, e.g. {DEFAULT_ADDR}, or \
             --no-dashboard to serve none"
        ))
    })?;
    if !parsed.ip().is_loopback() && !token && !insecure {
        return Err(CliError::Usage(format!(
            "--dashboard {parsed} is reachable from other machines, and anyone who can reach it \
             could read and change instances: give --token TOKEN (the dashboard asks for it), \
             or --insecure on a network you trust"
        )));
    }
    Ok(parsed)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn backend_error(e: durable_runtime::Error) -> Response {
    let status = match &e {
        durable_runtime::Error::Backend(b) => match b {
            BackendError::NotFound(_) => StatusCode::NOT_FOUND,
            BackendError::InvalidState { .. } | BackendError::AlreadyExists { .. } => {
                StatusCode::CONFLICT
            }
            BackendError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            BackendError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BackendError::Unavailable(_) | BackendError::Shutdown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            BackendError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        durable_runtime::Error::Codec(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        BackendError::NotFound(id.to_string()).to_string(),
    )
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(hosts) = &state.options.hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "this dashboard answers only as {}; open it at http://{}/",
                    hosts.join(", "),
                    hosts[0]
                ),
            );
        }
    }
    next.run(request).await
}

/// The token, and for actions a JSON body from the dashboard's own origin.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(token) = &state.options.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let message = match given {
            None => Some("this server needs its bearer token: send `authorization: Bearer <token>` (the dashboard asks for it)"),
            Some(t) if !same(t.trim().as_bytes(), token.as_bytes()) => {
                Some("the bearer token is not the one this server was started with")
            }
            Some(_) => None,
        };
        if let Some(message) = message {
            let mut response = error(StatusCode::UNAUTHORIZED, message);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"durable\""),
            );
            return response;
        }
    }
    if request.method() == Method::POST {
        if let Some(refused) = foreign_post(headers) {
            return refused;
        }
    }
    next.run(request).await
}

/// An action must say its body is JSON (which a page of another site
/// cannot send without the browser asking first), and an `Origin`, when
/// sent, must be this server's.
fn foreign_post(headers: &HeaderMap) -> Option<Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "actions take a JSON body: send content-type: application/json (and {} when there \
             is nothing to say)",
        ));
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let own = host.is_some_and(|h| {
            origin.eq_ignore_ascii_case(&format!("http://{h}"))
                || origin.eq_ignore_ascii_case(&format!("https://{h}"))
        });
        if !own {
            return Some(error(
                StatusCode::FORBIDDEN,
                format!(
                    "an action from a page of {origin} is refused: use this dashboard's own page"
                ),
            ));
        }
    }
    None
}

async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let request = match view::parse_list(&params) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut query = request.query.clone();
    let mut found: Vec<InstanceMetadata> = Vec::new();
    // The name is filtered here, page by page: read on until the page is
    // full or a bounded number of backend pages was read.
    let mut read = 0;
    let token = loop {
        let (page, token) = match state.client.query(query.clone()).await {
            Ok(p) => p,
            Err(e) => return backend_error(e),
        };
        read += 1;
        found.extend(
            page.into_iter()
                .map(|s| s.metadata().clone())
                .filter(|m| request.name.as_deref().is_none_or(|n| m.name == n)),
        );
        match token {
            Some(t) if request.name.is_some() && found.len() < query.page_size && read < 20 => {
                query.continuation_token = Some(t)
            }
            other => break other,
        }
    };
    let instances: Vec<Value> = found.iter().map(crate::format::instance_json).collect();
    Json(json!({"instances": instances, "continuation_token": token})).into_response()
}

async fn instance(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let found = match state.client.get_state(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found(&id),
        Err(e) => return backend_error(e),
    };
    let events = match state.client.history(&id).await {
        Ok(h) => h,
        Err(e) => return backend_error(e),
    };
    let meta = found.metadata();
    let running = !meta.status.is_terminal();
    let now = durable_runtime::chrono::Utc::now();
    Json(json!({
        "instance": crate::format::instance_json(meta),
        "timeline": view::gantt(&events, now, running),
        "history": view::history_rows(&events),
        "now": crate::format::timestamp(now),
    }))
    .into_response()
}

/// The fields an action's body may have; the error names what is wrong.
fn body_fields(body: &Bytes, allowed: &[&str]) -> Result<serde_json::Map<String, Value>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8 text".to_string())?;
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the body is not valid JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err("the body must be a JSON object, e.g. {}".into());
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(if allowed.is_empty() {
            format!("unknown field \"{k}\"; this action takes none")
        } else {
            format!(
                "unknown field \"{k}\"; this action takes {}",
                allowed.join(", ")
            )
        });
    }
    Ok(map)
}

fn text_field(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{key}\" must be text")),
    }
}

fn bool_field(map: &serde_json::Map<String, Value>, key: &str) -> Result<bool, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("\"{key}\" must be true or false")),
    }
}

async fn action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let allowed: &[&str] = match action.as_str() {
        "raise" => &["name", "data"],
        "terminate" => &["reason", "recursive"],
        "suspend" | "resume" | "rewind" => &["reason"],
        "purge" => &["recursive"],
        "restart" => &["new_id"],
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown action \"{other}\"; use one of {}",
                    ACTIONS.join(", ")
                ),
            )
        }
    };
    let fields = match body_fields(&body, allowed) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{action}: {e}")),
    };
    match run_action(&state.client, &id, &action, &fields).await {
        Ok(value) => Json(value).into_response(),
        Err(ActionError::Bad(e)) => error(StatusCode::BAD_REQUEST, format!("{action}: {e}")),
        Err(ActionError::Conflict(e)) => error(StatusCode::CONFLICT, e),
        Err(ActionError::NotFound) => not_found(&id),
        Err(ActionError::Backend(e)) => backend_error(e),
    }
}

enum ActionError {
    Bad(String),
    Conflict(String),
    NotFound,
    Backend(durable_runtime::Error),
}

impl From<durable_runtime::Error> for ActionError {
    fn from(e: durable_runtime::Error) -> Self {
        ActionError::Backend(e)
    }
}

impl From<BackendError> for ActionError {
    fn from(e: BackendError) -> Self {
        ActionError::Backend(e.into())
    }
}

async fn run_action(
    client: &Client,
    id: &str,
    action: &str,
    fields: &serde_json::Map<String, Value>,
) -> Result<Value, ActionError> {
    let reason = text_field(fields, "reason").map_err(ActionError::Bad)?;
    // Read before anything changes: bad input never reaches the store.
    let raise = if action == "raise" {
        let name = text_field(fields, "name")
            .map_err(ActionError::Bad)?
            .ok_or_else(|| ActionError::Bad("give the event's \"name\"".into()))?;
        let data = fields
            .get("data")
            .filter(|d| !d.is_null())
            .map(Value::to_string);
        Some((name, data))
    } else {
        None
    };
    let status = client
        .get_status(id)
        .await?
        .ok_or(ActionError::NotFound)?
        .status();
    let done = |what: &str| json!({"instance_id": id, "done": what});
    Ok(match action {
        "raise" => {
            let (name, data) = raise.expect("read above");
            client.backend().raise_event(id, &name, data).await?;
            json!({"instance_id": id, "done": "raise", "raised": name})
        }
        "terminate" => {
            if status.is_terminal() {
                return Err(ActionError::Conflict(format!(
                    "{id} has already finished ({status}); nothing to terminate"
                )));
            }
            let recursive = bool_field(fields, "recursive").map_err(ActionError::Bad)?;
            match reason {
                Some(r) if recursive => client.terminate_recursive(id, &r).await?,
                Some(r) => client.terminate(id, &r).await?,
                None => client.backend().terminate(id, None, recursive).await?,
            }
            done("terminate")
        }
        "suspend" => {
            client.suspend(id, reason.as_deref()).await?;
            done("suspend")
        }
        "resume" => {
            client.resume(id, reason.as_deref()).await?;
            done("resume")
        }
        "rewind" => {
            client.rewind(id, reason.as_deref()).await?;
            done("rewind")
        }
        "purge" => {
            let recursive = bool_field(fields, "recursive").map_err(ActionError::Bad)?;
            let purged = client.purge(id, recursive).await?;
            json!({"instance_id": id, "done": "purge", "purged": purged})
        }
        "restart" => {
            let started = if bool_field(fields, "new_id").map_err(ActionError::Bad)? {
                client.restart_as_new(id).await?
            } else {
                client.restart(id).await?
            };
            json!({"instance_id": started, "done": "restart", "restarted_from": id})
        }
        other => unreachable!("action {other} was checked"),
    })
}

#[cfg(test)]
mod tests;
