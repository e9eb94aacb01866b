//! The command line: global options, commands and their arguments (clap).
//!
//! A new command is one more variant of [`Command`] and one more arm in
//! [`crate::run`].

use crate::exit;
use clap::{Args, Parser, Subcommand};
use durable_runtime::history::OrchestrationStatus;
use std::time::Duration;

type Timestamp = durable_runtime::chrono::DateTime<durable_runtime::chrono::Utc>;

/// Inspect and control durable orchestration instances.
#[derive(Debug, Parser)]
#[command(name = "durable", version, after_help = exit::HELP)]
pub struct Cli {
    /// The store: sqlite:PATH or postgres://user:password@host:port/database
    /// [default: sqlite:./durable.db]
    #[arg(long, global = true, env = "DURABLE_STORE", value_name = "STORE")]
    pub store: Option<String>,

    /// A running Durable Task sidecar to talk to over gRPC, instead of a store
    #[arg(long, global = true, env = "DURABLE_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// The task hub on the sidecar (with --endpoint)
    #[arg(
        long,
        global = true,
        env = "DURABLE_TASKHUB",
        value_name = "NAME",
        default_value = "default"
    )]
    pub taskhub: String,

    /// A metadata header sent to the sidecar with every call, NAME=VALUE (repeatable; e.g. dapr-api-token=TOKEN)
    #[arg(long, global = true, value_name = "NAME=VALUE")]
    pub header: Vec<String>,

    /// A bearer token sent to the sidecar (authorization: Bearer); better given
    /// through the environment than on the command line
    #[arg(
        long,
        global = true,
        env = "DURABLE_BEARER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub bearer_token: Option<String>,

    /// The PostgreSQL schema holding durable's tables (with a postgres:// store)
    /// [default: durable]
    #[arg(long, global = true, env = "DURABLE_SCHEMA", value_name = "NAME")]
    pub schema: Option<String>,

    /// Print JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List instances (a page at a time, ordered by id)
    List(ListArgs),
    /// Show one instance: status, input, output, failure, custom status, times
    Show {
        /// Instance id
        id: String,
    },
    /// Show an instance's history as a timeline (--json: the export format)
    History {
        /// Instance id
        id: String,
    },
    /// Raise an external event on an instance
    Raise {
        /// Instance id
        id: String,
        /// Event name
        name: String,
        /// Event data as JSON (e.g. '"text"', '{"ok":true}'), or - to read it from
        /// standard input; none if left out
        data: Option<String>,
    },
    /// Terminate an instance
    Terminate {
        /// Instance id
        id: String,
        /// Recorded as the instance's output (a JSON string)
        #[arg(long)]
        reason: Option<String>,
        /// Also terminate its running sub-orchestrations
        #[arg(long)]
        recursive: bool,
    },
    /// Suspend an instance: events are held until it is resumed
    Suspend {
        /// Instance id
        id: String,
        /// Why (recorded in the history)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended instance
    Resume {
        /// Instance id
        id: String,
        /// Why (recorded in the history)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete finished instances and their histories: one by id, or all matching a filter
    Purge(PurgeArgs),
    /// Run a finished instance again with its input (same id, or --new-id)
    Restart {
        /// Instance id
        id: String,
        /// Start it under a new, random id and keep the finished instance
        #[arg(long)]
        new_id: bool,
    },
    /// Continue a failed instance from where it failed: what failed runs again, what succeeded is
    /// not redone (failed sub-orchestrations are rewound with it)
    Rewind {
        /// Instance id
        id: String,
        /// Why (recorded in the history's ExecutionRewound event)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Serve the store over the Durable Task gRPC protocol, for workers and clients of any SDK
    /// (--store memory serves an in-memory store)
    Serve(ServeArgs),
    /// Print an instance's status changes until it finishes; the exit code says how it ended
    #[command(after_help = exit::WATCH_HELP)]
    Watch(WatchArgs),
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (the SDKs' default sidecar address)
    #[arg(long, default_value = crate::serve::DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,
    /// Require this bearer token on every call (needed to listen beyond loopback)
    #[arg(
        long,
        env = "DURABLE_SERVE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Listen beyond loopback without a token (on a network you trust)
    #[arg(long)]
    pub insecure: bool,
    /// How many task hubs besides `default` may be open at once (each holds its store's threads or connections)
    #[arg(long, default_value_t = durable_grpc::server::DEFAULT_MAX_HUBS, value_name = "N")]
    pub max_hubs: usize,
    /// Serve TLS with this certificate (PEM, with any intermediates); needs --tls-key
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Filters and paging of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses (comma-separated: running,completed,failed,terminated,pending,suspended)
    #[arg(long, value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<OrchestrationStatus>,
    /// Only instances of this orchestrator
    #[arg(long)]
    pub name: Option<String>,
    /// Only instances created at or after this time (RFC 3339, e.g. 2030-01-31T12:00:00Z)
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub created_after: Option<Timestamp>,
    /// Only instances created before this time (RFC 3339)
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub created_before: Option<Timestamp>,
    /// Only instance ids starting with this
    #[arg(long)]
    pub prefix: Option<String>,
    /// Instances per page
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
    /// Continue after the previous page (the token it printed)
    #[arg(long = "continue", value_name = "TOKEN")]
    pub continue_token: Option<String>,
    /// Every page, not just one
    #[arg(long, conflicts_with = "continue_token")]
    pub all: bool,
}

/// What `purge` deletes.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The instance to delete (it must have finished)
    #[arg(conflicts_with_all = ["status", "created_after", "created_before"])]
    pub id: Option<String>,
    /// With a filter: only these finished statuses (completed,failed,terminated; default: all of them)
    #[arg(long, value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<OrchestrationStatus>,
    /// With a filter: only instances created at or after this time (RFC 3339)
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub created_after: Option<Timestamp>,
    /// With a filter: only instances created before this time (RFC 3339)
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub created_before: Option<Timestamp>,
    /// Also delete their sub-orchestrations
    #[arg(long)]
    pub recursive: bool,
}

/// How `watch` watches.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Instance id
    pub id: String,
    /// How often to look for status changes that are not the end (e.g. 500ms, 2s)
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Give up after this long (exit code 6), e.g. 30s, 5m; default: wait until it finishes
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// A status by name, ignoring case, `-` and `_` (`running`,
/// `continued-as-new`, `Failed`).
///
/// ```
/// use durable_cli::args::parse_status;
/// use durable_runtime::OrchestrationStatus;
/// assert_eq!(parse_status("continued-as-new"), Ok(OrchestrationStatus::ContinuedAsNew));
/// assert!(parse_status("done").is_err());
/// ```
pub fn parse_status(text: &str) -> Result<OrchestrationStatus, String> {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != '-' && *c != '_' && !c.is_whitespace())
            .collect::<String>()
            .to_lowercase()
    };
    let wanted = norm(text);
    OrchestrationStatus::ALL
        .into_iter()
        .find(|s| norm(&s.to_string()) == wanted)
        .ok_or_else(|| {
            let names: Vec<String> = OrchestrationStatus::ALL
                .iter()
                .map(|s| s.to_string().to_lowercase())
                .collect();
            format!("unknown status \"{text}\"; use one of {}", names.join(", "))
        })
}

