//! The client's schedule API: create, list, describe, pause, resume,
//! update, delete (see [`crate::schedule`]).

use super::entities::EntityQuery;
use super::Client;
use crate::entity::{EntityId, EntityMessage};
use crate::error::Error;
use crate::schedule::{
    schedule_entity_id, Schedule, ScheduleOptions, ScheduleStatus, ScheduleUpdate, SCHEDULE_ENTITY,
};

/// A schedule as a client sees it: its id and its entity's state.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleDescription {
    /// The schedule's id.
    pub schedule_id: String,
    /// Its configuration and where it stands.
    pub schedule: Schedule,
}

impl Client {
    /// Creates a schedule (or replaces the configuration of the one with
    /// that id and makes it active). The schedule's entity applies it as
    /// soon as a worker with [`Schedule`] registered runs it.
    pub async fn create_schedule(&self, options: ScheduleOptions) -> Result<(), Error> {
        options.validate().map_err(Error::NotAvailable)?;
        let id = schedule_entity_id(&options.schedule_id);
        self.schedule_op(&id, "create", serde_json::to_string(&options))
            .await
    }

    /// Every schedule, ordered by id.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleDescription>, Error> {
        let entities = self
            .query_all_entities(EntityQuery {
                id_prefix: format!("{SCHEDULE_ENTITY}@"),
                include_state: true,
                ..EntityQuery::default()
            })
            .await?;
        let mut out = Vec::new();
        for e in entities {
            if let Some(schedule) = e.state::<Schedule>()? {
                out.push(ScheduleDescription {
                    schedule_id: e.id.key().to_string(),
                    schedule,
                });
            }
        }
        Ok(out)
    }

    /// A schedule; `None` if there is none of that id (never created, or
    /// deleted).
    pub async fn describe_schedule(
        &self,
        schedule_id: &str,
    ) -> Result<Option<ScheduleDescription>, Error> {
        let schedule: Option<Schedule> = self
            .get_entity_state(&schedule_entity_id(schedule_id))
            .await?;
        Ok(schedule
            .filter(|s| s.status != ScheduleStatus::Uninitialized)
            .map(|schedule| ScheduleDescription {
                schedule_id: schedule_id.to_string(),
                schedule,
            }))
    }

    /// Pauses an active schedule: no runs until it is resumed.
    pub async fn pause_schedule(&self, schedule_id: &str) -> Result<(), Error> {
        self.expect_status(schedule_id, ScheduleStatus::Active, "paused")
            .await?;
        self.schedule_op(&schedule_entity_id(schedule_id), "pause", Ok("null".into()))
            .await
    }

    /// Resumes a paused schedule from its next run time.
    pub async fn resume_schedule(&self, schedule_id: &str) -> Result<(), Error> {
        self.expect_status(schedule_id, ScheduleStatus::Paused, "resumed")
            .await?;
        self.schedule_op(
            &schedule_entity_id(schedule_id),
            "resume",
            Ok("null".into()),
        )
        .await
    }

    /// Changes a schedule's configuration (the fields `update` sets).
    pub async fn update_schedule(
        &self,
        schedule_id: &str,
        update: ScheduleUpdate,
    ) -> Result<(), Error> {
        let Some(current) = self.describe_schedule(schedule_id).await? else {
            return Err(missing(schedule_id));
        };
        if let Some(options) = current.schedule.options {
            // Checked here too, so a bad update is an error to the caller
            // and not only a failed operation in the entity.
            let mut merged = options;
            if let Some(v) = &update.orchestration_name {
                merged.orchestration_name = v.clone();
            }
            if let Some(v) = &update.orchestration_input {
                merged.orchestration_input = Some(v.clone());
            }
            if let Some(v) = update.interval {
                merged.interval = v;
            }
            if let Some(v) = update.start_at {
                merged.start_at = Some(v);
            }
            if let Some(v) = update.end_at {
                merged.end_at = Some(v);
            }
            merged.validate().map_err(Error::NotAvailable)?;
        }
        self.schedule_op(
            &schedule_entity_id(schedule_id),
            "update",
            serde_json::to_string(&update),
        )
        .await
    }

    /// Deletes a schedule: no more runs; its entity's state is removed.
    pub async fn delete_schedule(&self, schedule_id: &str) -> Result<(), Error> {
        if self.describe_schedule(schedule_id).await?.is_none() {
            return Err(missing(schedule_id));
        }
        self.schedule_op(
            &schedule_entity_id(schedule_id),
            "delete",
            Ok("null".into()),
        )
        .await
    }

    async fn expect_status(
        &self,
        schedule_id: &str,
        status: ScheduleStatus,
        to_be: &str,
    ) -> Result<(), Error> {
        match self.describe_schedule(schedule_id).await? {
            None => Err(missing(schedule_id)),
            Some(d) if d.schedule.status != status => Err(Error::NotAvailable(format!(
                "schedule \"{schedule_id}\" is {}, so it cannot be {to_be}",
                d.schedule.status
            ))),
            Some(_) => Ok(()),
        }
    }

    async fn schedule_op(
        &self,
        id: &EntityId,
        op: &str,
        input: Result<String, serde_json::Error>,
    ) -> Result<(), Error> {
        let input = input.expect("schedule options are plain data");
        self.send_entity_message(
            id,
            &EntityMessage::Operation {
                op: op.to_string(),
                input: Some(input),
                request_id: None,
                parent: None,
                scheduled_time: None,
            },
        )
        .await
    }
}

fn missing(schedule_id: &str) -> Error {
    Error::NotAvailable(format!(
        "there is no schedule \"{schedule_id}\" (list them with list_schedules)"
    ))
}
