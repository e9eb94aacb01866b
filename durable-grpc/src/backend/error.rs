//! How the sidecar's failures read as [`BackendError`]s: gRPC statuses,
//! lost leases and answers durable cannot read, each saying what to do next.

use crate::convert::ConvertError;
use durable_runtime::backend::BackendError;
use tonic::{Code, Status};

/// Maps a gRPC status to a [`BackendError`] that says what to do next.
pub(super) fn map_status(endpoint: &str, status: Status, instance: Option<&str>) -> BackendError {
    let message = status.message().to_string();
    match status.code() {
        Code::NotFound => match instance {
            Some(id) => BackendError::NotFound(id.to_string()),
            None => BackendError::Other(format!("the sidecar reported not found: {message}")),
        },
        // A connection that drops in the middle of a call surfaces from the
        // HTTP/2 layer as `Unknown: transport error`, not `Unavailable`.
        Code::Unknown if status.message().contains("transport error") => {
            BackendError::Unavailable(format!(
                "lost the connection to the sidecar at {endpoint} ({}); check that it is \
                 running and listening there, or point the endpoint option (ENDPOINT) at it",
                describe_transport_error(&status)
            ))
        }
        Code::Unavailable => BackendError::Unavailable(format!(
            "cannot reach the sidecar at {endpoint} ({}); check that it is running and \
             listening there, or point the endpoint option (ENDPOINT) at it",
            describe_transport_error(&status)
        )),
        Code::Unauthenticated | Code::PermissionDenied => BackendError::Unavailable(format!(
            "the sidecar at {endpoint} refused the credentials ({message}); check the bearer \
             token provider and the task hub name"
        )),
        Code::ResourceExhausted => match parse_size_limit(&message) {
            Some((size, limit)) => BackendError::PayloadTooLarge {
                what: "a message to the sidecar".to_string(),
                size,
                limit,
            },
            None => BackendError::Other(format!(
                "the sidecar at {endpoint} refused the call for lack of resources: {message}"
            )),
        },
        Code::OutOfRange if is_incoming_too_large(&status) => match parse_incoming_size(&message) {
            Some((size, limit)) => BackendError::PayloadTooLarge {
                what: "a message from the sidecar (raise the max_incoming_message_size \
                           option)"
                    .to_string(),
                size,
                limit,
            },
            None => BackendError::Other(message),
        },
        Code::InvalidArgument | Code::OutOfRange => BackendError::InvalidRequest(message),
        Code::Unimplemented => BackendError::Other(format!(
            "the sidecar at {endpoint} does not implement this call ({message}); it may speak \
             an older version of the protocol"
        )),
        Code::Cancelled if message.contains("Timeout expired") => {
            BackendError::Other(format!("the call to the sidecar at {endpoint} timed out"))
        }
        // What a call in flight gets when the connection drops under it.
        Code::Cancelled => BackendError::Unavailable(format!(
            "the connection to the sidecar at {endpoint} was lost ({}); it may have \
             restarted, so retry the call",
            describe_transport_error(&status)
        )),
        code => BackendError::Other(format!(
            "the sidecar at {endpoint} answered {code:?}: {message}"
        )),
    }
}

/// Maps the failure of a call made with a work item's completion token: the
/// codes sidecars answer a stale or unknown token with mean the lease was
/// lost; anything else maps as [`map_status`] does.
pub(super) fn lease_error(endpoint: &str, status: Status, instance_id: &str) -> BackendError {
    match status.code() {
        Code::NotFound | Code::FailedPrecondition | Code::Aborted => {
            BackendError::LeaseLost(format!("instance \"{instance_id}\": {}", status.message()))
        }
        _ => map_status(endpoint, status, Some(instance_id)),
    }
}

/// The error for something the sidecar sent about an instance that durable
/// cannot read; `what` names it, e.g. "the history of".
pub(super) fn unreadable(what: &str, instance_id: &str, e: ConvertError) -> BackendError {
    BackendError::Other(format!(
        "the sidecar sent {what} instance \"{instance_id}\" in a form durable cannot read: {e}"
    ))
}

/// The useful part of a transport failure: tonic nests the cause (refused
/// connection, DNS failure, TLS error) in the status's source chain.
fn describe_transport_error(status: &Status) -> String {
    let mut parts = vec![status.message().to_string()];
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

/// Whether a status is tonic refusing a received message over
/// [`GrpcOptions::max_incoming_message_size`](crate::GrpcOptions::max_incoming_message_size).
pub(super) fn is_incoming_too_large(status: &Status) -> bool {
    status.code() == Code::OutOfRange
        && status
            .message()
            .contains("decoded message length too large")
}

/// Reads sizes out of tonic's "found X bytes, the limit is: Y bytes".
fn parse_incoming_size(message: &str) -> Option<(usize, usize)> {
    let number_after = |key: &str| -> Option<usize> {
        let rest = &message[message.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((number_after("found ")?, number_after("the limit is: ")?))
}

/// Reads sizes out of gRPC's "larger than max (X vs. Y)" messages.
fn parse_size_limit(message: &str) -> Option<(usize, usize)> {
    let start = message.find('(')?;
    let end = message[start..].find(')')? + start;
    let mut parts = message[start + 1..end].split(" vs. ");
    let size = parts.next()?.trim().parse().ok()?;
    let limit = parts.next()?.trim().parse().ok()?;
    Some((size, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_size_messages_are_parsed() {
        assert_eq!(
            parse_size_limit("Received message larger than max (5242885 vs. 4194304)"),
            Some((5_242_885, 4_194_304))
        );
        assert_eq!(parse_size_limit("no numbers here"), None);
        assert_eq!(parse_size_limit("weird (a vs. b)"), None);
        let e = map_status(
            "http://h:1",
            Status::out_of_range(
                "Error, decoded message length too large: found 70 bytes, the limit is: 64 bytes",
            ),
            None,
        );
        match e {
            BackendError::PayloadTooLarge { what, size, limit } => {
                assert_eq!((size, limit), (70, 64));
                assert!(what.contains("max_incoming_message_size"), "{what}");
            }
            other => panic!("expected PayloadTooLarge, got {other}"),
        }
    }

    #[test]
    fn a_connection_lost_mid_call_is_unavailable() {
        let e = map_status("http://h:1", Status::unknown("transport error"), None);
        match e {
            BackendError::Unavailable(msg) => assert!(msg.contains("http://h:1"), "{msg}"),
            other => panic!("expected Unavailable, got {other}"),
        }
        let e = map_status("http://h:1", Status::unknown("something else"), None);
        assert!(!matches!(e, BackendError::Unavailable(_)), "{e}");
    }

    #[test]
    fn statuses_map_to_errors_that_say_what_to_do() {
        let e = map_status("http://h:1", Status::not_found("x"), Some("abc"));
        assert!(matches!(e, BackendError::NotFound(id) if id == "abc"));
        let e = map_status(
            "http://h:1",
            Status::unavailable("connection refused"),
            None,
        );
        let text = e.to_string();
        assert!(matches!(e, BackendError::Unavailable(_)));
        assert!(
            text.contains("http://h:1") && text.contains("connection refused"),
            "{text}"
        );
        let e = map_status(
            "http://h:1",
            Status::resource_exhausted("Received message larger than max (10 vs. 5)"),
            None,
        );
        assert!(matches!(
            e,
            BackendError::PayloadTooLarge {
                size: 10,
                limit: 5,
                ..
            }
        ));
        let e = map_status("http://h:1", Status::unauthenticated("no token"), None);
        assert!(e.to_string().contains("bearer token"));
    }
}
