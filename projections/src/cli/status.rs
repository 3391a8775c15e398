//! `status`: a table (or JSON) of every projection, read from storage.

use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

use super::{Failed, Outcome, say};
use crate::coordinator::{ProjectionCoordinator, ProjectionStatus};

/// One projection, as `status` shows it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    /// `healthy`, `lagging`, `failing`, `paused`, `stopped`, `degraded` or `unknown`.
    state: &'static str,
    checkpoint: Option<u64>,
    head: Option<u64>,
    lag_events: Option<u64>,
    lag_seconds: Option<f64>,
    dead_letters: u64,
    last_error: Option<String>,
    /// On a cluster: the node holding the projection's lease (`None` while it is free).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
    /// For a version of a blue/green projection: which, its role, and how far it has got.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Version>,
}

/// A version of a blue/green projection, as `status` shows it.
#[derive(Debug, Serialize)]
struct Version {
    version: u32,
    /// `building`, `serving`, `replaced` or `retired`, as this process knows it.
    role: String,
    /// Its checkpoint over the store's head, from 0 to 1.
    progress: Option<f64>,
}

/// Who holds a projection's lease, on a cluster.
#[derive(Debug, Serialize)]
struct Owner {
    node: Option<String>,
    lease_seconds_left: Option<f64>,
}

fn state_word(status: &ProjectionStatus) -> &'static str {
    match status {
        ProjectionStatus::Healthy => "healthy",
        ProjectionStatus::Lagging { .. } => "lagging",
        ProjectionStatus::Failing { .. } => "failing",
        ProjectionStatus::Stopped { .. } => "stopped",
        ProjectionStatus::Paused { .. } => "paused",
        ProjectionStatus::Degraded { .. } => "degraded",
        _ => "unknown",
    }
}

async fn rows(coordinator: &ProjectionCoordinator) -> Vec<Row> {
    let health = coordinator.health_check().await;
    #[cfg(feature = "postgres")]
    let holders = coordinator.lease_holders().await;
    #[cfg(not(feature = "postgres"))]
    let holders: Option<std::collections::HashMap<String, (String, f64)>> = None;
    let mut rows = Vec::with_capacity(health.projections.len());
    for projection in health.projections {
        let last_error = match &projection.status {
            ProjectionStatus::Stopped { reason }
            | ProjectionStatus::Degraded { error: reason }
            | ProjectionStatus::Unknown { error: reason } => Some(reason.clone()),
            ProjectionStatus::Paused { reason } => Some(format!("paused: {reason}")),
            _ if projection.dead_letters > 0 => {
                last_dead_letter_error(coordinator, &projection.name).await
            }
            _ => None,
        };
        let checkpoint = projection.checkpoint.as_ref().map(|c| c.position);
        let head = projection.lag.as_ref().map(|l| l.head_position);
        let version = coordinator
            .registry()
            .get(&projection.name)
            .and_then(|runner| runner.version())
            .map(|status| Version {
                version: status.version,
                role: status.role.to_string(),
                progress: head.map(|head| match head {
                    0 => 1.0,
                    head => (checkpoint.unwrap_or(0) as f64 / head as f64).min(1.0),
                }),
            });
        rows.push(Row {
            version,
            state: state_word(&projection.status),
            checkpoint: projection.checkpoint.as_ref().map(|c| c.position),
            head: projection.lag.as_ref().map(|l| l.head_position),
            lag_events: projection.lag.as_ref().map(|l| l.events_behind),
            lag_seconds: projection
                .lag
                .as_ref()
                .map(|l| l.oldest_unprocessed_age.map_or(0.0, |a| a.as_secs_f64())),
            dead_letters: projection.dead_letters,
            last_error,
            owner: holders.as_ref().map(|holders| {
                let holder = holders.get(&projection.name);
                Owner {
                    node: holder.map(|(node, _)| node.clone()),
                    lease_seconds_left: holder.map(|(_, left)| *left),
                }
            }),
            name: projection.name,
        });
    }
    rows
}

async fn last_dead_letter_error(coordinator: &ProjectionCoordinator, name: &str) -> Option<String> {
    let reads = coordinator.registry().get(name)?.reads();
    let entries = reads.unresolved_dead_letters().await.ok()?;
    entries
        .into_iter()
        // The latest; of several at once, the first recorded (the cause of the others).
        .max_by_key(|e| (e.last_failed_at, std::cmp::Reverse(e.id)))
        .map(|e| format!("dead letter {}: {}", e.id, e.error_message))
}

