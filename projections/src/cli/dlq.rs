//! `dlq ...`: the dead-letter queue of every projection of the program.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{DlqCommand, Failed, Outcome, say, unknown};
use crate::coordinator::ProjectionCoordinator;
use crate::coordinator::worker::error_chain;
use crate::dlq::{DLQEntry, DLQFilter, DLQStatus};
use crate::runner::RunnerError;

pub(super) async fn command(
    coordinator: &mut ProjectionCoordinator,
    command: DlqCommand,
) -> Result<Outcome, Failed> {
    match command {
        DlqCommand::List { projection, status } => list(coordinator, projection, status).await,
        DlqCommand::Show { id } => show(coordinator, id).await,
        DlqCommand::Replay {
            id: Some(id),
            projection: _,
        } => replay_one(coordinator, id).await,
        DlqCommand::Replay {
            id: None,
            projection: Some(projection),
        } => replay_all(coordinator, &projection).await,
        DlqCommand::Replay { .. } => Err(Failed::usage("give an entry id or --projection")),
        DlqCommand::Resolve { id, reason } => resolve(coordinator, id, &reason).await,
        DlqCommand::Stats => stats(coordinator).await,
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn storage_failure(name: &str) -> impl FnOnce(crate::StorageError) -> Failed + '_ {
    move |source| {
        Failed::from(RunnerError::Storage {
            projection: name.to_owned(),
            source,
        })
    }
}

/// The entries of the projections named (all when `None`), oldest first.
async fn entries(
    coordinator: &ProjectionCoordinator,
    projection: Option<&str>,
    status: Option<DLQStatus>,
) -> Result<Vec<DLQEntry>, Failed> {
    let registry = coordinator.registry();
    if let Some(name) = projection
        && registry.get(name).is_none()
    {
        return Err(unknown(name));
    }
    let mut all = Vec::new();
    for runner in registry.projections() {
        let name = runner.name();
        if projection.is_some_and(|wanted| wanted != name) {
            continue;
        }
        let mut filter = DLQFilter::all().projection(name);
        if let Some(status) = status {
            filter = filter.status(status);
        }
        let found = runner
            .reads()
            .dead_letters()
            .get_failed_events(filter)
            .await
            .map_err(storage_failure(name))?;
        all.extend(found);
    }
    all.sort_by(|a, b| {
        a.first_failed_at
            .cmp(&b.first_failed_at)
            .then(a.id.cmp(&b.id))
    });
    Ok(all)
}

/// Entry `id`, found in the queue of the projection it belongs to.
async fn entry(coordinator: &ProjectionCoordinator, id: i64) -> Result<DLQEntry, Failed> {
    for runner in coordinator.registry().projections() {
        let found = runner
            .reads()
            .dead_letters()
            .get_by_id(id)
            .await
            .map_err(storage_failure(runner.name()))?;
        if let Some(entry) = found
            && entry.projection_name == runner.name()
        {
            return Ok(entry);
        }
    }
    Err(Failed::usage(format!(
        "no dead-letter entry {id} of a projection of this program"
    )))
}

fn unresolved(entries: &[DLQEntry]) -> Outcome {
    if entries.iter().any(|e| e.status != DLQStatus::Resolved) {
        Outcome::Failures
    } else {
        Outcome::Ok
    }
}

async fn list(
    coordinator: &ProjectionCoordinator,
    projection: Option<String>,
    status: Option<DLQStatus>,
) -> Result<Outcome, Failed> {
    let entries = entries(coordinator, projection.as_deref(), status).await?;
    if entries.is_empty() {
        say("no dead letters");
        return Ok(Outcome::Ok);
    }
    say(&format!(
        "{:>6}  {:<20}  {:>8}  {:<24}  {:<8}  {:>8}  {:<20}  ERROR",
        "ID", "PROJECTION", "POSITION", "EVENT TYPE", "STATUS", "ATTEMPTS", "LAST FAILURE"
    ));
    for e in &entries {
        say(&format!(
            "{:>6}  {:<20}  {:>8}  {:<24}  {:<8}  {:>8}  {:<20}  {}",
            e.id,
            e.projection_name,
            e.position.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            e.event_type,
            e.status,
            e.attempts,
            time(e.last_failed_at),
            e.error_message.lines().next().unwrap_or_default(),
        ));
    }
    Ok(unresolved(&entries))
}

async fn show(coordinator: &ProjectionCoordinator, id: i64) -> Result<Outcome, Failed> {
    let e = entry(coordinator, id).await?;
    let position = e.position.map_or_else(|| "-".to_owned(), |p| p.to_string());
    say(&format!("entry:          {}", e.id));
    say(&format!("projection:     {}", e.projection_name));
    say(&format!("status:         {}", e.status));
    say(&format!(
        "event:          {} `{}` at position {position}",
        e.event_id, e.event_type
    ));
    say(&format!("attempts:       {}", e.attempts));
    say(&format!("first failure:  {}", time(e.first_failed_at)));
    say(&format!("last failure:   {}", time(e.last_failed_at)));
    if let Some(at) = e.resolved_at {
        let by = e.resolved_by.as_deref().unwrap_or("-");
        say(&format!("resolved:       {} by {by}", time(at)));
    }
    say(&format!("error:          {}", e.error_message));
    for cause in &e.error_chain {
        say(&format!("  caused by:    {cause}"));
    }
    let event =
        serde_json::to_string_pretty(&e.event_data).unwrap_or_else(|_| e.event_data.to_string());
    say("event data:");
    say(&event);
    Ok(Outcome::Ok)
}

async fn replay_one(coordinator: &mut ProjectionCoordinator, id: i64) -> Result<Outcome, Failed> {
    let e = entry(coordinator, id).await?;
    let runner = coordinator
        .registry_mut()
        .get_mut(&e.projection_name)
        .ok_or_else(|| unknown(&e.projection_name))?;
    match runner.replay_dead_letter(id).await {
        Ok(()) => {
            say(&format!("entry {id} ({}): applied", e.projection_name));
            Ok(Outcome::Ok)
        }
        Err(error) if error.kind() == crate::FailureKind::Infrastructure => Err(error.into()),
        Err(error) => {
            say(&format!(
                "entry {id} ({}): failed: {}",
                e.projection_name,
                error_chain(&error)
            ));
            Ok(Outcome::Failures)
        }
    }
}

async fn replay_all(
    coordinator: &mut ProjectionCoordinator,
    projection: &str,
) -> Result<Outcome, Failed> {
    let runner = coordinator
        .registry_mut()
        .get_mut(projection)
        .ok_or_else(|| unknown(projection))?;
    let mut waiting = runner.reads().unresolved_dead_letters().await?;
    // In position order: the order the events had in the store.
    waiting.sort_by_key(|e| (e.position.unwrap_or(u64::MAX), e.id));
    let (mut applied, mut failed) = (0, 0);
    for e in &waiting {
        let position = e.position.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let released = matches!(
            runner.reads().dead_letters().get_by_id(e.id).await,
            Ok(Some(now)) if now.status == DLQStatus::Resolved
        );
        if released {
            applied += 1;
            say(&format!(
                "entry {} (position {position}): applied (released)",
                e.id
            ));
            continue;
        }
        match runner.replay_dead_letter(e.id).await {
            Ok(()) => {
                applied += 1;
                say(&format!("entry {} (position {position}): applied", e.id));
            }
            Err(error) if error.kind() == crate::FailureKind::Infrastructure => {
                return Err(error.into());
            }
            Err(error) => {
                failed += 1;
                say(&format!(
                    "entry {} (position {position}): failed: {}",
                    e.id,
                    error_chain(&error)
                ));
            }
        }
    }
    say(&format!(
        "{projection}: {} replayed, {applied} applied, {failed} failed",
        waiting.len()
    ));
    Ok(if failed > 0 {
        Outcome::Failures
    } else {
        Outcome::Ok
    })
}

async fn resolve(
    coordinator: &mut ProjectionCoordinator,
    id: i64,
    reason: &str,
) -> Result<Outcome, Failed> {
    let e = entry(coordinator, id).await?;
    let runner = coordinator
        .registry_mut()
        .get_mut(&e.projection_name)
        .ok_or_else(|| unknown(&e.projection_name))?;
    runner
        .resolve_dead_letter(id, &format!("operator: {reason}"))
        .await?;
    say(&format!(
        "entry {id} ({}): resolved: {reason}",
        e.projection_name
    ));
    Ok(Outcome::Ok)
}

/// Per projection: unresolved entries, first and last failure.
struct Stat {
    unresolved: u64,
    resolved: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

async fn stats(coordinator: &ProjectionCoordinator) -> Result<Outcome, Failed> {
    let entries = entries(coordinator, None, None).await?;
    let mut per: BTreeMap<&str, Stat> = coordinator
        .registry()
        .projections()
        .map(|p| {
            let stat = Stat {
                unresolved: 0,
                resolved: 0,
                first: None,
                last: None,
            };
            (p.name(), stat)
        })
        .collect();
    for e in &entries {
        let Some(stat) = per.get_mut(e.projection_name.as_str()) else {
            continue;
        };
        if e.status == DLQStatus::Resolved {
            stat.resolved += 1;
            continue;
        }
        stat.unresolved += 1;
        stat.first = Some(
            stat.first
                .map_or(e.first_failed_at, |f| f.min(e.first_failed_at)),
        );
        stat.last = Some(
            stat.last
                .map_or(e.last_failed_at, |l| l.max(e.last_failed_at)),
        );
    }
    let mut rows: Vec<_> = per.into_iter().collect();
    rows.sort_by(|a, b| b.1.unresolved.cmp(&a.1.unresolved).then(a.0.cmp(b.0)));
    say(&format!(
        "{:<20}  {:>10}  {:>8}  {:<20}  LAST FAILURE",
        "PROJECTION", "UNRESOLVED", "RESOLVED", "FIRST FAILURE"
    ));
    for (name, stat) in &rows {
        let at = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), time);
        say(&format!(
            "{name:<20}  {:>10}  {:>8}  {:<20}  {}",
            stat.unresolved,
            stat.resolved,
            at(stat.first),
            at(stat.last)
        ));
    }
    Ok(unresolved(&entries))
}
