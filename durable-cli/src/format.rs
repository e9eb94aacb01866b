//! Pure formatting: tables, instance details, timelines and the JSON the
//! `--json` flag prints. Nothing here does I/O.

use crate::timeline::{self, Entry, EntryKind, Outcome};
use durable_runtime::backend::InstanceMetadata;
use durable_runtime::chrono::{SecondsFormat, TimeDelta};
use durable_runtime::history::{FailureDetails, HistoryEvent};
use serde_json::{json, Value};

type Timestamp = durable_runtime::chrono::DateTime<durable_runtime::chrono::Utc>;

/// The widest a payload is shown in a table cell, in characters.
pub const CELL_WIDTH: usize = 60;

/// A time as RFC 3339 in UTC with milliseconds, e.g. `2030-01-01T00:00:00.000Z`.
pub fn timestamp(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A duration for people: `0ms`, `850ms`, `1.52s`, `3m 20s`, `2h 05m`, `3d 04h`.
///
/// ```
/// use durable_cli::format::duration;
/// use durable_runtime::chrono::TimeDelta;
/// assert_eq!(duration(TimeDelta::milliseconds(1520)), "1.52s");
/// assert_eq!(duration(TimeDelta::seconds(200)), "3m 20s");
/// ```
pub fn duration(d: TimeDelta) -> String {
    if d < TimeDelta::zero() {
        return format!("-{}", duration(-d));
    }
    let ms = d.num_milliseconds();
    let s = d.num_seconds();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{}.{:02}s", s, (ms % 1000) / 10)
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// A payload (JSON text) on one line: compact JSON when it parses, the
/// text as it is otherwise, `-` when there is none.
pub fn payload(text: Option<&str>) -> String {
    match text {
        None => "-".into(),
        Some(t) => match serde_json::from_str::<Value>(t) {
            Ok(v) => v.to_string(),
            Err(_) => t.to_string(),
        },
    }
}

/// Cuts `text` to `max` characters, ending with `...` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{kept}...")
}

/// A payload as a JSON value for `--json` output: the parsed JSON, or the
/// text as a string if it is not JSON, or `null`.
pub fn payload_value(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
    }
}

/// Columns aligned with two spaces between them; the last is not padded.
///
/// ```
/// use durable_cli::format::table;
/// let t = table(&["ID", "STATUS"], &[vec!["a-1".into(), "Running".into()]]);
/// assert_eq!(t, "ID   STATUS\na-1  Running\n");
/// ```
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The table `durable list` prints.
pub fn instance_table(instances: &[InstanceMetadata]) -> String {
    let day = |t: Timestamp| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|m| {
            vec![
                m.instance_id.clone(),
                m.name.clone(),
                m.version.clone().unwrap_or_else(|| "-".into()),
                m.status.to_string(),
                day(m.created_at),
                day(m.last_updated_at),
            ]
        })
        .collect();
    table(
        &[
            "INSTANCE",
            "NAME",
            "VERSION",
            "STATUS",
            "CREATED (UTC)",
            "UPDATED (UTC)",
        ],
        &rows,
    )
}

/// An instance as the JSON object of `list --json` and `show --json`;
/// payloads (input, output, custom status) are included when present, as
/// JSON values.
pub fn instance_json(m: &InstanceMetadata) -> Value {
    let time = |t: Option<Timestamp>| t.map(timestamp);
    json!({
        "instance_id": m.instance_id,
        "name": m.name,
        "version": m.version,
        "status": m.status.to_string(),
        "execution_id": m.execution_id,
        "created_at": timestamp(m.created_at),
        "last_updated_at": timestamp(m.last_updated_at),
        "completed_at": time(m.completed_at),
        "scheduled_start": time(m.scheduled_start),
        "parent_instance_id": m.parent_instance_id,
        "tags": m.tags,
        "input": payload_value(m.input.as_deref()),
        "output": payload_value(m.output.as_deref()),
        "custom_status": payload_value(m.custom_status.as_deref()),
        "failure": m.failure,
    })
}

