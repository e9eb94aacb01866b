//! Task hubs on durable's server (`SidecarServer::with_hubs`): the
//! `taskhub` header selects a namespace (`default` when absent), each with
//! its own instances and work; `CreateTaskHub` opens one and
//! `DeleteTaskHub` deletes one; bad hub names are refused.

use async_trait::async_trait;
use durable_grpc::server::{HubStore, ServerOptions, SidecarServer};
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::backend::{Backend, BackendError, MemoryBackend};
use durable_runtime::{ActivityError, Client, Registry, ScheduleOptions, Worker};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Request};

#[allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
mod proto {
    tonic::include_proto!("_");
}

use proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as RawClient;

const WAIT: Duration = Duration::from_secs(20);

/// A memory backend per hub; records what was opened and deleted.
#[derive(Default)]
struct Hubs {
    log: Mutex<Vec<String>>,
}

#[async_trait]
impl HubStore for Hubs {
    async fn open(&self, hub: &str) -> Result<Arc<dyn Backend>, BackendError> {
        self.log.lock().unwrap().push(format!("open {hub}"));
        Ok(Arc::new(MemoryBackend::new()))
    }
    async fn delete(&self, hub: &str) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(format!("delete {hub}"));
        Ok(())
    }
}

/// The worker of hub `greeting` answers "`greeting`, NAME!".
fn registry(greeting: &'static str) -> Registry {
    Registry::new()
        .activity_fn("hello", move |_ctx, name: String| async move {
            Ok::<_, ActivityError>(format!("{greeting}, {name}!"))
        })
        .orchestrator_fn("greet", |ctx, name: String| async move {
            let g: String = ctx.call_activity_by_name("hello", &name).await?;
            Ok(g)
        })
}

fn backend(endpoint: &str, hub: Option<&str>) -> Arc<dyn Backend> {
    let mut options = GrpcOptions::new(endpoint.to_string());
    if let Some(hub) = hub {
        options = options.task_hub(hub);
    }
    Arc::new(GrpcBackend::new(options).expect("valid options"))
}

fn on_hub<T>(message: T, hub: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("taskhub", hub.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_are_separate_namespaces_created_and_deleted_on_request() {
    let store = Arc::new(Hubs::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = SidecarServer::with_hubs(store.clone(), ServerOptions::default());
    tokio::spawn(server.serve(listener, std::future::pending()));

    // The same instance id on three hubs, each served by its own worker.
    let hubs = [
        (None, "Hello"),
        (Some("eu"), "Bonjour"),
        (Some("us-2"), "Howdy"),
    ];
    let mut workers = Vec::new();
    let mut clients = BTreeMap::new();
    for (hub, greeting) in hubs {
        let b = backend(&endpoint, hub);
        workers.push(Worker::new(b.clone(), registry(greeting)).start().unwrap());
        clients.insert(hub.unwrap_or("default"), Client::new(b));
    }
    for (hub, greeting) in hubs {
        let client = &clients[hub.unwrap_or("default")];
        let id = client
            .schedule_by_name("greet", &"hub", ScheduleOptions::with_id("same-id"))
            .await
            .unwrap();
        let state = client.wait_for_completion(&id, WAIT).await.unwrap();
        assert_eq!(
            state.output::<String>().unwrap(),
            format!("{greeting}, hub!"),
            "hub {hub:?} ran its own worker's code"
        );
    }
    // An explicit "default" is the hub without a header.
    let explicit = Client::new(backend(&endpoint, Some("default")));
    let state = explicit.get_state("same-id").await.unwrap().unwrap();
    assert_eq!(state.output::<String>().unwrap(), "Hello, hub!");

    // A hub nobody used has no instances (and is opened on first use).
    let empty = Client::new(backend(&endpoint, Some("empty")));
    assert!(empty.get_state("same-id").await.unwrap().is_none());

    let mut raw = RawClient::connect(endpoint.clone()).await.unwrap();
    // Deleting "eu" drops its instances; the others keep theirs.
    raw.delete_task_hub(on_hub(proto::DeleteTaskHubRequest {}, "eu"))
        .await
        .expect("DeleteTaskHub");
    assert!(clients["eu"].get_state("same-id").await.unwrap().is_none());
    let kept = clients["us-2"].get_state("same-id").await.unwrap().unwrap();
    assert_eq!(kept.output::<String>().unwrap(), "Howdy, hub!");
    // The "eu" worker reconnects to the new, empty hub and serves it.
    let id = clients["eu"]
        .schedule_by_name("greet", &"again", ScheduleOptions::with_id("after"))
        .await
        .unwrap();
    let state = clients["eu"].wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "Bonjour, again!");

    raw.create_task_hub(on_hub(proto::CreateTaskHubRequest::default(), "new"))
        .await
        .expect("CreateTaskHub");

    // Names no store could use are refused, naming the rule.
    for bad in ["../x", "a b", "x".repeat(33).as_str()] {
        let e = raw
            .hello(on_hub((), bad))
            .await
            .expect_err("a bad hub name was served");
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("task hub name"), "{e:?}");
    }

    for w in workers {
        w.shutdown().await;
    }
    let log = store.log.lock().unwrap().clone();
    for expected in [
        "open default",
        "open eu",
        "open us_2",
        "open empty",
        "delete eu",
        "open new",
    ] {
        assert!(log.iter().any(|l| l == expected), "{expected} in {log:?}");
    }
    assert_eq!(
        log.iter().filter(|l| *l == "open eu").count(),
        2,
        "eu opened again after its deletion: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "open default").count(),
        1,
        "a hub is opened once: {log:?}"
    );
}

/// Hubs whose deletion waits until the test lets it finish.
#[derive(Default)]
struct SlowDelete {
    log: Mutex<Vec<String>>,
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait]
impl HubStore for SlowDelete {
    async fn open(&self, hub: &str) -> Result<Arc<dyn Backend>, BackendError> {
        self.log.lock().unwrap().push(format!("open {hub}"));
        Ok(Arc::new(MemoryBackend::new()))
    }
    async fn delete(&self, hub: &str) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(format!("delete {hub}"));
        self.started.notify_one();
        self.release.notified().await;
        self.log.lock().unwrap().push(format!("deleted {hub}"));
        Ok(())
    }
}

