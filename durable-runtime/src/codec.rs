//! The codec: how typed values become payloads and payloads become values.
//!
//! A payload is the JSON text a history, a backend and the wire carry for an
//! input, an output, an event's data or a custom status; "no payload" is
//! `None` and reads as JSON `null`. Every typed value durable turns into a
//! payload or back goes through [`encode`] and [`decode`], and every problem
//! is one [`CodecError`], which the caller turns once into what its layer
//! reports: [`FailureDetails`] recorded in a history
//! ([`CodecError::into_failure`]) or a [`crate::Error`] for a client call.
//! Backends and the gRPC mapping only move payload text, so this module is
//! the one place a different data format (or compression, or encryption)
//! would plug in.
//!
//! ```
//! use durable_runtime::codec;
//! let payload = codec::encode(&vec![1, 2, 3]).unwrap();
//! assert_eq!(payload.as_deref(), Some("[1,2,3]"));
//! let back: Vec<i32> = codec::decode(payload.as_deref()).unwrap();
//! assert_eq!(back, [1, 2, 3]);
//!
//! let e = codec::decode::<u32>(Some("\"ten\"")).unwrap_err().about("the input of activity \"count\"");
//! assert!(e.to_string().starts_with("the input of activity \"count\" does not deserialise into `u32`"));
//! ```

use crate::history::FailureDetails;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// Which way a conversion went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A value was being turned into a payload.
    Encode,
    /// A payload was being turned into a value.
    Decode,
}

/// A value that could not be encoded, or a payload that could not be
/// decoded. Its message names what was converted (see
/// [`about`](Self::about)), the Rust type and the cause.
#[derive(Debug)]
pub struct CodecError {
    direction: Direction,
    type_name: &'static str,
    subject: Option<String>,
    source: serde_json::Error,
}

impl CodecError {
    /// Names what was being converted, e.g. `the input of activity "ship"`.
    pub fn about(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Which way the conversion went.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The Rust type being converted.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The failure recorded for it, with this error type (e.g.
    /// `InputDeserializationError`) and the error's message.
    pub fn into_failure(self, error_type: &str) -> FailureDetails {
        FailureDetails::new(error_type, self.to_string())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = self.subject.as_deref().unwrap_or("a value");
        match self.direction {
            Direction::Encode => write!(
                f,
                "{subject} (`{}`) could not be serialised: {}",
                self.type_name, self.source
            ),
            Direction::Decode => write!(
                f,
                "{subject} does not deserialise into `{}`: {}",
                self.type_name, self.source
            ),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A value as a payload.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Option<String>, CodecError> {
    serde_json::to_string(value)
        .map(Some)
        .map_err(|source| CodecError {
            direction: Direction::Encode,
            type_name: std::any::type_name::<T>(),
            subject: None,
            source,
        })
}

/// A payload as a value; no payload reads as JSON `null` (so `()` and
/// `Option<T>` accept it).
pub fn decode<T: DeserializeOwned>(payload: Option<&str>) -> Result<T, CodecError> {
    serde_json::from_str(payload.unwrap_or("null")).map_err(|source| CodecError {
        direction: Direction::Decode,
        type_name: std::any::type_name::<T>(),
        subject: None,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Unserialisable;
    impl Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }

    #[test]
    fn round_trips_and_null_for_no_payload() {
        assert_eq!(encode(&"hi").unwrap().as_deref(), Some("\"hi\""));
        let unit: () = decode(None).unwrap();
        assert_eq!(unit, ());
        let none: Option<u8> = decode(None).unwrap();
        assert_eq!(none, None);
        assert!(decode::<u8>(None).is_err(), "null is not a number");
    }

    #[test]
    fn errors_name_subject_type_and_cause() {
        let e = encode(&Unserialisable).unwrap_err();
        assert_eq!(e.direction(), Direction::Encode);
        let d = e
            .about("the output of activity \"a\"")
            .into_failure("OutputSerializationError");
        assert_eq!(d.error_type, "OutputSerializationError");
        assert!(
            d.message.starts_with("the output of activity \"a\" (`"),
            "{}",
            d.message
        );
        assert!(d
            .message
            .contains("Unserialisable`) could not be serialised: refused"));

        let e = decode::<Vec<u8>>(Some("{")).unwrap_err();
        assert_eq!(e.direction(), Direction::Decode);
        assert!(e
            .to_string()
            .starts_with("a value does not deserialise into `alloc::vec::Vec<u8>`: "));
        assert!(std::error::Error::source(&e).is_some());
    }
}