/// A time in RFC 3339 (`2030-01-31T12:00:00Z`, `2030-01-31T13:00:00+01:00`).
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    durable_runtime::chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.to_utc())
        .map_err(|e| {
            format!("\"{text}\" is not an RFC 3339 time ({e}); write it like 2030-01-31T12:00:00Z")
        })
}

/// A duration: a number with a unit `ms`, `s`, `m` or `h` (`500ms`, `2s`,
/// `1.5m`); a bare number is seconds.
///
/// ```
/// use durable_cli::args::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("\"{text}\" is not a duration; write it like 500ms, 2s, 5m or 1h");
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn statuses_times_and_durations() {
        assert_eq!(parse_status("Running"), Ok(OrchestrationStatus::Running));
        assert_eq!(
            parse_status(" suspended"),
            Ok(OrchestrationStatus::Suspended)
        );
        let e = parse_status("finished").unwrap_err();
        assert!(e.contains("running, completed"), "{e}");
        let t = parse_time("2030-01-31T13:00:00+01:00").unwrap();
        assert_eq!(crate::format::timestamp(t), "2030-01-31T12:00:00.000Z");
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from(["durable", "show", "x", "--json", "--store", "sqlite:a.db"])
            .unwrap();
        assert!(cli.json);
        assert_eq!(cli.store.as_deref(), Some("sqlite:a.db"));
        let cli = Cli::try_parse_from(["durable", "list", "--status", "running,failed"]).unwrap();
        match cli.command {
            Command::List(l) => assert_eq!(
                l.status,
                [OrchestrationStatus::Running, OrchestrationStatus::Failed]
            ),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["durable", "purge", "x", "--status", "failed"]).is_err());
    }
}
