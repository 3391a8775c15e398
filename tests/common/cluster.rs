//! A throwaway PostgreSQL cluster, for fault tests that need the database itself to die.
//!
//! [`ThrowawayCluster::start`] runs the server's own `initdb` and `pg_ctl` in a fresh temporary
//! directory and starts the server on a free port of 127.0.0.1 (its Unix socket inside that
//! directory), so a test can stop, kill and restart it, or cut its connections, without touching
//! the shared server on port 5432. Each cluster has its own directory and port, so test binaries
//! running at the same time do not meet.
//!
//! The binaries are found in `$PG_BINDIR`, else in the highest version under
//! `/usr/lib/postgresql/*/bin`, else in `pg_config --bindir`, else on `PATH`. `initdb` and
//! `postgres` refuse to run as root: a test running as root runs them as the `postgres` OS user
//! (through `runuser`, or `su` where `runuser` is missing), which owns the directory.
//!
//! The lifecycle methods block the calling thread (a fraction of a second; every wait is bounded)
//! and take `&self`, so a test that needs other tasks to keep running meanwhile can share the
//! cluster in an `Arc` and call them from `tokio::task::spawn_blocking`, or use a multi-thread
//! runtime. Waits use real time: do not use the cluster under `start_paused = true`.
//!
//! Durability: the server runs with `fsync = off` (only an OS crash can lose data, and the tests
//! never crash the OS) but keeps `synchronous_commit = on`, so a transaction committed before a
//! [`ThrowawayCluster::kill`] is still there after [`ThrowawayCluster::start_again`].
//!
//! A test binary killed before its clusters are dropped leaves a running server and its
//! directory; the next [`ThrowawayCluster::start`] on the machine stops and removes those whose
//! test process is gone.

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

