//! Running a command: open the target, call the client, print the result.

use crate::args::{Cli, Command, ListArgs, PurgeArgs, ScheduleCommand, WatchArgs};
use crate::exit::{self, CliError};
use crate::format;
use crate::store::{Target, TargetOptions};
use durable_runtime::backend::{BackendError, InstanceMetadata, InstanceQuery, PurgeTarget};
use durable_runtime::client::ScheduleDescription;
use durable_runtime::schedule::{ScheduleOptions, ScheduleUpdate};
use durable_runtime::{Client, Error};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

/// The target the global options of `cli` name.
pub fn target(cli: &Cli) -> Result<Target, CliError> {
    Target::from_options(TargetOptions {
        store: cli.store.as_deref(),
        endpoint: cli.endpoint.as_deref(),
        task_hub: &cli.taskhub,
        schema: cli.schema.as_deref(),
        headers: &cli.header,
        bearer_token: cli.bearer_token.as_deref(),
    })
}

/// Runs the command of `cli`, writing what it prints to `out`; returns the
/// exit code (0, or for `watch` the code of the final status).
///
/// Every command here reads or controls instances through a [`Client`] on
/// a target that must exist. A command that does something else (a
/// server, which may create its store with [`Target::open_or_create`])
/// gets an arm in `main` or before the client is made here.
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<u8, CliError> {
    if let Command::Serve(args) = &cli.command {
        return crate::serve::serve(cli, args, out).await;
    }
    let target = target(cli)?;
    // Read and checked before the store is opened: bad input never
    // touches it.
    let event_data = match &cli.command {
        Command::Raise { data: Some(d), .. } if d == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read the event data from standard input: {e}"
                ))
            })?;
            Some(checked_json(&text)?)
        }
        Command::Raise { data: Some(d), .. } => Some(checked_json(d)?),
        _ => None,
    };
    let client = Client::new(target.open().await?);
    let mut p = Printer {
        out,
        json: cli.json,
    };
    match &cli.command {
        Command::List(args) => list(&client, args, &mut p).await,
        Command::Show { id } => show(&client, id, &mut p).await,
        Command::History { id } => history(&client, id, &mut p).await,
        Command::Raise { id, name, .. } => {
            client.backend().raise_event(id, name, event_data).await?;
            p.done(
                &format!("raised event \"{name}\" on {id}"),
                json!({"instance_id": id, "raised": name}),
            )
        }
        Command::Terminate {
            id,
            reason,
            recursive,
        } => {
            let status = client
                .get_status(id)
                .await?
                .ok_or_else(|| CliError::not_found(id))?
                .status();
            if status.is_terminal() {
                return p.done(
                    &format!("{id} has already finished ({status}); nothing to terminate"),
                    json!({"instance_id": id, "terminate": "finished", "status": status.to_string()}),
                );
            }
            match reason {
                Some(r) if *recursive => client.terminate_recursive(id, r).await?,
                Some(r) => client.terminate(id, r).await?,
                None => client.backend().terminate(id, None, *recursive).await?,
            }
            p.done(
                &format!("terminating {id} (a worker applies it on its next step)"),
                json!({"instance_id": id, "terminate": "requested", "recursive": recursive}),
            )
        }
        Command::Suspend { id, reason } => {
            client.suspend(id, reason.as_deref()).await?;
            p.done(
                &format!("suspended {id}"),
                json!({"instance_id": id, "suspended": true}),
            )
        }
        Command::Resume { id, reason } => {
            client.resume(id, reason.as_deref()).await?;
            p.done(
                &format!("resumed {id}"),
                json!({"instance_id": id, "resumed": true}),
            )
        }
        Command::Purge(args) => purge(&client, args, &mut p).await,
        Command::Restart { id, new_id } => {
            let started = if *new_id {
                client.restart_as_new(id).await?
            } else {
                client.restart(id).await?
            };
            p.done(
                &format!("restarted {id} as {started}"),
                json!({"instance_id": started, "restarted_from": id}),
            )
        }
        Command::Rewind { id, reason } => {
            client.rewind(id, reason.as_deref()).await?;
            p.done(
                &format!("rewound {id}: it runs again from where it failed"),
                json!({"instance_id": id, "rewound": true}),
            )
        }
        Command::Watch(args) => watch(&client, args, &mut p).await,
        Command::Schedule(command) => schedule(&client, command, &mut p).await,
        // Served above, before a client is made.
        Command::Serve(args) => crate::serve::serve(cli, args, p.out).await,
    }
}

