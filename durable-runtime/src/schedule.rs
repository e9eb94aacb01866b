//! Schedules: an orchestration started every interval, kept by an entity.
//!
//! A schedule is the entity `@schedule@<schedule id>` ([`Schedule`]); its
//! state is the configuration and where the schedule stands. Creating or
//! resuming it signals the entity's `run` operation, which starts the
//! orchestration when a run is due and signals itself again, delayed to
//! the next run time. So a schedule is stored, and runs, wherever entities
//! do, and moves with `TestEnv`'s virtual clock. The semantics follow the
//! Python Durable Task SDK's scheduled tasks (`durabletask.scheduled`):
//!
//! - runs are at `start_at + k × interval` (`start_at` defaults to when the
//!   schedule was created, so the first run is then an interval later); a
//!   schedule created after `start_at` runs next at the next such time, or
//!   at once if `start_immediately_if_late`;
//! - after `end_at` the schedule deletes itself;
//! - pausing stops the runs, resuming goes on from the next run time;
//!   updating the start, interval or lateness rule recomputes it;
//! - each run's instance id is `<schedule id>-<run time, RFC 3339>` (or
//!   the configured instance id), so a run started twice is one instance.
//!
//! Workers that run schedules register the entity:
//! `Registry::new().entity::<Schedule>()`. The client's calls are in
//! [`Client`](crate::Client) (`create_schedule`, `list_schedules`, ...).

use crate::entity::{Entity, EntityContext, EntityId, Operations};
use crate::history::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The entity name of schedules.
pub const SCHEDULE_ENTITY: &str = "schedule";

/// The id of the entity of schedule `schedule_id`.
pub fn schedule_entity_id(schedule_id: &str) -> EntityId {
    EntityId::new(SCHEDULE_ENTITY, schedule_id)
}

/// What a schedule runs and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleOptions {
    /// The schedule's id (the entity's key).
    pub schedule_id: String,
    /// The orchestration started at each run.
    pub orchestration_name: String,
    /// Its input (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_input: Option<String>,
    /// The instance id of every run (default: `<schedule id>-<run time>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_instance_id: Option<String>,
    /// Time between runs (at least a second).
    #[serde(with = "seconds")]
    pub interval: Duration,
    /// The first run time (default: when the schedule is created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
    /// No run after this time; the schedule then deletes itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<Timestamp>,
    /// A schedule created after `start_at` runs at once rather than at the
    /// next interval.
    #[serde(default)]
    pub start_immediately_if_late: bool,
}

impl ScheduleOptions {
    /// A schedule starting `orchestration_name` every `interval`.
    pub fn new(
        schedule_id: impl Into<String>,
        orchestration_name: impl Into<String>,
        interval: Duration,
    ) -> Self {
        ScheduleOptions {
            schedule_id: schedule_id.into(),
            orchestration_name: orchestration_name.into(),
            orchestration_input: None,
            orchestration_instance_id: None,
            interval,
            start_at: None,
            end_at: None,
            start_immediately_if_late: false,
        }
    }

    /// Checks what a schedule cannot run with; the message says what to
    /// fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.schedule_id.is_empty() {
            return Err("a schedule needs an id".into());
        }
        if self.orchestration_name.is_empty() {
            return Err(format!(
                "schedule \"{}\" names no orchestration to start",
                self.schedule_id
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(format!(
                "the interval of schedule \"{}\" is {:?}; it must be at least one second",
                self.schedule_id, self.interval
            ));
        }
        if let (Some(start), Some(end)) = (self.start_at, self.end_at) {
            if end <= start {
                return Err(format!(
                    "schedule \"{}\" ends ({end}) before it starts ({start})",
                    self.schedule_id
                ));
            }
        }
        if let Some(input) = &self.orchestration_input {
            serde_json::from_str::<serde_json::Value>(input).map_err(|e| {
                format!(
                    "the orchestration input of schedule \"{}\" is not JSON: {e}",
                    self.schedule_id
                )
            })?;
        }
        Ok(())
    }
}