/// A failure and its causes, one line each: `Type: message`, then
/// `caused by Type: message`, with stack traces indented below.
pub fn failure_lines(f: &FailureDetails) -> Vec<String> {
    let mut lines = Vec::new();
    for (depth, cause) in f.chain().enumerate() {
        let marker = if cause.non_retriable {
            " (non-retriable)"
        } else {
            ""
        };
        let head = if depth == 0 {
            format!("{cause}{marker}")
        } else {
            format!("caused by {cause}{marker}")
        };
        lines.push(head);
        if let Some(trace) = &cause.stack_trace {
            lines.extend(trace.lines().map(|l| format!("    {l}")));
        }
    }
    lines
}

/// What `durable show` prints for people.
pub fn instance_details(m: &InstanceMetadata) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("Instance", m.instance_id.clone()),
        ("Name", m.name.clone()),
        ("Version", m.version.clone().unwrap_or_else(|| "-".into())),
        ("Status", m.status.to_string()),
        ("Execution", m.execution_id.clone()),
        ("Created", timestamp(m.created_at)),
        ("Updated", timestamp(m.last_updated_at)),
    ];
    if let Some(t) = m.completed_at {
        fields.push(("Completed", timestamp(t)));
    }
    if let Some(t) = m.scheduled_start {
        fields.push(("Starts at", timestamp(t)));
    }
    fields.push((
        "Parent",
        m.parent_instance_id.clone().unwrap_or_else(|| "-".into()),
    ));
    if !m.tags.is_empty() {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.push(("Tags", tags.join(", ")));
    }
    fields.push(("Input", payload(m.input.as_deref())));
    fields.push(("Output", payload(m.output.as_deref())));
    fields.push(("Custom status", payload(m.custom_status.as_deref())));
    let width = fields
        .iter()
        .map(|(k, _)| k.len())
        .chain(Some("Failure".len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in &fields {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    match &m.failure {
        None => out.push_str(&format!("{:<width$}  -\n", "Failure")),
        Some(f) => {
            for (i, line) in failure_lines(f).iter().enumerate() {
                let label = if i == 0 { "Failure" } else { "" };
                out.push_str(&format!("{label:<width$}  {line}\n"));
            }
        }
    }
    out
}

/// How an outcome reads in the RESULT column.
pub fn outcome_text(entry: &Entry) -> String {
    let text = match &entry.outcome {
        Outcome::Pending => "pending".to_string(),
        Outcome::Unfinished => "never finished".to_string(),
        Outcome::Fired => "fired".to_string(),
        Outcome::Value(v) => match (entry.kind, v) {
            (EntryKind::Started, Some(_)) => format!("input {}", payload(v.as_deref())),
            (EntryKind::Activity | EntryKind::SubOrchestration, _) => {
                format!("completed: {}", payload(v.as_deref()))
            }
            (_, None) => String::new(),
            (_, Some(_)) => payload(v.as_deref()),
        },
        Outcome::Failed(f) => {
            let chain: Vec<String> = f.chain().map(|c| c.to_string()).collect();
            format!("failed: {}", chain.join(" <- "))
        }
        Outcome::Status(_, result) => match result {
            Some(_) => format!("output {}", payload(result.as_deref())),
            None => String::new(),
        },
    };
    truncate(&text, CELL_WIDTH)
}

/// What `durable history` prints for people: a header, then one row per
/// activity, timer, sub-orchestration and event. Times are shown as time
/// of day when the whole history falls on one UTC date (named in the
/// header), in full otherwise.
pub fn history_timeline(instance_id: &str, events: &[HistoryEvent]) -> String {
    let entries = timeline::timeline(events);
    let mut out = format!(
        "Instance {instance_id}: {} events, {} episodes (current execution)\n",
        events.len(),
        timeline::episodes(events)
    );
    let one_day = events
        .first()
        .map(|first| {
            let d = first.timestamp.date_naive();
            events.iter().all(|e| e.timestamp.date_naive() == d)
        })
        .unwrap_or(false);
    let show_time = |t: Timestamp| {
        if one_day {
            t.format("%H:%M:%S%.3f").to_string()
        } else {
            timestamp(t)
        }
    };
    if one_day {
        let d = events[0].timestamp.format("%Y-%m-%d");
        out.push_str(&format!("Times are UTC, on {d}\n"));
    } else if !events.is_empty() {
        out.push_str("Times are UTC\n");
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let spans = matches!(
                e.kind,
                EntryKind::Activity | EntryKind::Timer | EntryKind::SubOrchestration
            );
            vec![
                e.seq.map(|s| s.to_string()).unwrap_or_default(),
                e.kind.label().to_string(),
                e.name.clone(),
                show_time(e.start),
                match (spans, e.end) {
                    (true, Some(end)) => show_time(end),
                    _ => String::new(),
                },
                e.duration().map(duration).unwrap_or_default(),
                outcome_text(e),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SEQ", "KIND", "NAME", "START", "END", "DURATION", "RESULT"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::chrono::{DateTime, Duration};
    use durable_runtime::history::{EventKind, OrchestrationStatus};

    fn t(ms: i64) -> Timestamp {
        DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .to_utc()
            + Duration::milliseconds(ms)
    }

    fn meta() -> InstanceMetadata {
        InstanceMetadata {
            instance_id: "order-1".into(),
            execution_id: "e1".into(),
            name: "checkout".into(),
            version: None,
            status: OrchestrationStatus::Failed,
            input: Some("{\"items\": [1, 2]}".into()),
            output: None,
            custom_status: Some("\"charging\"".into()),
            failure: Some(
                FailureDetails::new("TaskFailedError", "activity \"charge\" failed").with_inner(
                    FailureDetails {
                        stack_trace: Some("at charge\nat main".into()),
                        non_retriable: true,
                        ..FailureDetails::new("Declined", "card expired")
                    },
                ),
            ),
            created_at: t(0),
            last_updated_at: t(1500),
            completed_at: Some(t(1500)),
            scheduled_start: None,
            parent_instance_id: Some("batch-9".into()),
            tags: [
                ("team".to_string(), "billing".to_string()),
                ("tier".to_string(), "gold".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn durations() {
        let ms = TimeDelta::milliseconds;
        assert_eq!(duration(ms(0)), "0ms");
        assert_eq!(duration(ms(999)), "999ms");
        assert_eq!(duration(ms(1000)), "1.00s");
        assert_eq!(duration(ms(59_990)), "59.99s");
        assert_eq!(duration(ms(60_000)), "1m 00s");
        assert_eq!(duration(ms(3_600_000 + 5 * 60_000)), "1h 05m");
        assert_eq!(duration(ms(2 * 86_400_000 + 3 * 3_600_000)), "2d 03h");
        assert_eq!(duration(ms(-20)), "-20ms");
    }

    #[test]
    fn payloads_and_truncation() {
        assert_eq!(payload(None), "-");
        assert_eq!(payload(Some("{ \"a\" : 1 }")), "{\"a\":1}");
        assert_eq!(payload(Some("not json")), "not json");
        assert_eq!(payload_value(Some("[1]")), json!([1]));
        assert_eq!(payload_value(Some("oops")), json!("oops"));
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abc...");
        assert_eq!(truncate("ééééééé", 6), "ééé...");
    }

    #[test]
    fn details_show_every_field_and_the_cause_chain() {
        let text = instance_details(&meta());
        let expected = "\
Instance       order-1
Name           checkout
Version        -
Status         Failed
Execution      e1
Created        2030-01-02T03:04:05.000Z
Updated        2030-01-02T03:04:06.500Z
Completed      2030-01-02T03:04:06.500Z
Parent         batch-9
Tags           team=billing, tier=gold
Input          {\"items\":[1,2]}
Output         -
Custom status  \"charging\"
Failure        TaskFailedError: activity \"charge\" failed
               caused by Declined: card expired (non-retriable)
                   at charge
                   at main
";
        assert_eq!(text, expected);
    }

    #[test]
    fn instance_json_has_parsed_payloads() {
        let v = instance_json(&meta());
        assert_eq!(v["status"], "Failed");
        assert_eq!(v["input"], json!({"items": [1, 2]}));
        assert_eq!(v["output"], Value::Null);
        assert_eq!(v["custom_status"], "charging");
        assert_eq!(v["failure"]["inner"]["error_type"], "Declined");
        assert_eq!(v["created_at"], "2030-01-02T03:04:05.000Z");
        assert_eq!(v["parent_instance_id"], "batch-9");
        assert_eq!(v["tags"], json!({"team": "billing", "tier": "gold"}));
    }

    #[test]
    fn list_table() {
        let mut running = meta();
        running.instance_id = "order-22".into();
        running.status = OrchestrationStatus::Running;
        running.version = Some("2".into());
        let text = instance_table(&[meta(), running]);
        assert_eq!(
            text,
            "\
INSTANCE  NAME      VERSION  STATUS   CREATED (UTC)        UPDATED (UTC)
order-1   checkout  -        Failed   2030-01-02 03:04:05  2030-01-02 03:04:06
order-22  checkout  2        Running  2030-01-02 03:04:05  2030-01-02 03:04:06
"
        );
    }

    #[test]
    fn history_rows() {
        let events = vec![
            HistoryEvent::new(t(0), EventKind::OrchestratorStarted),
            HistoryEvent::new(
                t(0),
                EventKind::ExecutionStarted {
                    name: "checkout".into(),
                    version: None,
                    input: Some("1".into()),
                    instance_id: "order-1".into(),
                    execution_id: None,
                    parent: None,
                    scheduled_start: None,
                    tags: Default::default(),
                },
            ),
            HistoryEvent::with_id(
                0,
                t(1),
                EventKind::TaskScheduled {
                    name: "charge".into(),
                    version: None,
                    input: None,
                    tags: Default::default(),
                },
            ),
            HistoryEvent::with_id(1, t(1), EventKind::TimerCreated { fire_at: t(60_001) }),
            HistoryEvent::new(t(2), EventKind::OrchestratorCompleted),
            HistoryEvent::new(t(1250), EventKind::OrchestratorStarted),
            HistoryEvent::new(
                t(1250),
                EventKind::TaskCompleted {
                    task_scheduled_id: 0,
                    result: Some("\"ok\"".into()),
                },
            ),
            HistoryEvent::new(
                t(60_001),
                EventKind::TimerFired {
                    fire_at: t(60_001),
                    timer_id: 1,
                },
            ),
            HistoryEvent::new(
                t(60_002),
                EventKind::ExecutionCompleted {
                    status: OrchestrationStatus::Completed,
                    result: Some("42".into()),
                    failure: None,
                },
            ),
        ];
        let text = history_timeline("order-1", &events);
        let expected = "\
Instance order-1: 9 events, 2 episodes (current execution)
Times are UTC, on 2030-01-02

SEQ  KIND      NAME                               START         END           DURATION  RESULT
     started   checkout                           03:04:05.000                          input 1
0    activity  charge                             03:04:05.001  03:04:06.250  1.24s     completed: \"ok\"
1    timer     fires at 2030-01-02T03:05:05.001Z  03:04:05.001  03:05:05.001  1m 00s    fired
     ended     Completed                          03:05:05.002                          output 42
";
        assert_eq!(text, expected);
    }

    #[test]
    fn histories_over_several_days_and_empty_ones() {
        let events = vec![
            HistoryEvent::with_id(
                0,
                t(0),
                EventKind::TimerCreated {
                    fire_at: t(86_400_000),
                },
            ),
            HistoryEvent::new(
                t(86_400_000),
                EventKind::TimerFired {
                    fire_at: t(86_400_000),
                    timer_id: 0,
                },
            ),
        ];
        let text = history_timeline("long", &events);
        assert!(text.contains("Times are UTC\n"), "{text}");
        assert!(
            text.contains("2030-01-02T03:04:05.000Z  2030-01-03T03:04:05.000Z  1d 00h    fired"),
            "{text}"
        );
        let empty = history_timeline("later", &[]);
        assert_eq!(
            empty,
            "Instance later: 0 events, 0 episodes (current execution)\n\n\
             SEQ  KIND  NAME  START  END  DURATION  RESULT\n"
        );
    }

    #[test]
    fn failures_and_pending_in_results() {
        let entry = |outcome| Entry {
            seq: Some(0),
            kind: EntryKind::Activity,
            name: "a".into(),
            start: t(0),
            end: None,
            outcome,
        };
        assert_eq!(outcome_text(&entry(Outcome::Pending)), "pending");
        let f = FailureDetails::new("A", "x").with_inner(FailureDetails::new("B", "y"));
        assert_eq!(
            outcome_text(&entry(Outcome::Failed(f))),
            "failed: A: x <- B: y"
        );
        let long = format!("\"{}\"", "z".repeat(200));
        let text = outcome_text(&entry(Outcome::Value(Some(long))));
        assert_eq!(text.chars().count(), CELL_WIDTH);
        assert!(text.ends_with("..."));
    }
}