/// A schedule's description: text for people, the entity state as JSON.
fn describe_schedule(d: &ScheduleDescription) -> (String, Value) {
    let s = &d.schedule;
    let mut text = format!("schedule {}: {}\n", d.schedule_id, s.status);
    if let Some(o) = &s.options {
        text += &format!(
            "  runs {} every {:?}{}\n",
            o.orchestration_name,
            o.interval,
            o.orchestration_input
                .as_deref()
                .map(|i| format!(" with input {i}"))
                .unwrap_or_default()
        );
        if let Some(t) = o.start_at {
            text += &format!("  start at   {t}\n");
        }
        if let Some(t) = o.end_at {
            text += &format!("  end at     {t}\n");
        }
    }
    text += &format!("  runs so far {}\n", s.runs);
    if let Some(t) = s.last_run_at {
        text += &format!("  last run   {t}\n");
    }
    if let Some(t) = s.next_run_at {
        text += &format!("  next run   {t}\n");
    }
    let mut value = serde_json::to_value(s).expect("a schedule is plain data");
    value["schedule_id"] = json!(d.schedule_id);
    (text, value)
}

/// `durable schedule ...`: what the client's schedule calls do, printed.
async fn schedule(
    client: &Client,
    command: &ScheduleCommand,
    p: &mut Printer<'_>,
) -> Result<u8, CliError> {
    let applied = "(a worker with the schedule entity registered applies it)";
    match command {
        ScheduleCommand::Create {
            id,
            orchestration,
            every,
            input,
            instance_id,
            start_at,
            end_at,
            start_now_if_late,
        } => {
            let mut options = ScheduleOptions::new(id, orchestration, *every);
            options.orchestration_input = input.as_deref().map(checked_json).transpose()?;
            options.orchestration_instance_id = instance_id.clone();
            options.start_at = *start_at;
            options.end_at = *end_at;
            options.start_immediately_if_late = *start_now_if_late;
            options.validate().map_err(CliError::Usage)?;
            client.create_schedule(options).await?;
            p.done(
                &format!("created schedule {id} {applied}"),
                json!({"schedule_id": id, "created": true}),
            )
        }
        ScheduleCommand::List => {
            let all = client.list_schedules().await?;
            if p.json {
                let values: Vec<Value> = all.iter().map(|d| describe_schedule(d).1).collect();
                p.json(&Value::Array(values))?;
            } else if all.is_empty() {
                p.write("no schedules\n")?;
            } else {
                for d in &all {
                    p.write(&describe_schedule(d).0)?;
                }
            }
            Ok(exit::OK)
        }
        ScheduleCommand::Describe { id } => {
            let d = client
                .describe_schedule(id)
                .await?
                .ok_or_else(|| CliError::NotFound(format!("there is no schedule \"{id}\"")))?;
            let (text, value) = describe_schedule(&d);
            if p.json {
                p.json(&value)?;
            } else {
                p.write(&text)?;
            }
            Ok(exit::OK)
        }
        ScheduleCommand::Pause { id } => {
            client.pause_schedule(id).await.map_err(schedule_error)?;
            p.done(
                &format!("pausing schedule {id} {applied}"),
                json!({"schedule_id": id, "paused": true}),
            )
        }
        ScheduleCommand::Resume { id } => {
            client.resume_schedule(id).await.map_err(schedule_error)?;
            p.done(
                &format!("resuming schedule {id} {applied}"),
                json!({"schedule_id": id, "resumed": true}),
            )
        }
        ScheduleCommand::Update {
            id,
            orchestration,
            every,
            input,
            start_at,
            end_at,
        } => {
            let update = ScheduleUpdate {
                orchestration_name: orchestration.clone(),
                orchestration_input: input.as_deref().map(checked_json).transpose()?,
                interval: *every,
                start_at: *start_at,
                end_at: *end_at,
                start_immediately_if_late: None,
            };
            client
                .update_schedule(id, update)
                .await
                .map_err(schedule_error)?;
            p.done(
                &format!("updating schedule {id} {applied}"),
                json!({"schedule_id": id, "updated": true}),
            )
        }
        ScheduleCommand::Delete { id } => {
            client.delete_schedule(id).await.map_err(schedule_error)?;
            p.done(
                &format!("deleting schedule {id} {applied}"),
                json!({"schedule_id": id, "deleted": true}),
            )
        }
    }
}