async fn serve(store: Arc<dyn HubStore>, options: ServerOptions) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = SidecarServer::with_hubs(store, options);
    tokio::spawn(server.serve(listener, std::future::pending()));
    endpoint
}

/// While a hub is being deleted, calls naming it are refused: none opens
/// it again on storage about to go. Once deleted, it opens anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_being_deleted_is_not_reopened() {
    let store = Arc::new(SlowDelete::default());
    let endpoint = serve(store.clone(), ServerOptions::default()).await;
    let eu = Client::new(backend(&endpoint, Some("eu")));
    eu.schedule_by_name("greet", &"x", ScheduleOptions::with_id("before"))
        .await
        .unwrap();
    let mut raw = RawClient::connect(endpoint.clone()).await.unwrap();
    let mut deleting = raw.clone();
    let delete = tokio::spawn(async move {
        deleting
            .delete_task_hub(on_hub(proto::DeleteTaskHubRequest {}, "eu"))
            .await
    });
    store.started.notified().await;
    let e = raw
        .start_instance(on_hub(
            proto::CreateInstanceRequest {
                instance_id: "during".into(),
                name: "greet".into(),
                ..Default::default()
            },
            "EU",
        ))
        .await
        .expect_err("a call was served on a hub being deleted");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("being deleted"), "{e:?}");
    let e = raw
        .delete_task_hub(on_hub(proto::DeleteTaskHubRequest {}, "eu"))
        .await
        .expect_err("deleted twice at once");
    assert!(e.message().contains("already being deleted"), "{e:?}");
    store.release.notify_one();
    delete.await.unwrap().expect("DeleteTaskHub");
    eu.schedule_by_name("greet", &"x", ScheduleOptions::with_id("after"))
        .await
        .unwrap();
    assert!(eu.get_state("before").await.unwrap().is_none());
    assert_eq!(
        *store.log.lock().unwrap(),
        ["open eu", "delete eu", "deleted eu", "open eu"]
    );
}

/// Hub "default" is never deleted; at most `max_hubs` others are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_hub_stays_and_hubs_are_bounded() {
    let store = Arc::new(Hubs::default());
    let options = ServerOptions {
        max_hubs: 2,
        ..ServerOptions::default()
    };
    let endpoint = serve(store.clone(), options).await;
    let mut raw = RawClient::connect(endpoint.clone()).await.unwrap();
    for hub in [None, Some("default"), Some("DEFAULT")] {
        let mut request = tonic::Request::new(proto::DeleteTaskHubRequest {});
        if let Some(hub) = hub {
            request
                .metadata_mut()
                .insert("taskhub", hub.parse().unwrap());
        }
        let e = raw
            .delete_task_hub(request)
            .await
            .expect_err("the default hub was deleted");
        assert_eq!(e.code(), Code::FailedPrecondition, "{hub:?}: {e:?}");
    }
    for hub in ["a", "b"] {
        raw.create_task_hub(on_hub(proto::CreateTaskHubRequest::default(), hub))
            .await
            .expect("CreateTaskHub");
    }
    // The default hub does not count.
    Client::new(backend(&endpoint, None))
        .schedule_by_name("greet", &"x", ScheduleOptions::default())
        .await
        .unwrap();
    let e = raw
        .create_task_hub(on_hub(proto::CreateTaskHubRequest::default(), "c"))
        .await
        .expect_err("a third hub opened");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("max_hubs"), "{e:?}");
    raw.delete_task_hub(on_hub(proto::DeleteTaskHubRequest {}, "a"))
        .await
        .expect("DeleteTaskHub");
    raw.create_task_hub(on_hub(proto::CreateTaskHubRequest::default(), "c"))
        .await
        .expect("a hub opens once another is deleted");
    // A hello opens nothing.
    raw.hello(on_hub((), "d")).await.expect("Hello");
    let log = store.log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l == "open d"), "{log:?}");
}
