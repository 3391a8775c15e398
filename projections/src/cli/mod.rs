//! The command line an application embeds (feature `cli`): projections are compiled into the
//! program, so its `main` hands its (not yet started) coordinator to an [`Operator`] and lets
//! it run the command the operator typed.
//!
//! ```text
//! status [--json] [--watch]       state, checkpoint, head, lag, dead letters, last error
//! run                             serve live until SIGINT or SIGTERM, then shut down gracefully
//! catch-up [NAME]                 one pass to the head, with progress
//! rebuild NAME | --all            reset and replay from the beginning, with progress
//! pause NAME [--reason TEXT]      durable: a running service pauses within its poll interval
//! resume NAME
//! dlq list [--projection P] [--status S]
//! dlq show ID                     the event, the error chain, attempts, first and last failure
//! dlq replay ID | --projection P  in position order, with a report
//! dlq resolve ID --reason TEXT
//! dlq stats                       per projection, most failures first
//! migrate                         the migration the application configured
//! ```
//!
//! Exit codes: `0` done and nothing wrong; `1` failures found (a projection stopped or with
//! dead letters, a replay that failed, an error of storage); `2` a usage error (an unknown
//! command, option or projection name). Errors print as one line on stderr.
//!
//! Progress (`catch-up`, `rebuild`) is a bar with events per second and the time left when
//! stderr is a terminal, and plain lines (at most one a second, and the last) otherwise.
//!
//! Commands other than `run` work on storage directly and can run beside a running service:
//! `pause`, `resume` and the dead-letter commands are seen by its workers (they read the
//! stored halt once per poll interval). Replaying from the command line applies the event in
//! the command's process, which helps projections whose read model is in the database; an
//! in-memory read model lives in the service, so replay through its handle instead.
//!
//! ```no_run
//! use std::sync::Arc;
//! use projections::cli::{Cli, Operator};
//! use projections::coordinator::ProjectionCoordinator;
//! use projections::{InMemoryEventStore, ProjectionRegistry};
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let registry = ProjectionRegistry::new(); // register the projections here
//!     let coordinator = ProjectionCoordinator::new(registry, Arc::new(InMemoryEventStore::new()));
//!     Operator::new(coordinator).run(Cli::parse_args()).await
//! }
//! ```

mod dlq;
mod progress;
mod status;

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::checkpoint::Halt;
use crate::coordinator::worker::error_chain;
use crate::coordinator::{CoordinatorError, ProjectionCoordinator, ProjectionReport};
use crate::dlq::DLQStatus;
use crate::projection::BoxError;
use crate::runner::RunnerError;
use crate::storage::BoxFuture;

/// The command line: one command.
#[derive(Debug, Parser)]
#[command(about = "Operate the projections of this program", long_about = None)]
#[non_exhaustive]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments; on a usage error prints it and exits with code 2 (and
    /// with 0 after `--help`).
    pub fn parse_args() -> Self {
        Self::parse()
    }
}

/// One command.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Every projection: state, checkpoint, head, lag, dead letters, last error.
    Status {
        /// As JSON, one array.
        #[arg(long)]
        json: bool,
        /// Again every `--interval` seconds, until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between two `--watch` refreshes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Serves the projections live until SIGINT or SIGTERM, then shuts down gracefully.
    Run,
    /// Catches up one projection (or all) to the head of the store, with progress.
    CatchUp {
        /// The projection; all when left out.
        name: Option<String>,
    },
    /// Resets a projection (or all) and replays the store from the beginning, with progress.
    Rebuild {
        /// The projection.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every projection.
        #[arg(long)]
        all: bool,
    },
    /// Pauses a projection, durably, until resumed.
    Pause {
        /// The projection.
        name: String,
        /// Why, as shown in its status.
        #[arg(long, default_value = "paused from the command line")]
        reason: String,
    },
    /// Resumes a paused or stopped projection.
    Resume {
        /// The projection.
        name: String,
    },
    /// The dead-letter queue.
    Dlq {
        /// What to do with it.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Applies the storage migrations the program configured.
    Migrate,
}

/// A dead-letter command.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum DlqCommand {
    /// Lists entries, oldest first.
    List {
        /// Only this projection's.
        #[arg(long)]
        projection: Option<String>,
        /// Only entries with this status: failed, retrying or resolved.
        #[arg(long, value_parser = parse_status)]
        status: Option<DLQStatus>,
    },
    /// One entry in full.
    Show {
        /// The entry.
        id: i64,
    },
    /// Replays one entry, or every unresolved entry of a projection in position order.
    Replay {
        /// The entry.
        #[arg(required_unless_present = "projection", conflicts_with = "projection")]
        id: Option<i64>,
        /// Every unresolved entry of this projection.
        #[arg(long)]
        projection: Option<String>,
    },
    /// Marks an entry done with, without applying it.
    Resolve {
        /// The entry.
        id: i64,
        /// Why (recorded as who resolved it).
        #[arg(long)]
        reason: String,
    },
    /// Unresolved entries per projection, most first, with the first and last failure.
    Stats,
}