/// A schedule call refused for the schedule's state (missing, or in the
/// wrong status) is a usage error.
fn schedule_error(e: Error) -> CliError {
    match e {
        Error::NotAvailable(text) if text.contains("no schedule") => CliError::NotFound(text),
        Error::NotAvailable(text) => CliError::Usage(text),
        other => other.into(),
    }
}

/// Checks that event data is JSON, naming where it is not.
///
/// ```
/// assert!(durable_cli::run::check_json("{\"ok\": true}").is_ok());
/// let e = durable_cli::run::check_json("{ok: true}").unwrap_err();
/// assert!(e.to_string().contains("not valid JSON"));
/// ```
pub fn check_json(data: &str) -> Result<(), CliError> {
    checked_json(data).map(drop)
}

/// The event data, trimmed, if it is JSON.
fn checked_json(data: &str) -> Result<String, CliError> {
    let data = data.trim();
    serde_json::from_str::<Value>(data)
        .map(|_| data.to_string())
        .map_err(|e| {
            CliError::Usage(format!(
                "the event data is not valid JSON ({e}): {}; quote text as JSON strings, \
             e.g. '\"approved\"', or pass an object such as '{{\"ok\":true}}'",
                format::truncate(data, 80)
            ))
        })
}

struct Printer<'a> {
    out: &'a mut dyn Write,
    json: bool,
}

impl Printer<'_> {
    /// Writes text; a closed pipe (`| head`) is not an error.
    fn write(&mut self, text: &str) -> Result<(), CliError> {
        let r = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(CliError::Other(format!("cannot write the output: {e}")))
            }
            _ => Ok(()),
        }
    }

    fn json(&mut self, value: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
        self.write(&format!("{text}\n"))
    }

    /// Prints the outcome of an action: `text` for people, `value` with `--json`.
    fn done(&mut self, text: &str, value: Value) -> Result<u8, CliError> {
        if self.json {
            self.json(&value)?;
        } else {
            self.write(&format!("{text}\n"))?;
        }
        Ok(exit::OK)
    }
}

type Timestamp = durable_runtime::chrono::DateTime<durable_runtime::chrono::Utc>;

/// `--created-after` must come before `--created-before`, or nothing could match.
fn check_range(after: Option<Timestamp>, before: Option<Timestamp>) -> Result<(), CliError> {
    match (after, before) {
        (Some(a), Some(b)) if a >= b => Err(CliError::Usage(format!(
            "--created-after ({}) must be earlier than --created-before ({}), or nothing matches",
            format::timestamp(a),
            format::timestamp(b)
        ))),
        _ => Ok(()),
    }
}