fn dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn table(rows: &[Row]) -> String {
    // The OWNER column only on a cluster.
    let clustered = rows.iter().any(|r| r.owner.is_some());
    let mut header = vec![
        "PROJECTION",
        "STATE",
        "CHECKPOINT",
        "HEAD",
        "LAG",
        "LAG(S)",
        "DLQ",
    ];
    if clustered {
        header.push("OWNER");
    }
    // The VERSION column only when a blue/green projection runs.
    let versioned = rows.iter().any(|r| r.version.is_some());
    if versioned {
        header.push("VERSION");
    }
    header.push("LAST ERROR");
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.name.clone(),
                r.state.to_owned(),
                dash(r.checkpoint),
                dash(r.head),
                dash(r.lag_events),
                dash(r.lag_seconds.map(|s| format!("{s:.1}"))),
                r.dead_letters.to_string(),
            ];
            if clustered {
                cells.push(match &r.owner {
                    Some(Owner {
                        node: Some(node),
                        lease_seconds_left: Some(left),
                    }) => format!("{node} ({left:.1}s)"),
                    _ => "-".to_owned(),
                });
            }
            if versioned {
                cells.push(match &r.version {
                    Some(v) => match v.progress {
                        Some(progress) if v.role == "building" => {
                            format!("v{} {} {:.0}%", v.version, v.role, progress * 100.0)
                        }
                        _ => format!("v{} {}", v.version, v.role),
                    },
                    None => "-".to_owned(),
                });
            }
            cells.push(r.last_error.clone().unwrap_or_else(|| "-".to_owned()));
            cells
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let last = cells.len() - 1;
        for (index, cell) in cells.iter().enumerate() {
            if index == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in &cells {
        line(row);
    }
    out
}

/// Failures found: a projection stopped, unreadable, or with dead letters.
fn outcome(rows: &[Row]) -> Outcome {
    let failing = rows
        .iter()
        .any(|r| matches!(r.state, "stopped" | "unknown") || r.dead_letters > 0);
    if failing {
        Outcome::Failures
    } else {
        Outcome::Ok
    }
}

fn print(rows: &[Row], json: bool) -> Result<(), Failed> {
    if json {
        let text = serde_json::to_string_pretty(rows)
            .map_err(|e| Failed::failure(format!("cannot write the status as JSON: {e}")))?;
        say(&text);
    } else {
        print!("{}", table(rows));
    }
    Ok(())
}

pub(super) async fn status(
    coordinator: &ProjectionCoordinator,
    json: bool,
    watch: bool,
    interval: f64,
) -> Result<Outcome, Failed> {
    if !watch {
        let rows = rows(coordinator).await;
        print(&rows, json)?;
        return Ok(outcome(&rows));
    }
    let interval = Duration::try_from_secs_f64(interval)
        .ok()
        .filter(|i| !i.is_zero())
        .ok_or_else(|| {
            Failed::usage(format!(
                "--interval {interval} is not a positive number of seconds"
            ))
        })?;
    let terminal = std::io::stdout().is_terminal();
    // One listener for the whole watch, so an interrupt between two refreshes is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let rows = rows(coordinator).await;
        if terminal {
            // Clear the screen and go home, so the table stays in place.
            print!("\x1b[2J\x1b[H");
        }
        print(&rows, json)?;
        if !terminal {
            say("");
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(outcome(&rows)),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, owner: Option<Owner>) -> Row {
        Row {
            name: name.to_owned(),
            state: "healthy",
            checkpoint: Some(7),
            head: Some(7),
            lag_events: Some(0),
            lag_seconds: Some(0.0),
            dead_letters: 0,
            last_error: None,
            owner,
            version: None,
        }
    }

    #[test]
    fn the_owner_column_shows_on_a_cluster_only() {
        let plain = table(&[row("orders", None)]);
        assert!(!plain.contains("OWNER"), "{plain}");
        let clustered = table(&[
            row(
                "orders",
                Some(Owner {
                    node: Some("node-b".to_owned()),
                    lease_seconds_left: Some(3.25),
                }),
            ),
            row(
                "totals",
                Some(Owner {
                    node: None,
                    lease_seconds_left: None,
                }),
            ),
        ]);
        let lines: Vec<&str> = clustered.lines().collect();
        assert!(lines[0].contains("DLQ  OWNER"), "{clustered}");
        assert!(lines[1].contains("node-b (3.2s)"), "{clustered}");
        assert!(lines[2].contains(" -  "), "{clustered}");
    }

    #[test]
    fn both_versions_of_a_blue_green_projection_show_with_the_progress_of_the_new_one() {
        let mut serving = row("orders@v1", None);
        serving.version = Some(Version {
            version: 1,
            role: "serving".to_owned(),
            progress: Some(1.0),
        });
        let mut building = row("orders@v2", None);
        building.version = Some(Version {
            version: 2,
            role: "building".to_owned(),
            progress: Some(0.426),
        });
        let text = table(&[serving, building, row("totals", None)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("VERSION"), "{text}");
        assert!(lines[1].contains("v1 serving"), "{text}");
        assert!(lines[2].contains("v2 building 43%"), "{text}");
        assert!(!table(&[row("totals", None)]).contains("VERSION"));
    }
}
