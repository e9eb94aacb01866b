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

    raw.create_task_hub(on_hub(proto::CreateTaskHubRequest {}, "new"))
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
        "open us-2",
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
