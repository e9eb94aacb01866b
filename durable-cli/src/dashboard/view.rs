//! What the dashboard's JSON API answers, computed without I/O: the
//! filters of the instance list, the Gantt chart of a history, and its
//! rows for the history table. Tested from histories.

use crate::args::{parse_status, parse_time};
use crate::format;
use crate::timeline::{self, EntryKind, Outcome};
use durable_runtime::backend::InstanceQuery;
use durable_runtime::history::{EventKind, HistoryEvent};
use serde_json::{json, Value};
use std::collections::HashMap;

type Timestamp = durable_runtime::chrono::DateTime<durable_runtime::chrono::Utc>;

/// Instances per page of the list when the request names none.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// The most instances one page of the list may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The parameters `GET /api/instances` takes.
pub const LIST_PARAMETERS: [&str; 7] = [
    "status",
    "name",
    "prefix",
    "created_after",
    "created_before",
    "page_size",
    "continue",
];

/// A request for one page of the instance list.
#[derive(Clone, Debug, PartialEq)]
pub struct ListRequest {
    /// What the backend filters (statuses, created range, id prefix) and
    /// the page.
    pub query: InstanceQuery,
    /// Only instances of this orchestrator (the backend has no such
    /// filter: pages are filtered as they come).
    pub name: Option<String>,
}

/// Reads the query parameters of `GET /api/instances`; the error names
/// the parameter and says what it takes.
///
/// ```
/// use durable_cli::dashboard::view::parse_list;
/// use std::collections::HashMap;
/// let q: HashMap<String, String> = [("status".to_string(), "running,failed".to_string())].into();
/// assert_eq!(parse_list(&q).unwrap().query.statuses.len(), 2);
/// let bad: HashMap<String, String> = [("status".to_string(), "sleeping".to_string())].into();
/// assert!(parse_list(&bad).unwrap_err().contains("sleeping"));
/// ```
pub fn parse_list(params: &HashMap<String, String>) -> Result<ListRequest, String> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !LIST_PARAMETERS.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown parameter \"{unknown}\"; the list takes {}",
            LIST_PARAMETERS.join(", ")
        ));
    }
    let text = |key: &str| {
        params
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let mut statuses = Vec::new();
    if let Some(list) = text("status") {
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            statuses.push(parse_status(s).map_err(|e| format!("status: {e}"))?);
        }
    }
    let time = |key: &str| {
        text(key)
            .map(|t| parse_time(&t).map_err(|e| format!("{key}: {e}")))
            .transpose()
    };
    let created_from = time("created_after")?;
    let created_to = time("created_before")?;
    if let (Some(a), Some(b)) = (created_from, created_to) {
        if a >= b {
            return Err(format!(
                "created_after ({}) must be earlier than created_before ({}), or nothing matches",
                format::timestamp(a),
                format::timestamp(b)
            ));
        }
    }
    let page_size = match text("page_size") {
        None => DEFAULT_PAGE_SIZE,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(format!(
                    "page_size \"{n}\": give a whole number from 1 to {MAX_PAGE_SIZE}"
                ))
            }
        },
    };
    Ok(ListRequest {
        query: InstanceQuery {
            statuses,
            created_from,
            created_to,
            instance_id_prefix: text("prefix"),
            page_size,
            continuation_token: text("continue"),
            fetch_payloads: false,
        },
        name: text("name"),
    })
}

/// Milliseconds from `origin` to `t` (negative before it).
fn offset(origin: Timestamp, t: Timestamp) -> i64 {
    (t - origin).num_milliseconds()
}

/// The payload or failure an entry ended with, on one short line.
fn detail(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Value(v) => format::truncate(&format::payload(v.as_deref()), 200),
        Outcome::Failed(f) => format::truncate(&format::failure_lines(f).join("; "), 200),
        Outcome::Status(s, v) => format!("{s} {}", format::payload(v.as_deref())),
        Outcome::Pending => "pending".into(),
        Outcome::Unfinished => "never finished".into(),
        Outcome::Fired => "fired".into(),
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Pending => "pending",
        Outcome::Unfinished => "unfinished",
        Outcome::Value(_) | Outcome::Status(..) => "completed",
        Outcome::Failed(_) => "failed",
        Outcome::Fired => "fired",
    }
}