fn parse_status(text: &str) -> Result<DLQStatus, String> {
    DLQStatus::parse(text)
        .ok_or_else(|| format!("`{text}` is not a status: failed, retrying or resolved"))
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Done, nothing wrong (exit code 0).
    Ok,
    /// Failures found (exit code 1).
    Failures,
    /// A usage error (exit code 2).
    Usage,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        ExitCode::from(match outcome {
            Outcome::Ok => 0,
            Outcome::Failures => 1,
            Outcome::Usage => 2,
        })
    }
}

/// A command's failure: one line, and the exit code it means.
#[derive(Debug)]
pub(crate) struct Failed {
    message: String,
    outcome: Outcome,
}

impl Failed {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            outcome: Outcome::Usage,
        }
    }

    pub(crate) fn failure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            outcome: Outcome::Failures,
        }
    }
}

impl From<CoordinatorError> for Failed {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::UnknownProjection(_) => Self::usage(error.to_string()),
            other => Self::failure(error_chain(&other)),
        }
    }
}

impl From<RunnerError> for Failed {
    fn from(error: RunnerError) -> Self {
        Self::failure(error_chain(&error))
    }
}

type Migrate = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), BoxError>> + Send>;

/// Runs a [`Command`] on an application's coordinator (not yet started).
pub struct Operator {
    coordinator: ProjectionCoordinator,
    migrate: Option<Migrate>,
    shutdown_deadline: Duration,
    #[cfg(feature = "http")]
    http: Option<(std::net::SocketAddr, crate::http::HttpOptions)>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").finish_non_exhaustive()
    }
}

impl Operator {
    /// Commands on `coordinator`'s projections and store.
    pub fn new(coordinator: ProjectionCoordinator) -> Self {
        Self {
            coordinator,
            migrate: None,
            shutdown_deadline: Duration::from_secs(30),
            #[cfg(feature = "http")]
            http: None,
        }
    }

    /// What `migrate` runs.
    #[must_use]
    pub fn migrate<F, Fut>(mut self, migrate: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.migrate = Some(Box::new(move || Box::pin(migrate())));
        self
    }

    /// How long `run` lets the workers finish their batch in hand at shutdown (30 s).
    #[must_use]
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// During `run`, serves health, readiness, metrics and status over HTTP on `address`
    /// (see [`http`](crate::http)).
    #[cfg(feature = "http")]
    #[must_use]
    pub fn serve_http(
        mut self,
        address: std::net::SocketAddr,
        options: crate::http::HttpOptions,
    ) -> Self {
        self.http = Some((address, options));
        self
    }

    /// Runs `cli`'s command; prints its output on stdout and an error as one line on stderr;
    /// returns the exit code.
    pub async fn run(self, cli: Cli) -> ExitCode {
        self.execute(cli).await.into()
    }