/// Changes to a schedule: the fields set replace the configuration's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleUpdate {
    /// A new orchestration name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_name: Option<String>,
    /// A new input (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_input: Option<String>,
    /// A new interval.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_seconds")]
    pub interval: Option<Duration>,
    /// A new first run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
    /// A new end time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<Timestamp>,
    /// A new lateness rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_immediately_if_late: Option<bool>,
}

/// Where a schedule stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    /// Not created (or deleted).
    #[default]
    Uninitialized,
    /// Running.
    Active,
    /// Paused: no runs until resumed.
    Paused,
}

impl std::fmt::Display for ScheduleStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScheduleStatus::Uninitialized => "uninitialized",
            ScheduleStatus::Active => "active",
            ScheduleStatus::Paused => "paused",
        })
    }
}

/// A schedule's entity state: its configuration and where it stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Active or paused.
    pub status: ScheduleStatus,
    /// What runs and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ScheduleOptions>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// When its configuration or status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_at: Option<Timestamp>,
    /// The run time of the last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Timestamp>,
    /// The next run time, while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Timestamp>,
    /// Runs started.
    #[serde(default)]
    pub runs: u64,
    /// Identifies the chain of `run` signals in force: pausing, updating or
    /// creating again starts a new one, and older signals are ignored.
    #[serde(default)]
    pub token: u64,
}

/// The operation that runs a schedule (signalled by the schedule itself).
const RUN: &str = "run";

impl Schedule {
    fn id(&self) -> &str {
        self.options.as_ref().map_or("", |o| o.schedule_id.as_str())
    }

    fn refused(&self, op: &str) -> String {
        format!(
            "schedule \"{}\" is {}: it cannot {op}",
            self.id(),
            self.status
        )
    }

    /// Arms the next `run` signal of a new chain.
    fn rearm(&mut self, ctx: &mut EntityContext) {
        self.token += 1;
        self.next_run_at = None;
        let me = ctx.id().clone();
        ctx.signal_entity(&me, RUN, &self.token);
    }

    fn create(&mut self, ctx: &mut EntityContext, options: ScheduleOptions) -> Result<(), String> {
        options.validate()?;
        let now = ctx.current_utc_datetime();
        if self.status == ScheduleStatus::Uninitialized {
            self.created_at = Some(now);
        }
        // Creating a paused or active schedule again replaces its
        // configuration and makes it active.
        self.status = ScheduleStatus::Active;
        self.options = Some(options);
        self.last_modified_at = Some(now);
        self.rearm(ctx);
        Ok(())
    }

    fn update(&mut self, ctx: &mut EntityContext, update: ScheduleUpdate) -> Result<(), String> {
        let Some(mut options) = self.options.clone() else {
            return Err(self.refused("be updated"));
        };
        if let Some(v) = update.orchestration_name {
            options.orchestration_name = v;
        }
        if let Some(v) = update.orchestration_input {
            options.orchestration_input = Some(v);
        }
        if let Some(v) = update.interval {
            options.interval = v;
        }
        if let Some(v) = update.start_at {
            options.start_at = Some(v);
        }
        if let Some(v) = update.end_at {
            options.end_at = Some(v);
        }
        if let Some(v) = update.start_immediately_if_late {
            options.start_immediately_if_late = v;
        }
        options.validate()?;
        self.options = Some(options);
        self.last_modified_at = Some(ctx.current_utc_datetime());
        if self.status == ScheduleStatus::Active {
            self.rearm(ctx);
        } else {
            self.token += 1;
            self.next_run_at = None;
        }
        Ok(())
    }

    fn pause(&mut self, ctx: &mut EntityContext, _: ()) -> Result<(), String> {
        if self.status != ScheduleStatus::Active {
            return Err(self.refused("be paused"));
        }
        self.status = ScheduleStatus::Paused;
        self.next_run_at = None;
        // Pending run signals become stale.
        self.token += 1;
        self.last_modified_at = Some(ctx.current_utc_datetime());
        Ok(())
    }

    fn resume(&mut self, ctx: &mut EntityContext, _: ()) -> Result<(), String> {
        if self.status != ScheduleStatus::Paused {
            return Err(self.refused("be resumed"));
        }
        self.status = ScheduleStatus::Active;
        self.last_modified_at = Some(ctx.current_utc_datetime());
        self.rearm(ctx);
        Ok(())
    }