/// One row of the Gantt chart being built.
struct Row {
    kind: &'static str,
    label: String,
    /// What groups the attempts of one call (an activity's first task id).
    key: Option<i32>,
    bars: Vec<Value>,
}

/// The Gantt chart of a history, as the instance page draws it.
///
/// `now` is where bars still pending end (the time of the request);
/// `running` says whether the instance is still live, so that the chart
/// runs to `now`, else to its last event.
///
/// - An **activity** is a bar from `TaskScheduled` to its completion or
///   failure; the retries of one call (tagged `durable.first_task_id`)
///   are further bars on the same row, each with its attempt number.
/// - A **sub-orchestration** is a bar with its instance id, so the page
///   links to it.
/// - A **timer** is a bar to `TimerFired`. A timer that had not fired
///   when an external event arrived (the deadline of `wait_for_event`
///   with a timeout) is a **wait**: its bar ends at that event and names
///   it.
/// - Everything else that is a single moment (events raised and sent,
///   suspend, resume, rewind, terminate, the start and the end) is a mark.
pub fn gantt(events: &[HistoryEvent], now: Timestamp, running: bool) -> Value {
    let Some(first) = events.first() else {
        return json!({"start": null, "end": null, "span_ms": 0, "rows": [], "marks": []});
    };
    let origin = first.timestamp;
    let last = events.last().map_or(origin, |e| e.timestamp);
    let end = if running { now.max(last) } else { last };
    let scheduled: HashMap<i32, &HistoryEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::TaskScheduled { .. }
                    | EventKind::SubOrchestrationInstanceCreated { .. }
                    | EventKind::TimerCreated { .. }
            )
        })
        .map(|e| (e.event_id, e))
        .collect();
    let raised: Vec<(Timestamp, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::EventRaised { name, .. } => Some((e.timestamp, name.as_str())),
            _ => None,
        })
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    let mut marks = Vec::new();
    for entry in timeline::timeline(events) {
        let start = offset(origin, entry.start);
        let mut bar = json!({
            "seq": entry.seq,
            "start": format::timestamp(entry.start),
            "start_ms": start,
            "end": entry.end.map(format::timestamp),
            "end_ms": entry.end.map(|t| offset(origin, t)),
            "duration": entry.duration().map(format::duration),
            "outcome": outcome_name(&entry.outcome),
            "detail": detail(&entry.outcome),
            "attempt": 1,
        });
        match entry.kind {
            EntryKind::Activity => {
                let tags = entry
                    .seq
                    .and_then(|s| scheduled.get(&s))
                    .and_then(|e| match &e.kind {
                        EventKind::TaskScheduled { tags, .. } => Some(tags),
                        _ => None,
                    });
                let tag = |name: &str| {
                    tags.and_then(|t| t.get(name))
                        .and_then(|v| v.parse::<i32>().ok())
                };
                let key = tag("durable.first_task_id").or(entry.seq);
                bar["attempt"] = json!(tag("durable.attempt").unwrap_or(1));
                match rows
                    .iter_mut()
                    .find(|r| r.kind == "activity" && r.key == key && key.is_some())
                {
                    Some(row) => row.bars.push(bar),
                    None => rows.push(Row {
                        kind: "activity",
                        label: entry.name.clone(),
                        key,
                        bars: vec![bar],
                    }),
                }
            }
            EntryKind::SubOrchestration => {
                let (name, child) = match entry.seq.and_then(|s| scheduled.get(&s)).map(|e| &e.kind)
                {
                    Some(EventKind::SubOrchestrationInstanceCreated {
                        name, instance_id, ..
                    }) => (name.clone(), Some(instance_id.clone())),
                    _ => (entry.name.clone(), None),
                };
                bar["instance_id"] = json!(child);
                rows.push(Row {
                    kind: "sub-orchestration",
                    label: name,
                    key: None,
                    bars: vec![bar],
                });
            }
            EntryKind::Timer => {
                let fire_at = match entry.seq.and_then(|s| scheduled.get(&s)).map(|e| &e.kind) {
                    Some(EventKind::TimerCreated { fire_at }) => Some(*fire_at),
                    _ => None,
                };
                let fires = fire_at.map(format::timestamp).unwrap_or_default();
                // The label is short: the time of day (the date is in the
                // bar's details).
                let fires_short = fire_at
                    .map(|t| t.format("%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_default();
                bar["fire_at"] = json!(fires);
                let cut = raised
                    .iter()
                    .find(|(at, _)| *at >= entry.start && entry.end.is_none_or(|e| *at < e));
                let not_fired_by_then =
                    matches!(entry.outcome, Outcome::Pending | Outcome::Unfinished)
                        || entry
                            .end
                            .is_some_and(|e| cut.is_some_and(|(at, _)| *at < e));
                match cut.filter(|_| not_fired_by_then) {
                    Some((at, name)) => {
                        bar["end"] = json!(format::timestamp(*at));
                        bar["end_ms"] = json!(offset(origin, *at));
                        bar["duration"] = json!(format::duration(*at - entry.start));
                        bar["outcome"] = json!("event");
                        bar["detail"] = json!(format!(
                            "event \"{name}\" arrived; the timer was for {fires}"
                        ));
                        rows.push(Row {
                            kind: "wait",
                            label: format!("wait for \"{name}\""),
                            key: None,
                            bars: vec![bar],
                        });
                    }
                    None => rows.push(Row {
                        kind: "timer",
                        label: format!("timer to {fires_short}"),
                        key: None,
                        bars: vec![bar],
                    }),
                }
            }
            kind => marks.push(json!({
                "kind": kind.label(),
                "label": entry.name,
                "at": format::timestamp(entry.start),
                "at_ms": start,
                "detail": detail(&entry.outcome),
            })),
        }
    }
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"kind": r.kind, "label": r.label, "bars": r.bars}))
        .collect();
    json!({
        "start": format::timestamp(origin),
        "end": format::timestamp(end),
        "span_ms": offset(origin, end),
        "rows": rows,
        "marks": marks,
    })
}