    /// Runs `cli`'s command and tells how it ended.
    pub async fn execute(mut self, cli: Cli) -> Outcome {
        match self.command(cli.command).await {
            Ok(outcome) => outcome,
            Err(failed) => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "error: {}", failed.message);
                failed.outcome
            }
        }
    }

    async fn command(&mut self, command: Command) -> Result<Outcome, Failed> {
        match command {
            Command::Status {
                json,
                watch,
                interval,
            } => status::status(&self.coordinator, json, watch, interval).await,
            Command::Run => self.serve().await,
            Command::CatchUp { name } => {
                let names = self.names(name.as_deref())?;
                progress::passes(&mut self.coordinator, &names, false).await
            }
            Command::Rebuild { name, all } => {
                let names = self.names(if all { None } else { name.as_deref() })?;
                progress::passes(&mut self.coordinator, &names, true).await
            }
            Command::Pause { name, reason } => {
                let projection = self.projection(&name)?;
                projection.halt_with(Halt::paused(reason.clone())).await?;
                say(&format!("paused {name}: {reason}"));
                Ok(Outcome::Ok)
            }
            Command::Resume { name } => {
                let projection = self.projection(&name)?;
                projection.resume().await?;
                say(&format!("resumed {name}"));
                Ok(Outcome::Ok)
            }
            Command::Dlq { command } => dlq::command(&mut self.coordinator, command).await,
            Command::Migrate => match self.migrate.take() {
                Some(migrate) => {
                    migrate().await.map_err(|e| {
                        Failed::failure(format!("migration failed: {}", error_chain(&*e)))
                    })?;
                    say("migrated");
                    Ok(Outcome::Ok)
                }
                None => Err(Failed::usage(
                    "this program configures no migration (Operator::migrate)",
                )),
            },
        }
    }

    /// `name`, checked, or every projection's name.
    fn names(&self, name: Option<&str>) -> Result<Vec<String>, Failed> {
        let registry = self.coordinator.registry();
        match name {
            Some(name) if registry.get(name).is_none() => Err(unknown(name)),
            Some(name) => Ok(vec![name.to_owned()]),
            None => Ok(registry
                .projections()
                .map(|p| p.name().to_owned())
                .collect()),
        }
    }

    fn projection(
        &mut self,
        name: &str,
    ) -> Result<&mut Box<dyn crate::registry::RegisteredProjection>, Failed> {
        self.coordinator
            .registry_mut()
            .get_mut(name)
            .ok_or_else(|| unknown(name))
    }

    /// `run`: live until SIGINT or SIGTERM.
    async fn serve(&mut self) -> Result<Outcome, Failed> {
        let shutdown = crate::CancellationToken::new();
        let signals = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                wait_for_signal().await;
                shutdown.cancel();
            }
        });
        let placeholder = ProjectionCoordinator::new(
            crate::ProjectionRegistry::new(),
            std::sync::Arc::clone(self.coordinator.store()),
        );
        let coordinator = std::mem::replace(&mut self.coordinator, placeholder);
        let handle = coordinator.start()?;
        #[cfg(feature = "http")]
        let server = match self.http.take() {
            Some((address, options)) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|e| Failed::failure(format!("cannot listen on {address}: {e}")))?;
                say(&format!("serving health on http://{address}"));
                Some(tokio::spawn(crate::http::serve(
                    listener,
                    handle.clone(),
                    options,
                    shutdown.clone(),
                )))
            }
            None => None,
        };
        say(&format!(
            "running {} projection(s); stop with Ctrl-C",
            handle.names().len()
        ));
        shutdown.cancelled().await;
        signals.abort();
        say("shutting down");
        let report = handle.shutdown(self.shutdown_deadline).await;
        #[cfg(feature = "http")]
        if let Some(server) = server {
            let _ = server.await;
        }
        let mut outcome = Outcome::Ok;
        for projection in &report.projections {
            say(&summary(projection));
            if !projection.is_ok() {
                outcome = Outcome::Failures;
            }
        }
        Ok(outcome)
    }
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) fn unknown(name: &str) -> Failed {
    Failed::usage(CoordinatorError::UnknownProjection(name.to_owned()).to_string())
}

/// One line on stdout.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// What one projection did, in one line.
pub(crate) fn summary(report: &ProjectionReport) -> String {
    let mut line = format!(
        "{}: {} applied, {} skipped, {} dead-lettered",
        report.name,
        report.applied,
        report.skipped + report.not_subscribed + report.other_tenant,
        report.dead_lettered.len()
    );
    if let Some(stopped) = &report.stopped {
        line.push_str(&format!("; stopped at {stopped}"));
    } else if let Some(error) = &report.error {
        line.push_str(&format!("; error: {}", error_chain(error)));
    }
    line
}