async fn list(client: &Client, args: &ListArgs, p: &mut Printer<'_>) -> Result<u8, CliError> {
    check_range(args.created_after, args.created_before)?;
    let mut query = InstanceQuery {
        statuses: args.status.clone(),
        created_from: args.created_after,
        created_to: args.created_before,
        instance_id_prefix: args.prefix.clone(),
        page_size: args.page_size as usize,
        continuation_token: args.continue_token.clone(),
        fetch_payloads: false,
    };
    let mut found: Vec<InstanceMetadata> = Vec::new();
    let token = loop {
        let (page, token) = client.query(query.clone()).await?;
        found.extend(
            page.into_iter()
                .map(|s| s.metadata().clone())
                .filter(|m| args.name.as_deref().is_none_or(|n| m.name == n)),
        );
        match token {
            Some(t) if args.all => query.continuation_token = Some(t),
            other => break other,
        }
    };
    if p.json {
        let instances: Vec<Value> = found.iter().map(format::instance_json).collect();
        p.json(&json!({"instances": instances, "continuation_token": token}))?;
    } else {
        if found.is_empty() {
            p.write("no instances match\n")?;
        } else {
            p.write(&format::instance_table(&found))?;
        }
        if let Some(t) = token {
            p.write(&format!("more: add --continue {t} for the next page\n"))?;
        }
    }
    Ok(exit::OK)
}

async fn show(client: &Client, id: &str, p: &mut Printer<'_>) -> Result<u8, CliError> {
    let state = client
        .get_state(id)
        .await?
        .ok_or_else(|| CliError::not_found(id))?;
    if p.json {
        p.json(&format::instance_json(state.metadata()))?;
    } else {
        p.write(&format::instance_details(state.metadata()))?;
    }
    Ok(exit::OK)
}

async fn history(client: &Client, id: &str, p: &mut Printer<'_>) -> Result<u8, CliError> {
    if client.get_status(id).await?.is_none() {
        return Err(CliError::not_found(id));
    }
    let events = client.history(id).await?;
    if p.json {
        // The export format of docs/history-format.md, as `replay` reads it.
        let text = serde_json::to_string_pretty(&events)
            .map_err(|e| CliError::Other(format!("cannot serialise the history: {e}")))?;
        p.write(&format!("{text}\n"))?;
    } else {
        p.write(&format::history_timeline(id, &events))?;
    }
    Ok(exit::OK)
}

async fn purge(client: &Client, args: &PurgeArgs, p: &mut Printer<'_>) -> Result<u8, CliError> {
    let purged = match &args.id {
        Some(id) => client.purge(id, args.recursive).await?,
        None => {
            if args.status.is_empty()
                && args.created_after.is_none()
                && args.created_before.is_none()
            {
                return Err(CliError::Usage(
                    "purge needs an instance id or a filter (--status, --created-before, \
                     --created-after); to delete every finished instance, pass \
                     --status completed,failed,terminated"
                        .into(),
                ));
            }
            check_range(args.created_after, args.created_before)?;
            if let Some(s) = args.status.iter().find(|s| !s.is_terminal()) {
                return Err(CliError::Usage(format!(
                    "only finished instances can be purged, not {s} ones; use \
                     completed, failed or terminated (terminate live instances first)"
                )));
            }
            client
                .purge_where(
                    PurgeTarget::Filter {
                        created_from: args.created_after,
                        created_to: args.created_before,
                        statuses: args.status.clone(),
                    },
                    args.recursive,
                )
                .await?
        }
    };
    p.done(
        &format!(
            "purged {purged} instance{}",
            if purged == 1 { "" } else { "s" }
        ),
        json!({"purged": purged}),
    )
}

/// One line of `watch`.
fn watch_line(state: &InstanceMetadata, json: bool) -> String {
    if json {
        let line = json!({
            "time": format::timestamp(state.last_updated_at),
            "instance_id": state.instance_id,
            "status": state.status.to_string(),
            "custom_status": format::payload_value(state.custom_status.as_deref()),
            "failure": state.failure,
        });
        return format!("{line}\n");
    }
    let mut line = format!(
        "{}  {}",
        format::timestamp(state.last_updated_at),
        state.status
    );
    if state.custom_status.is_some() {
        line.push_str(&format!(
            "  custom status {}",
            format::payload(state.custom_status.as_deref())
        ));
    }
    if let Some(f) = &state.failure {
        line.push_str(&format!("  {}", format::failure_lines(f).join("; ")));
    }
    line.push('\n');
    line
}

