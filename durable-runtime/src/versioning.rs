//! Worker versioning, as the Durable Task SDKs define it: a worker runs
//! only the orchestration instances whose version its match strategy
//! accepts, and its failure strategy says what happens to the others.

use std::cmp::Ordering;
use std::time::Duration;

/// Which instances a worker runs, by the version they started with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatchStrategy {
    /// Every instance, whatever its version (the default).
    #[default]
    None,
    /// Only instances of exactly the worker's version.
    Strict,
    /// Instances of the worker's version or an older one (see
    /// [`compare_versions`]); newer ones are left to newer workers.
    CurrentOrOlder,
}

/// What a worker does with an instance its match strategy does not accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureStrategy {
    /// Give the work back for another worker (after
    /// [`VersioningOptions::reject_pause`]); the instance waits (the
    /// default).
    #[default]
    Reject,
    /// Fail the instance with error type `VersionMismatch`.
    Fail,
}

/// A worker's versioning ([`WorkerOptions::versioning`](crate::WorkerOptions::versioning)).
///
/// ```
/// use durable_runtime::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
///
/// let v2_only = VersioningOptions {
///     version: "2".into(),
///     match_strategy: MatchStrategy::Strict,
///     failure_strategy: FailureStrategy::Reject,
///     ..Default::default()
/// };
/// assert!(v2_only.accepts(Some("2")));
/// assert!(!v2_only.accepts(Some("1")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersioningOptions {
    /// The worker's version.
    pub version: String,
    /// The version sub-orchestrations start on when the code names none
    /// (a typed call of a versioned orchestrator names its own), as the
    /// SDKs' `default_version` does; `None` (the default) starts them
    /// without a version. Clients have their own
    /// ([`Client::with_default_version`](crate::Client::with_default_version)).
    pub default_version: Option<String>,
    /// Which instances it runs.
    pub match_strategy: MatchStrategy,
    /// What it does with the others.
    pub failure_strategy: FailureStrategy,
    /// With [`FailureStrategy::Reject`], how long a worker holds work it
    /// rejects before giving it back, so one that sees only such work does
    /// not spin on it (default 1 s).
    pub reject_pause: Duration,
}

impl Default for VersioningOptions {
    fn default() -> Self {
        VersioningOptions {
            version: String::new(),
            default_version: None,
            match_strategy: MatchStrategy::None,
            failure_strategy: FailureStrategy::Reject,
            reject_pause: Duration::from_secs(1),
        }
    }
}

impl VersioningOptions {
    /// Whether the match strategy accepts an instance of `version`.
    pub fn accepts(&self, version: Option<&str>) -> bool {
        let ord = compare_versions(version.unwrap_or(""), &self.version);
        match self.match_strategy {
            MatchStrategy::None => true,
            MatchStrategy::Strict => ord == Ordering::Equal,
            MatchStrategy::CurrentOrOlder => ord != Ordering::Greater,
        }
    }
}

/// Orders two versions by the Durable Task SDKs' rule: an empty (or blank)
/// version is the lowest; two versions made of dot-separated numbers
/// compare number by number (`"1.10" > "1.9"`, `"1.0" == "1"`); anything
/// else compares as text, ignoring ASCII case (`"V2" == "v2"`).
///
/// ```
/// use durable_runtime::versioning::compare_versions;
/// use std::cmp::Ordering;
///
/// assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
/// assert_eq!(compare_versions("", "0"), Ordering::Less);
/// assert_eq!(compare_versions("beta", "alpha"), Ordering::Greater);
/// ```
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    let numbers = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|p| p.parse().ok()).collect() };
    match (numbers(a), numbers(b)) {
        (Some(x), Some(y)) => {
            let n = x.len().max(y.len());
            let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
            (0..n)
                .map(|i| at(&x, i).cmp(&at(&y, i)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        }
        _ => a
            .bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_the_sdks_do() {
        use Ordering::*;
        for (a, b, want) in [
            ("", "", Equal),
            ("", "1", Less),
            ("1", "", Greater),
            ("1", "2", Less),
            ("1.10", "1.9", Greater),
            ("1.0", "1", Equal),
            ("2.0.1", "2.0", Greater),
            ("10", "9", Greater),
            ("v2", "v10", Greater),
            ("1.a", "1.b", Less),
            ("V2", "v2", Equal),
            (" ", "", Equal),
            (" 2 ", "2", Equal),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn strategies_accept_what_they_say() {
        let with = |m| VersioningOptions {
            version: "2.0".into(),
            match_strategy: m,
            ..Default::default()
        };
        let none = with(MatchStrategy::None);
        let strict = with(MatchStrategy::Strict);
        let older = with(MatchStrategy::CurrentOrOlder);
        for v in [None, Some("1"), Some("2"), Some("3")] {
            assert!(none.accepts(v), "{v:?}");
        }
        assert!(strict.accepts(Some("2")));
        assert!(strict.accepts(Some("2.0")));
        assert!(!strict.accepts(Some("1")));
        assert!(!strict.accepts(None));
        assert!(older.accepts(Some("1.9")));
        assert!(older.accepts(None));
        assert!(older.accepts(Some("2")));
        assert!(!older.accepts(Some("2.1")));
    }
}