/// Temporary directories of clusters are named `projections-pg-<test pid>-<unique>`.
const DIR_PREFIX: &str = "projections-pg-";
/// The file in a cluster directory that records which test process made it.
const OWNER_FILE: &str = "owner";
/// The OS user that runs the server when the test runs as root.
const SERVER_USER: &str = "postgres";
/// How many ports `start` tries when the one it picked is taken before the server binds it.
const START_ATTEMPTS: u32 = 8;
/// The `-t` of `pg_ctl` (seconds): how long it waits for a start or a stop.
const PG_CTL_WAIT_SECS: u64 = 20;
/// Backstop for any one command, beyond the waits the command bounds itself.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `terminate_backends` waits to connect, and for each backend to exit.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest Unix socket path the server accepts (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why the throwaway cluster could not be set up or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No directory with both `initdb` and `pg_ctl` was found.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: set PG_BINDIR, or install the \
         server (/usr/lib/postgresql/*/bin or `pg_config --bindir`)"
    )]
    NoBinaries,
    /// The test runs as root and there is no usable `postgres` OS user to run the server.
    #[error("running as root, the server must run as the `{SERVER_USER}` OS user: {0}")]
    NoServerUser(String),
    /// A file system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("{what} failed ({status}):\n{output}")]
    Command {
        what: String,
        status: ExitStatus,
        output: String,
    },
    /// A command did not finish in time, and was killed.
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// Every port tried was taken by the time the server bound it.
    #[error("no free port after {attempts} attempts; last server log:\n{log}")]
    NoFreePort { attempts: u32, log: String },
    /// The temporary directory's path is not usable (not UTF-8, or too long for a socket).
    #[error("unusable temporary directory {0}")]
    BadPath(PathBuf),
    /// A query on the cluster failed.
    #[error("SQL on the throwaway cluster: {0}")]
    Sql(#[from] sqlx::Error),
    /// Connecting to the cluster did not finish in time.
    #[error("connecting to the throwaway cluster did not finish within {0:?}")]
    ConnectTimeout(Duration),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// A PostgreSQL server of the test's own, in a temporary directory, on a free port of
/// 127.0.0.1, reached as the trusted superuser `postgres`.
///
/// Dropping it kills the server (immediate shutdown) and removes the directory; drop never
/// panics.
#[derive(Debug)]
pub struct ThrowawayCluster {
    tools: Tools,
    dir: PathBuf,
    port: u16,
}

impl ThrowawayCluster {
    /// Creates the cluster (`initdb`: trust authentication, superuser `postgres`, UTF8, C
    /// locale), starts it on a free port and returns once it accepts connections.
    pub fn start() -> Result<Self, ClusterError> {
        let tools = Tools::find()?;
        reap_stale_clusters(&tools);
        let dir = create_cluster_dir(&tools)?;
        // From here on, dropping `cluster` cleans up whatever was made.
        let mut cluster = Self {
            tools,
            dir,
            port: 0,
        };
        cluster.init()?;
        let mut log = String::new();
        for _ in 0..START_ATTEMPTS {
            cluster.port = pick_port();
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err(StartFailure::PortTaken(attempt_log)) => log = attempt_log,
                Err(StartFailure::Other(error)) => return Err(error),
            }
        }
        Err(ClusterError::NoFreePort {
            attempts: START_ATTEMPTS,
            log,
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log so far (every start appends to it), for failure messages.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Fast shutdown (`pg_ctl stop -m fast`): rolls back open transactions, disconnects every
    /// client, checkpoints; returns once the server is down.
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.pg_ctl_stop("fast")
    }

    /// Immediate shutdown (`pg_ctl stop -m immediate`): the server and its backends quit at
    /// once, without a checkpoint, as in a crash; the next start recovers from the WAL.
    /// Returns once the server is down.
    pub fn kill(&self) -> Result<(), ClusterError> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts the stopped server again, on the same data directory and port, and returns once
    /// it accepts connections. Fails if something else took the port meanwhile.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        self.start_server().map_err(|failure| match failure {
            StartFailure::PortTaken(log) => ClusterError::NoFreePort { attempts: 1, log },
            StartFailure::Other(error) => error,
        })
    }

    /// Terminates the other client backends connected to the cluster's database (all but the
    /// backend with process id `except_pid`, when given, and the one this call connects with),
    /// waiting up to 10 s for each to exit. Returns how many were terminated. A connection
    /// whose backend was terminated fails on its next use.
    pub async fn terminate_backends(&self, except_pid: Option<i32>) -> Result<u64, ClusterError> {
        let mut connection =
            tokio::time::timeout(TERMINATE_TIMEOUT, PgConnection::connect(&self.url()))
                .await
                .map_err(|_| ClusterError::ConnectTimeout(TERMINATE_TIMEOUT))??;
        // `pg_terminate_backend(pid, timeout)` (PostgreSQL 14+) waits for the backend to exit,
        // so the caller's next query on it fails rather than racing the termination.
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, $2)) \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_type = 'client backend' \
               AND pid <> pg_backend_pid() AND pid IS DISTINCT FROM $1",
        )
        .bind(except_pid)
        .bind(i64::try_from(TERMINATE_TIMEOUT.as_millis()).unwrap_or(i64::MAX))
        .fetch_one(&mut connection)
        .await?;
        // Closing politely is not worth failing the call for.
        let _ = connection.close().await;
        Ok(u64::try_from(terminated).unwrap_or(0))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    fn init(&self) -> Result<(), ClusterError> {
        let socket_dir = self.socket_dir();
        // `.s.PGSQL.<port>` with the longest port.
        if socket_dir.as_os_str().len() + "/.s.PGSQL.65535".len() > MAX_SOCKET_PATH {
            return Err(ClusterError::BadPath(socket_dir));
        }
        self.tools.make_owned_dir(&socket_dir)?;
        let data_dir = path_str(&self.data_dir())?;
        self.tools.run(
            &self.dir,
            "initdb",
            &self.tools.bin("initdb"),
            &[
                "-D",
                &data_dir,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            COMMAND_TIMEOUT,
        )?;
        // Settings that never change go in the configuration file (no quoting through pg_ctl's
        // `-o`); the port goes on the command line, since a retried start changes it.
        let settings = format!(
            "\n# Throwaway test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             shared_buffers = 16MB\n",
            path_str(&socket_dir)?.replace('\'', "''"),
        );
        let config = self.data_dir().join("postgresql.conf");
        let mut contents =
            fs::read_to_string(&config).map_err(io_error("reading postgresql.conf"))?;
        contents.push_str(&settings);
        // Rewriting in place keeps the file's owner.
        fs::write(&config, contents).map_err(io_error("writing postgresql.conf"))
    }

    fn start_server(&self) -> Result<(), StartFailure> {
        let log_path = self.log_path();
        let log_before = fs::metadata(&log_path).map_or(0, |m| m.len());
        let data_dir = path_str(&self.data_dir()).map_err(StartFailure::Other)?;
        let log = path_str(&log_path).map_err(StartFailure::Other)?;
        let wait = PG_CTL_WAIT_SECS.to_string();
        let options = format!("-p {}", self.port);
        let started = self.tools.run(
            &self.dir,
            "pg_ctl start",
            &self.tools.bin("pg_ctl"),
            &[
                "start", "-D", &data_dir, "-l", &log, "-w", "-t", &wait, "-o", &options,
            ],
            COMMAND_TIMEOUT,
        );
        if let Err(error) = started {
            let attempt_log = fs::read(&log_path)
                .map(|bytes| {
                    let from = usize::try_from(log_before).unwrap_or(0).min(bytes.len());
                    String::from_utf8_lossy(&bytes[from..]).into_owned()
                })
                .unwrap_or_default();
            return Err(
                if attempt_log.contains("Address already in use")
                    || attempt_log.contains("could not create any TCP/IP sockets")
                {
                    StartFailure::PortTaken(attempt_log)
                } else {
                    StartFailure::Other(with_server_log(error, &attempt_log))
                },
            );
        }
        // `pg_ctl -w` waits for the postmaster to report itself ready; `pg_isready` checks that
        // it answers on the TCP port the tests use.
        let port = self.port.to_string();
        self.tools
            .run(
                &self.dir,
                "pg_isready",
                &self.tools.bin("pg_isready"),
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-t",
                    &wait,
                ],
                COMMAND_TIMEOUT,
            )
            .map(drop)
            .map_err(StartFailure::Other)
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), ClusterError> {
        let data_dir = path_str(&self.data_dir())?;
        let wait = PG_CTL_WAIT_SECS.to_string();
        self.tools
            .run(
                &self.dir,
                &format!("pg_ctl stop -m {mode}"),
                &self.tools.bin("pg_ctl"),
                &["stop", "-D", &data_dir, "-m", mode, "-w", "-t", &wait],
                COMMAND_TIMEOUT,
            )
            .map(drop)
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        // Fails harmlessly when the server is not running.
        let _ = self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

enum StartFailure {
    /// The server could not bind its port; the server log of the attempt.
    PortTaken(String),
    Other(ClusterError),
}

/// The server binaries, and how to run them.
#[derive(Debug)]
struct Tools {
    bin_dir: PathBuf,
    /// `Some` when the test runs as root: the server runs as this user instead.
    server_user: Option<ServerUser>,
}

#[derive(Debug)]
struct ServerUser {
    uid: u32,
    gid: u32,
    /// `runuser` where it exists; otherwise `su`.
    runuser: bool,
}

impl Tools {
    fn find() -> Result<Self, ClusterError> {
        let bin_dir = find_bin_dir().ok_or(ClusterError::NoBinaries)?;
        let server_user = if command_stdout("id", &["-u"]).as_deref() == Some("0") {
            let uid = command_stdout("id", &["-u", SERVER_USER]);
            let gid = command_stdout("id", &["-g", SERVER_USER]);
            let (Some(uid), Some(gid)) = (uid, gid) else {
                return Err(ClusterError::NoServerUser(format!(
                    "no `{SERVER_USER}` OS user"
                )));
            };
            let parse = |id: String| {
                id.parse::<u32>()
                    .map_err(|_| ClusterError::NoServerUser(format!("odd id `{id}`")))
            };
            Some(ServerUser {
                uid: parse(uid)?,
                gid: parse(gid)?,
                runuser: command_stdout("runuser", &["--version"]).is_some(),
            })
        } else {
            None
        };
        Ok(Self {
            bin_dir,
            server_user,
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A directory the server user owns.
    fn make_owned_dir(&self, dir: &Path) -> Result<(), ClusterError> {
        fs::create_dir(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        self.give_to_server_user(dir)
    }

    fn give_to_server_user(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(user) = &self.server_user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_error(
                format!("handing {} to {SERVER_USER}", path.display()),
            ))?;
        }
        Ok(())
    }

    /// The command that runs `program` as the server user.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        match &self.server_user {
            None => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            Some(ServerUser { runuser: true, .. }) => {
                let mut command = Command::new("runuser");
                command
                    .args(["-u", SERVER_USER, "--"])
                    .arg(program)
                    .args(args);
                command
            }
            Some(ServerUser { runuser: false, .. }) => {
                let line = std::iter::once(program.to_string_lossy().as_ref())
                    .chain(args.iter().copied())
                    .map(shell_quote)
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut command = Command::new("su");
                command.args([SERVER_USER, "-s", "/bin/sh", "-c", &format!("exec {line}")]);
                command
            }
        }
    }

    /// Runs `program` as the server user in `dir` (which that user can enter), its output
    /// going to a file in `dir`; kills it after `timeout`. Returns the output.
    fn run(
        &self,
        dir: &Path,
        what: &str,
        program: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, ClusterError> {
        static OUTPUTS: AtomicU64 = AtomicU64::new(0);
        // A file rather than a pipe: a server that pg_ctl starts must not hold our pipe open.
        let output_path = dir.join(format!(
            "command-{}.out",
            OUTPUTS.fetch_add(1, Ordering::Relaxed)
        ));
        let output = File::create(&output_path)
            .map_err(io_error(format!("creating output file for {what}")))?;
        let output_err = output
            .try_clone()
            .map_err(io_error("duplicating a file handle"))?;
        let mut child = self
            .command(program, args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output_err)
            .spawn()
            .map_err(io_error(format!("running {what} ({})", program.display())))?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = fs::remove_file(&output_path);
                    return Err(ClusterError::Timeout {
                        what: what.to_owned(),
                        timeout,
                    });
                }
                Err(source) => {
                    return Err(ClusterError::Io {
                        what: format!("waiting for {what}"),
                        source,
                    });
                }
            }
        };
        let output = fs::read(&output_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let _ = fs::remove_file(&output_path);
        if status.success() {
            Ok(output)
        } else {
            Err(ClusterError::Command {
                what: what.to_owned(),
                status,
                output,
            })
        }
    }
}

/// `$PG_BINDIR`; else the highest version under `/usr/lib/postgresql/*/bin` (Debian, Ubuntu);
/// else `pg_config --bindir`; else `PATH`. The first directory with `initdb` and `pg_ctl`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|dir| has_tools(dir));
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    if let Some(dir) = command_stdout("pg_config", &["--bindir"]).map(PathBuf::from)
        && has_tools(&dir)
    {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_tools(dir))
}

/// The trimmed standard output of a command that succeeded.
fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `error`, with the server's log of a failed start appended when it is a command's failure.
fn with_server_log(error: ClusterError, log: &str) -> ClusterError {
    match error {
        ClusterError::Command {
            what,
            status,
            output,
        } => ClusterError::Command {
            what,
            status,
            output: format!("{output}\nserver log:\n{log}"),
        },
        other => other,
    }
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn path_str(path: &Path) -> Result<String, ClusterError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| ClusterError::BadPath(path.to_owned()))
}

/// Where cluster directories go: the temporary directory, unless the server user could not
/// reach it (a root-only `$TMPDIR`), then `/tmp`.
fn clusters_parent(tools: &Tools) -> PathBuf {
    let temp = std::env::temp_dir();
    if tools.server_user.is_none() {
        return temp;
    }
    let reachable = temp
        .ancestors()
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if reachable {
        temp
    } else {
        PathBuf::from("/tmp")
    }
}

/// A new directory `projections-pg-<pid>-<unique>`, owned by the server user.
fn create_cluster_dir(tools: &Tools) -> Result<PathBuf, ClusterError> {
    let parent = clusters_parent(tools);
    let pid = std::process::id();
    let mut last_error = None;
    for _ in 0..16 {
        let dir = parent.join(format!("{DIR_PREFIX}{pid}-{:016x}", random_u64()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                if let Some(record) = owner_record() {
                    // Without the record the directory is never reaped; nothing worse.
                    let _ = fs::write(dir.join(OWNER_FILE), record);
                }
                if let Err(error) = tools.give_to_server_user(&dir) {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(error);
                }
                return Ok(dir);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(error) => {
                return Err(io_error(format!(
                    "creating a directory in {}",
                    parent.display()
                ))(error));
            }
        }
    }
    Err(io_error("creating a cluster directory")(
        last_error.unwrap_or_else(|| io::Error::other("no unique name")),
    ))
}

/// Who made a cluster directory: the test process and its PID namespace (the namespace, so that
/// a process that cannot see the owner never takes it for dead).
fn owner_record() -> Option<String> {
    let namespace = fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!(
        "{} {}",
        std::process::id(),
        namespace.to_string_lossy()
    ))
}

/// Stops the servers and removes the directories of clusters whose test process is gone (killed
/// before it could drop them). Best effort; only for clusters made in this PID namespace.
fn reap_stale_clusters(tools: &Tools) {
    let Some(namespace) =
        owner_record().and_then(|record| Some(record.split_once(' ')?.1.to_owned()))
    else {
        return;
    };
    let Ok(entries) = fs::read_dir(clusters_parent(tools)) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(record) = fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let Some((pid, owner_namespace)) = record.trim().split_once(' ') else {
            continue;
        };
        if owner_namespace != namespace
            || pid.parse::<u32>().is_err()
            || Path::new("/proc").join(pid).exists()
        {
            continue;
        }
        let data_dir = dir.join("data");
        if data_dir.join("postmaster.pid").exists() {
            let _ = tools
                .command(
                    &tools.bin("pg_ctl"),
                    &[
                        "stop",
                        "-D",
                        &data_dir.to_string_lossy(),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "10",
                    ],
                )
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// A port on 127.0.0.1 that is free now. Chosen at random below the ephemeral range, so that
/// an outgoing connection is unlikely to occupy it when the server restarts on it; never 5432.
/// Another process may still take it before the server binds it: `start` retries then.
fn pick_port() -> u16 {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 20000;
    if ephemeral_low > LOWEST + 1000 {
        let span = u64::from(ephemeral_low - LOWEST);
        for _ in 0..64 {
            let port = LOWEST + u16::try_from(random_u64() % span).unwrap_or(0);
            if port != 5432 && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    // Let the kernel choose (if even that fails, so will the server, and `start` says why).
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map_or(LOWEST, |address| address.port())
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
}