/// The history as the table of the instance page: each event's id, type,
/// time (and milliseconds since the first event) and its other fields as
/// in the export format (docs/history-format.md).
pub fn history_rows(events: &[HistoryEvent]) -> Vec<Value> {
    let origin = events.first().map(|e| e.timestamp);
    events
        .iter()
        .map(|e| {
            let mut fields = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Some(map) = fields.as_object_mut() {
                for key in ["event_id", "timestamp", "type"] {
                    map.remove(key);
                }
            }
            json!({
                "event_id": e.event_id,
                "type": e.kind.type_name(),
                "timestamp": format::timestamp(e.timestamp),
                "offset_ms": origin.map(|o| offset(o, e.timestamp)),
                "fields": fields,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::chrono::{DateTime, Duration};
    use durable_runtime::history::{FailureDetails, OrchestrationStatus};

    fn t(ms: i64) -> Timestamp {
        DateTime::UNIX_EPOCH + Duration::milliseconds(ms)
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn list_filters_parse_and_bad_ones_say_why() {
        let r = parse_list(&params(&[
            ("status", "running, Completed"),
            ("name", "order_with_approval"),
            ("prefix", "ord-"),
            ("created_after", "2030-01-01T00:00:00Z"),
            ("created_before", "2030-01-02T00:00:00+01:00"),
            ("page_size", "20"),
            ("continue", "tok"),
        ]))
        .unwrap();
        assert_eq!(
            r.query.statuses,
            [OrchestrationStatus::Running, OrchestrationStatus::Completed]
        );
        assert_eq!(r.name.as_deref(), Some("order_with_approval"));
        assert_eq!(r.query.instance_id_prefix.as_deref(), Some("ord-"));
        assert_eq!(
            r.query.created_to.map(format::timestamp).as_deref(),
            Some("2030-01-01T23:00:00.000Z")
        );
        assert_eq!(r.query.page_size, 20);
        assert_eq!(r.query.continuation_token.as_deref(), Some("tok"));
        assert!(!r.query.fetch_payloads);
        // Empty values are no filter.
        let empty = parse_list(&params(&[("status", ""), ("name", " ")])).unwrap();
        assert!(empty.query.statuses.is_empty() && empty.name.is_none());
        assert_eq!(empty.query.page_size, DEFAULT_PAGE_SIZE);

        let err = |pairs: &[(&str, &str)]| parse_list(&params(pairs)).unwrap_err();
        assert!(err(&[("colour", "red")]).contains("unknown parameter \"colour\""));
        assert!(err(&[("status", "running,asleep")]).contains("\"asleep\""));
        assert!(err(&[("created_after", "yesterday")]).starts_with("created_after:"));
        assert!(err(&[
            ("created_after", "2030-01-02T00:00:00Z"),
            ("created_before", "2030-01-01T00:00:00Z")
        ])
        .contains("must be earlier"));
        for n in ["0", "-1", "1001", "ten"] {
            assert!(err(&[("page_size", n)]).contains("1 to 1000"), "{n}");
        }
    }

    fn started(ms: i64) -> Vec<HistoryEvent> {
        vec![
            HistoryEvent::new(t(ms), EventKind::OrchestratorStarted),
            HistoryEvent::new(
                t(ms),
                EventKind::ExecutionStarted {
                    name: "order_with_approval".into(),
                    version: None,
                    input: Some("{}".into()),
                    instance_id: "o-1".into(),
                    execution_id: None,
                    parent: None,
                    scheduled_start: None,
                    tags: Default::default(),
                },
            ),
        ]
    }

    fn scheduled(seq: i32, ms: i64, name: &str, tags: &[(&str, &str)]) -> HistoryEvent {
        HistoryEvent::with_id(
            seq,
            t(ms),
            EventKind::TaskScheduled {
                name: name.into(),
                version: None,
                input: None,
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        )
    }

    /// The approved large order: total, a wait for approval with a
    /// 30-second deadline, the event, then the sub-orchestration.
    fn approved() -> Vec<HistoryEvent> {
        let mut h = started(0);
        h.extend([
            scheduled(0, 1, "calculate_total", &[]),
            HistoryEvent::new(
                t(5),
                EventKind::TaskCompleted {
                    task_scheduled_id: 0,
                    result: Some("1500.0".into()),
                },
            ),
            HistoryEvent::with_id(1, t(6), EventKind::TimerCreated { fire_at: t(30_006) }),
            HistoryEvent::new(
                t(400),
                EventKind::EventRaised {
                    name: "approval".into(),
                    input: Some("true".into()),
                },
            ),
            HistoryEvent::with_id(
                2,
                t(401),
                EventKind::SubOrchestrationInstanceCreated {
                    instance_id: "o-1:0002".into(),
                    name: "process_order".into(),
                    version: None,
                    input: None,
                },
            ),
            HistoryEvent::new(
                t(900),
                EventKind::SubOrchestrationInstanceCompleted {
                    task_scheduled_id: 2,
                    result: Some("{\"status\":\"completed\"}".into()),
                },
            ),
            HistoryEvent::new(
                t(901),
                EventKind::ExecutionCompleted {
                    status: OrchestrationStatus::Completed,
                    result: Some("{\"status\":\"completed\"}".into()),
                    failure: None,
                },
            ),
        ]);
        h
    }

    #[test]
    fn the_approval_wait_ends_at_the_event_and_the_child_is_linked() {
        let g = gantt(&approved(), t(50_000), false);
        assert_eq!(
            g["span_ms"], 901,
            "a finished instance's chart ends at its end"
        );
        let rows = g["rows"].as_array().unwrap();
        let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["activity", "wait", "sub-orchestration"]);
        let wait = &rows[1];
        assert_eq!(wait["label"], "wait for \"approval\"");
        assert_eq!(wait["bars"][0]["fire_at"], "1970-01-01T00:00:30.006Z");
        assert_eq!(
            wait["bars"][0]["detail"],
            "event \"approval\" arrived; the timer was for 1970-01-01T00:00:30.006Z"
        );
        let bar = &wait["bars"][0];
        assert_eq!(
            (bar["start_ms"].as_i64(), bar["end_ms"].as_i64()),
            (Some(6), Some(400))
        );
        assert_eq!(bar["outcome"], "event");
        assert_eq!(bar["duration"], "394ms");
        let child = &rows[2]["bars"][0];
        assert_eq!(rows[2]["label"], "process_order");
        assert_eq!(child["instance_id"], "o-1:0002");
        assert_eq!(child["duration"], "499ms");
        assert_eq!(child["outcome"], "completed");
        let marks: Vec<&str> = g["marks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        assert_eq!(marks, ["started", "event raised", "ended"]);
    }

    #[test]
    fn a_pending_wait_runs_to_now_and_a_fired_timer_is_a_timer() {
        let mut waiting = approved();
        waiting.truncate(5); // up to the TimerCreated
        let g = gantt(&waiting, t(2_000), true);
        assert_eq!(g["span_ms"], 2_000, "a live instance's chart runs to now");
        let timer = &g["rows"][1];
        assert_eq!(timer["kind"], "timer");
        assert_eq!(timer["bars"][0]["outcome"], "pending");
        assert_eq!(timer["bars"][0]["end_ms"], Value::Null);

        waiting.push(HistoryEvent::new(
            t(30_006),
            EventKind::TimerFired {
                fire_at: t(30_006),
                timer_id: 1,
            },
        ));
        let g = gantt(&waiting, t(40_000), true);
        let timer = &g["rows"][1];
        assert_eq!(timer["kind"], "timer", "no event came: the timer fired");
        assert_eq!(timer["bars"][0]["outcome"], "fired");
        assert_eq!(timer["bars"][0]["duration"], "30.00s");
    }

    #[test]
    fn retries_are_bars_of_one_row_and_parallel_calls_rows_of_their_own() {
        let mut h = started(0);
        let failed = |seq, ms| {
            HistoryEvent::new(
                t(ms),
                EventKind::TaskFailed {
                    task_scheduled_id: seq,
                    failure: FailureDetails::new("Unavailable", "down"),
                },
            )
        };
        h.extend([
            scheduled(0, 0, "charge", &[]),
            scheduled(1, 0, "ship_item", &[]),
            scheduled(2, 0, "ship_item", &[]),
            failed(0, 10),
            HistoryEvent::with_id(3, t(10), EventKind::TimerCreated { fire_at: t(1010) }),
            HistoryEvent::new(
                t(1010),
                EventKind::TimerFired {
                    fire_at: t(1010),
                    timer_id: 3,
                },
            ),
            scheduled(
                4,
                1010,
                "charge",
                &[("durable.attempt", "2"), ("durable.first_task_id", "0")],
            ),
            HistoryEvent::new(
                t(1020),
                EventKind::TaskCompleted {
                    task_scheduled_id: 4,
                    result: Some("\"ok\"".into()),
                },
            ),
        ]);
        let g = gantt(&h, t(5_000), true);
        let rows = g["rows"].as_array().unwrap();
        let labels: Vec<(&str, usize)> = rows
            .iter()
            .map(|r| {
                (
                    r["label"].as_str().unwrap(),
                    r["bars"].as_array().unwrap().len(),
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                ("charge", 2),
                ("ship_item", 1),
                ("ship_item", 1),
                ("timer to 00:00:01.010Z", 1)
            ]
        );
        let attempts = &rows[0]["bars"];
        assert_eq!(attempts[0]["outcome"], "failed");
        assert_eq!(attempts[0]["detail"], "Unavailable: down");
        assert_eq!(attempts[1]["attempt"], 2);
        assert_eq!(attempts[1]["start_ms"], 1010);
        assert_eq!(attempts[1]["outcome"], "completed");
    }

    #[test]
    fn history_rows_keep_every_field_of_the_export_format() {
        let rows = history_rows(&approved());
        assert_eq!(rows.len(), 9);
        assert_eq!(rows[2]["type"], "TaskScheduled");
        assert_eq!(rows[2]["event_id"], 0);
        assert_eq!(rows[2]["fields"]["name"], "calculate_total");
        assert_eq!(rows[6]["fields"]["instance_id"], "o-1:0002");
        assert_eq!(rows[8]["offset_ms"], 901);
        assert!(rows[8]["fields"].get("type").is_none());
        assert_eq!(gantt(&[], t(0), true)["rows"], json!([]));
    }
}