async fn watch(client: &Client, args: &WatchArgs, p: &mut Printer<'_>) -> Result<u8, CliError> {
    let id = args.id.as_str();
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut last = client
        .get_state(id)
        .await?
        .ok_or_else(|| CliError::not_found(id))?
        .metadata()
        .clone();
    p.write(&watch_line(&last, p.json))?;
    let seen = |m: &InstanceMetadata| (m.status, m.custom_status.clone());
    while !last.status.is_terminal() {
        let mut wait = args.interval.max(Duration::from_millis(10));
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                let secs = args.timeout.unwrap_or_default().as_secs_f64();
                eprintln!(
                    "watch: {id} is still {} after the {secs}s of --timeout",
                    last.status
                );
                return Ok(exit::TIMED_OUT);
            }
            wait = wait.min(left);
        }
        let now = match client.wait_for_completion(id, wait).await {
            Ok(state) => state.metadata().clone(),
            Err(Error::Backend(BackendError::Timeout(..))) => client
                .get_state(id)
                .await?
                .ok_or_else(|| {
                    CliError::NotFound(format!("instance \"{id}\" was purged while watched"))
                })?
                .metadata()
                .clone(),
            Err(e) => return Err(e.into()),
        };
        if seen(&now) != seen(&last) {
            p.write(&watch_line(&now, p.json))?;
        }
        last = now;
    }
    Ok(exit::for_final_status(last.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::history::OrchestrationStatus;

    #[test]
    fn malformed_event_data_is_a_usage_error() {
        let e = check_json("{\"ok\": tru").unwrap_err();
        assert_eq!(e.exit_code(), exit::ERROR);
        assert!(e.to_string().contains("line 1 column"), "{e}");
        for ok in ["1", "\"text\"", "null", " {\"a\": [1, 2]} "] {
            assert!(check_json(ok).is_ok(), "{ok}");
        }
        assert!(check_json("approved").is_err(), "bare text is not JSON");
    }

    #[test]
    fn a_time_range_must_not_be_empty() {
        let t = |s: &str| Some(crate::args::parse_time(s).unwrap());
        assert!(check_range(t("2030-01-01T00:00:00Z"), t("2030-01-02T00:00:00Z")).is_ok());
        assert!(check_range(None, t("2030-01-02T00:00:00Z")).is_ok());
        let e = check_range(t("2030-01-02T00:00:00Z"), t("2030-01-01T00:00:00Z")).unwrap_err();
        assert_eq!(e.exit_code(), exit::ERROR);
        assert!(e.to_string().contains("must be earlier"), "{e}");
    }

    #[test]
    fn watch_lines() {
        let t = durable_runtime::chrono::DateTime::UNIX_EPOCH;
        let m = InstanceMetadata {
            instance_id: "w-1".into(),
            execution_id: "e".into(),
            name: "n".into(),
            version: None,
            status: OrchestrationStatus::Running,
            input: None,
            output: None,
            custom_status: Some("\"step 2\"".into()),
            failure: None,
            created_at: t,
            last_updated_at: t,
            completed_at: None,
            scheduled_start: None,
            parent_instance_id: None,
            tags: Default::default(),
        };
        assert_eq!(
            watch_line(&m, false),
            "1970-01-01T00:00:00.000Z  Running  custom status \"step 2\"\n"
        );
        let v: Value = serde_json::from_str(&watch_line(&m, true)).unwrap();
        assert_eq!(v["status"], "Running");
        assert_eq!(v["custom_status"], "step 2");
    }
}