    fn run(&mut self, ctx: &mut EntityContext, token: u64) -> Result<(), String> {
        if token != self.token || self.status != ScheduleStatus::Active {
            // A signal of an older chain (paused, updated, created again).
            return Ok(());
        }
        let Some(options) = self.options.clone() else {
            return Ok(());
        };
        let now = ctx.current_utc_datetime();
        if options.end_at.is_some_and(|end| now > end) {
            ctx.delete_state();
            return Ok(());
        }
        let mut next = self
            .next_run_at
            .unwrap_or_else(|| self.next_run(&options, now));
        if next <= now {
            let instance_id = options
                .orchestration_instance_id
                .clone()
                .unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        options.schedule_id,
                        next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                });
            ctx.start_orchestration_with_id(
                &options.orchestration_name,
                &instance_id,
                options.orchestration_input.clone(),
            );
            self.runs += 1;
            self.last_run_at = Some(next);
            next = self.next_run(&options, now);
        }
        if options.end_at.is_some_and(|end| next > end) {
            // No run is left: the schedule ends after its last one.
            ctx.delete_state();
            return Ok(());
        }
        self.next_run_at = Some(next);
        let me = ctx.id().clone();
        ctx.signal_entity_at(&me, RUN, &self.token, next);
        Ok(())
    }

    /// The next run time after `now`: the next `start + k × interval` (the
    /// start itself if it is still ahead), or now for a late schedule's
    /// first run when it starts immediately if late.
    fn next_run(&self, options: &ScheduleOptions, now: Timestamp) -> Timestamp {
        let start = options.start_at.or(self.created_at).unwrap_or(now);
        if now < start {
            return start;
        }
        if self.last_run_at.is_none() && options.start_immediately_if_late && now > start {
            return now;
        }
        if self.last_run_at.is_none() && now == start {
            return start;
        }
        let interval = chrono::Duration::from_std(options.interval)
            .unwrap_or_else(|_| chrono::Duration::seconds(1));
        let elapsed = (now - start).num_milliseconds();
        let step = interval.num_milliseconds().max(1);
        let k = elapsed / step + 1;
        start + chrono::Duration::milliseconds(k * step)
    }
}

impl Entity for Schedule {
    const NAME: &'static str = SCHEDULE_ENTITY;

    fn operations(ops: &mut Operations<Self>) {
        ops.op_with_context("create", Schedule::create)
            .op_with_context("update", Schedule::update)
            .op_with_context("pause", Schedule::pause)
            .op_with_context("resume", Schedule::resume)
            .op_with_context(RUN, Schedule::run);
    }
}

mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

mod opt_seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap()
    }

    #[test]
    fn run_times_follow_the_start_and_the_interval() {
        let mut options = ScheduleOptions::new("s", "o", Duration::from_secs(3600));
        options.start_at = Some(at(10, 0));
        let mut s = Schedule {
            created_at: Some(at(9, 0)),
            ..Default::default()
        };
        // Before the start: the start.
        assert_eq!(s.next_run(&options, at(9, 30)), at(10, 0));
        // Late, not starting at once: the next whole interval.
        assert_eq!(s.next_run(&options, at(12, 20)), at(13, 0));
        // Late, starting at once: now, for the first run only.
        options.start_immediately_if_late = true;
        assert_eq!(s.next_run(&options, at(12, 20)), at(12, 20));
        s.last_run_at = Some(at(12, 20));
        assert_eq!(s.next_run(&options, at(12, 20)), at(13, 0));
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        let mut o = ScheduleOptions::new("s", "o", Duration::from_millis(10));
        assert!(o.validate().unwrap_err().contains("at least one second"));
        o.interval = Duration::from_secs(60);
        o.orchestration_input = Some("{not json".into());
        assert!(o.validate().unwrap_err().contains("not JSON"));
        o.orchestration_input = None;
        o.start_at = Some(at(10, 0));
        o.end_at = Some(at(9, 0));
        assert!(o.validate().unwrap_err().contains("ends"));
    }
}
