//! What every call checks (credentials, task hub, size) and how durable's
//! errors read as gRPC statuses.

use super::{Create, Shared, SidecarService, DEFAULT_HUB};
use crate::convert::ConvertError;
use durable_runtime::backend::BackendError;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Status};

impl SidecarService {
    /// Refuses a call without the right credentials, larger than the server
    /// takes, or for a task hub that is not served; else the call's hub
    /// (the `taskhub` header, `default` when absent), opened if need be.
    pub(super) async fn hub<T: prost::Message>(
        &self,
        request: &Request<T>,
        call: &str,
    ) -> Result<Arc<Shared>, Status> {
        let hub = self.check(request, call)?;
        self.hubs.get(&hub, call, Create::No).await
    }

    /// [`hub`](Self::hub), creating the hub if it has no storage yet
    /// (`StartInstance`, `GetWorkItems`).
    pub(super) async fn hub_or_new<T: prost::Message>(
        &self,
        request: &Request<T>,
        call: &str,
    ) -> Result<Arc<Shared>, Status> {
        let hub = self.check(request, call)?;
        self.hubs.get(&hub, call, Create::Yes).await
    }

    /// The credentials and size checks of [`hub`](Self::hub); the hub name.
    pub(super) fn check<T: prost::Message>(
        &self,
        request: &Request<T>,
        call: &str,
    ) -> Result<String, Status> {
        let options = &self.hubs.options;
        let meta = request.metadata();
        if let Some(token) = &options.token {
            let expected = format!("Bearer {token}");
            match meta.get("authorization").map(|v| v.to_str()) {
                None => {
                    return Err(Status::unauthenticated(format!(
                        "{call}: this server needs a bearer token; send the header \
                         `authorization: Bearer <token>` with the token it was started with"
                    )))
                }
                Some(Ok(given)) if given == expected => {}
                Some(_) => {
                    return Err(Status::unauthenticated(format!(
                        "{call}: the bearer token is not the one this server was started \
                         with; send `authorization: Bearer <token>` with that token"
                    )))
                }
            }
        }
        let hub = match meta.get("taskhub").map(|v| v.to_str()) {
            None | Some(Ok("")) => DEFAULT_HUB.to_string(),
            Some(Ok(hub)) => hub.to_string(),
            Some(Err(_)) => {
                return Err(Status::invalid_argument(format!(
                    "{call}: the taskhub header is not text; name the task hub with ASCII \
                     letters, digits, '_' and '-'"
                )))
            }
        };
        let size = request.get_ref().encoded_len() + 5;
        let limit = options.max_message_size;
        if size > limit {
            return Err(Status::resource_exhausted(format!(
                "{call}: the request is larger than max ({size} vs. {limit}) bytes that this \
                 server takes; send a smaller payload (store large data elsewhere and pass a \
                 reference) or start the server with a larger message size limit"
            )));
        }
        Ok(hub)
    }
}

/// A backend's error as the gRPC status that means it. The messages are the
/// backend's, which name the instance and say what to do.
pub(super) fn from_backend(e: BackendError) -> Status {
    let message = e.to_string();
    match e {
        BackendError::NotFound(_) => Status::not_found(message),
        BackendError::AlreadyExists { .. } => Status::already_exists(message),
        BackendError::InvalidState { .. } | BackendError::LeaseLost(_) => {
            Status::failed_precondition(message)
        }
        BackendError::PayloadTooLarge { size, limit, .. } => {
            Status::resource_exhausted(format!("{message} (larger than max ({size} vs. {limit}))"))
        }
        BackendError::Timeout(..) => Status::deadline_exceeded(message),
        BackendError::Shutdown => Status::unavailable(format!(
            "{message}; the server is stopping, so retry against another one"
        )),
        BackendError::InvalidRequest(_) => Status::invalid_argument(message),
        BackendError::Unavailable(_) => Status::unavailable(message),
        BackendError::Other(_) => Status::internal(message),
    }
}

/// A message durable cannot read, as `INVALID_ARGUMENT` naming the call.
pub(super) fn unreadable(call: &str, e: ConvertError) -> Status {
    Status::invalid_argument(format!(
        "{call}: the request cannot be read: {e}; nothing was changed"
    ))
}

/// Refuses a payload that is not JSON text (every Durable Task SDK sends
/// JSON); `what` names it.
pub(super) fn json(what: impl FnOnce() -> String, payload: Option<&str>) -> Result<(), Status> {
    let Some(text) = payload else { return Ok(()) };
    let mut de = serde_json::Deserializer::from_str(text);
    match <serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut de).and_then(|_| de.end())
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Status::invalid_argument(format!(
            "{} is not JSON text ({e}); send JSON (a string as \"text\", in quotes), or no \
             payload; nothing was changed",
            what()
        ))),
    }
}

/// The deadline the caller set (`grpc-timeout`), if any.
pub(super) fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    let text = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_in_every_unit() {
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("grpc-timeout", v.parse().unwrap());
            deadline(&r)
        };
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(with("3M"), Some(Duration::from_secs(180)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("7u"), Some(Duration::from_micros(7)));
        assert_eq!(with("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(with("x"), None);
        assert_eq!(with("10"), None);
        assert_eq!(deadline(&Request::new(())), None);
    }

    #[test]
    fn only_json_payloads_pass() {
        for ok in [r#"{"a":[1,2]}"#, "null", "\"text\"", " 3 "] {
            assert!(json(|| "x".into(), Some(ok)).is_ok(), "{ok}");
        }
        assert!(json(|| "x".into(), None).is_ok());
        for bad in ["{not json", "text", "1 2", ""] {
            let e = json(|| "the input of \"o\"".into(), Some(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(
                e.message().contains("the input of \"o\""),
                "{}",
                e.message()
            );
        }
    }
}
