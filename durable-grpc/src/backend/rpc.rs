//! What every call to the sidecar needs: the channel (endpoint, TLS,
//! keep-alive, message size limits), the headers that go on each request
//! (task hub, extra headers, a fresh bearer token) and the mapping of its
//! failures.

use super::error::{lease_error, map_status};
use crate::options::{GrpcOptions, TokenProvider};
use crate::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use durable_runtime::backend::BackendError;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// What every call needs: the channel, the headers and the limits.
#[derive(Clone)]
pub(super) struct Rpc {
    client: TaskHubSidecarServiceClient<Channel>,
    pub(super) endpoint: Arc<str>,
    task_hub: MetadataValue<Ascii>,
    headers: Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>,
    token_provider: Option<Arc<dyn TokenProvider>>,
    pub(super) request_timeout: Duration,
    max_message_size: usize,
}

impl Rpc {
    pub(super) fn new(options: &GrpcOptions) -> Result<Self, BackendError> {
        let url = options.endpoint.trim();
        let is_https = url.starts_with("https://");
        if !is_https && !url.starts_with("http://") {
            return Err(BackendError::InvalidRequest(format!(
                "the sidecar endpoint \"{url}\" is not an http:// or https:// URL; \
                 write it like http://localhost:8080"
            )));
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| {
                BackendError::InvalidRequest(format!(
                    "the sidecar endpoint \"{url}\" is not a valid URL: {e}"
                ))
            })?
            .connect_timeout(options.connect_timeout)
            .keep_alive_timeout(options.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(interval) = options.keep_alive_interval {
            endpoint = endpoint.http2_keep_alive_interval(interval);
        }
        if options.tls_ca_pem.is_some() && !is_https {
            return Err(BackendError::InvalidRequest(format!(
                "a CA certificate was given but the sidecar endpoint \"{url}\" is not https://; \
                 use an https:// endpoint or drop the certificate"
            )));
        }
        if is_https {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = &options.tls_ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| {
                BackendError::InvalidRequest(format!("cannot set up TLS for \"{url}\": {e}"))
            })?;
        }
        let headers = options
            .headers
            .iter()
            .map(|(name, value)| {
                let key = MetadataKey::from_bytes(name.as_bytes()).map_err(|_| {
                    BackendError::InvalidRequest(format!(
                        "\"{name}\" is not a valid header name; use lowercase ASCII letters, \
                         digits and dashes"
                    ))
                })?;
                let value = value.parse::<MetadataValue<Ascii>>().map_err(|_| {
                    BackendError::InvalidRequest(format!(
                        "the value of header \"{name}\" cannot be sent (non-ASCII or control \
                         characters)"
                    ))
                })?;
                Ok((key, value))
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        let task_hub = options
            .task_hub
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| {
                BackendError::InvalidRequest(format!(
                    "the task hub name \"{}\" cannot be sent as a header; use ASCII letters, \
                 digits and dashes",
                    options.task_hub
                ))
            })?;
        let client = TaskHubSidecarServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(options.max_incoming_message_size)
            .max_encoding_message_size(options.max_message_size);
        Ok(Rpc {
            client,
            endpoint: url.into(),
            task_hub,
            headers,
            token_provider: options.token_provider.clone(),
            request_timeout: options.request_timeout,
            max_message_size: options.max_message_size,
        })
    }

    pub(super) fn client(&self) -> TaskHubSidecarServiceClient<Channel> {
        self.client.clone()
    }

    /// Wraps a message with the task hub, the bearer token and the default
    /// deadline, refusing it before it is sent if it is over the size limit.
    pub(super) async fn request<T: Message>(
        &self,
        message: T,
        what: &str,
    ) -> Result<Request<T>, BackendError> {
        // 5 bytes of gRPC framing precede every message.
        let size = message.encoded_len() + 5;
        if size > self.max_message_size {
            return Err(BackendError::PayloadTooLarge {
                what: what.to_string(),
                size,
                limit: self.max_message_size,
            });
        }
        let mut request = Request::new(message);
        request.set_timeout(self.request_timeout);
        let metadata = request.metadata_mut();
        metadata.insert("taskhub", self.task_hub.clone());
        for (key, value) in &self.headers {
            metadata.insert(key.clone(), value.clone());
        }
        if let Some(provider) = &self.token_provider {
            let token = provider.token().await.map_err(|e| {
                BackendError::Unavailable(format!(
                    "could not get a bearer token for the sidecar at {}: {e}",
                    self.endpoint
                ))
            })?;
            let value = format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    BackendError::InvalidRequest(
                        "the bearer token provider returned text that cannot be sent as a \
                         header (non-ASCII or control characters)"
                            .to_string(),
                    )
                })?;
            metadata.insert("authorization", value);
        }
        Ok(request)
    }

    /// Maps a gRPC status to a backend error. `instance` names the instance
    /// the call was about, for `NotFound`.
    pub(super) fn error(&self, status: Status, instance: Option<&str>) -> BackendError {
        map_status(&self.endpoint, status, instance)
    }

    /// Maps the failure of a call made with a work item's completion token,
    /// as [`lease_error`] does.
    pub(super) fn lease_error(&self, status: Status, instance_id: &str) -> BackendError {
        lease_error(&self.endpoint, status, instance_id)
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::scripted;
    use crate::{GrpcBackend, GrpcOptions};
    use durable_runtime::backend::{Backend, BackendError, CreateInstanceRequest};
    use std::sync::Arc;

    #[tokio::test]
    async fn bad_endpoints_and_task_hubs_are_reported_up_front() {
        assert!(GrpcBackend::new(GrpcOptions::new("https://scheduler.example:443")).is_ok());
        let e = GrpcBackend::new(GrpcOptions::new("localhost:8080")).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = GrpcBackend::new(GrpcOptions::new("http://localhost:1").task_hub("bad\nhub"))
            .unwrap_err();
        assert!(e.to_string().contains("task hub"), "{e}");
    }

    #[tokio::test]
    async fn oversized_requests_are_refused_before_they_are_sent() {
        let backend =
            GrpcBackend::new(GrpcOptions::new("http://127.0.0.1:9").max_message_size(1024))
                .unwrap();
        let e = backend
            .create_instance(CreateInstanceRequest {
                instance_id: "i".into(),
                name: "big".into(),
                version: None,
                input: Some(format!("\"{}\"", "x".repeat(2000))),
                scheduled_start: None,
                reuse_policy: Default::default(),
                trace: None,
                tags: Default::default(),
            })
            .await
            .unwrap_err();
        match e {
            BackendError::PayloadTooLarge { what, size, limit } => {
                assert_eq!(limit, 1024);
                assert!(size > 2000);
                assert!(what.contains("big"), "{what}");
            }
            other => panic!("expected PayloadTooLarge, got {other}"),
        }
    }

    #[tokio::test]
    async fn every_call_carries_the_task_hub_and_a_fresh_bearer_token() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let options = GrpcOptions::new(format!("http://{addr}"))
            .task_hub("orders")
            .bearer_token(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { Ok::<_, std::io::Error>(format!("token-{n}")) }
            });
        let backend = GrpcBackend::connect(options).await.unwrap();
        assert_eq!(backend.get_instance("x", false).await.unwrap(), None);
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(
            seen.headers,
            vec![
                (
                    "hello".to_string(),
                    Some("orders".to_string()),
                    Some("Bearer token-0".to_string())
                ),
                (
                    "get_instance".to_string(),
                    Some("orders".to_string()),
                    Some("Bearer token-1".to_string())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn extra_headers_go_on_every_call() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let options = GrpcOptions::new(format!("http://{addr}")).header("dapr-api-token", "s3cret");
        let backend = GrpcBackend::connect(options).await.unwrap();
        assert_eq!(backend.get_instance("x", false).await.unwrap(), None);
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(seen.api_tokens, vec![Some("s3cret".to_string()); 2]);
    }

    #[tokio::test]
    async fn bad_headers_and_tls_settings_are_clear_errors() {
        let err = |o: GrpcOptions| {
            GrpcBackend::new(o)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err(GrpcOptions::new("http://127.0.0.1:1").header("Bad Name", "x"));
        assert!(e.contains("\"Bad Name\" is not a valid header name"), "{e}");
        let e = err(GrpcOptions::new("http://127.0.0.1:1").header("x-key", "line\nbreak"));
        assert!(e.contains("header \"x-key\" cannot be sent"), "{e}");
        let e = err(GrpcOptions::new("http://127.0.0.1:1").tls_ca_certificate(b"pem".to_vec()));
        assert!(e.contains("not https://"), "{e}");
        let debug = format!(
            "{:?}",
            GrpcOptions::default().header("dapr-api-token", "s3cret")
        );
        assert!(
            debug.contains("dapr-api-token") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn a_failing_token_provider_is_reported_without_calling_the_sidecar() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let options = GrpcOptions::new(format!("http://{addr}")).bearer_token(|| async {
            Err::<String, _>(std::io::Error::other("credential expired"))
        });
        let e = GrpcBackend::connect(options).await.unwrap_err();
        assert!(e.to_string().contains("credential expired"), "{e}");
        assert!(sidecar.seen.lock().unwrap().headers.is_empty());
    }
}
