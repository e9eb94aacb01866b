//! The `durable` command line: list, inspect and control orchestration
//! instances in a store (SQLite, PostgreSQL) or on a Durable Task sidecar
//! (gRPC). See docs/cli.md for every command.
//!
//! The binary is thin: [`args`] parses, [`run::run`] does the work against
//! a [`durable_runtime::Client`], and [`mod@format`] and [`timeline`] turn what
//! it reads into text and JSON without I/O, so they are tested on their own.
//! [`exit`] holds the exit codes scripts can rely on.
//!
//! ```
//! use clap::Parser;
//! let cli = durable_cli::args::Cli::parse_from(["durable", "--store", "sqlite:app.db", "list"]);
//! assert_eq!(cli.store.as_deref(), Some("sqlite:app.db"));
//! ```

pub mod args;
pub mod dashboard;
pub mod exit;
pub mod format;
pub mod run;
pub mod serve;
pub mod store;
pub mod timeline;
