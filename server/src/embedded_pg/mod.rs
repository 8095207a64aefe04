//! The embedded PostgreSQL default: when no `DATABASE_URL` is given, the server
//! runs a private cluster in its data folder with the system's `initdb` and
//! `pg_ctl`, on a free loopback port (the same one across restarts while it is
//! free, [`PORT_FILE`]), and stops it on exit. Only holders of its password get
//! in ([`auth`]).
//!
//! `initdb` refuses to run as root, so as root the cluster belongs to the
//! `postgres` system user (Debian's package creates it) and the tools run as it;
//! the password file stays with the account running maelab.

mod auth;
mod private_file;

use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

pub use auth::PASSWORD_FILE;
use auth::Password;

/// The port the cluster last listened on, in the data folder. A restart takes
/// it again when it is free, so a URL handed out before (a worker's
/// `database-url`) still reaches the database after the server restarts.
pub const PORT_FILE: &str = "postgres-port";

/// Role and database the embedded cluster serves.
const ROLE: &str = "maelab";
const DATABASE: &str = "maelab";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "PostgreSQL's {0} was not found; run scripts/setup (installs Debian's postgresql) or set DATABASE_URL"
    )]
    MissingTool(&'static str),
    #[error(
        "running as root, but there is no `postgres` user to own the embedded cluster; install Debian's postgresql or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("embedded PostgreSQL data folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} must be a private file of the account running maelab: it is {reason}")]
    NotPrivate { path: PathBuf, reason: String },
    #[error(
        "the embedded PostgreSQL in {cluster} refuses the password in {password_file}; restore the file written when the cluster was created, or set DATABASE_URL"
    )]
    WrongPassword {
        cluster: PathBuf,
        password_file: PathBuf,
    },
    #[error("embedded PostgreSQL started but cannot be reached: {0}")]
    Connect(#[from] sqlx::Error),
}

/// A running private cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster: PathBuf,
    port: u16,
    bin: PathBuf,
    owner: Option<nix::unistd::User>,
    password: Password,
    password_file: PathBuf,
    port_file: PathBuf,
    /// Whether this process started the cluster (and so stops it).
    started: bool,
}

impl EmbeddedPostgres {
    /// Start the cluster in `data_dir/postgres` (creating it on first use), or
    /// reuse one already running there; a stale pid file left by a crash is
    /// cleared first. A cluster that still trusts local connections (made by
    /// an older maelab) gets a password first.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedPgError> {
        let bin = find_bin_dir()?;
        let owner = if nix::unistd::geteuid().is_root() {
            Some(
                nix::unistd::User::from_name("postgres")
                    .ok()
                    .flatten()
                    .ok_or(EmbeddedPgError::NoUnprivilegedUser)?,
            )
        } else {
            None
        };
        // Ours alone when we make it; as root, the cluster's OS user must
        // still pass through it to reach its own folder.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(if owner.is_some() { 0o711 } else { 0o700 })
            .create(data_dir)
            .map_err(|source| io_err(data_dir, source))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|source| io_err(data_dir, source))?;
        let cluster = data_dir.join("postgres");
        let password_file = data_dir.join(PASSWORD_FILE);
        let password = auth::load_or_create(&password_file)?;
        let mut pg = Self {
            cluster,
            port: 0,
            bin,
            owner,
            password,
            password_file,
            port_file: data_dir.join(PORT_FILE),
            started: false,
        };
        if !pg.cluster.join("PG_VERSION").exists() {
            pg.init(&data_dir)?;
        }
        match pg.running_port() {
            Some(port) => {
                tracing::info!(port, cluster = %pg.cluster.display(), "reusing running embedded PostgreSQL");
                pg.port = port;
            }
            None => {
                pg.clear_stale_pid()?;
                pg.port = match remembered_free_port(&pg.port_file) {
                    Some(port) => port,
                    None => free_port().map_err(|source| io_err(&pg.cluster, source))?,
                };
                pg.pg_ctl_start()?;
                pg.started = true;
                if let Err(e) = std::fs::write(&pg.port_file, format!("{}\n", pg.port)) {
                    // Only a restart's choice of port depends on it.
                    tracing::warn!(path = %pg.port_file.display(), error = %e, "cannot remember the port");
                }
                tracing::info!(port = pg.port, cluster = %pg.cluster.display(), "started embedded PostgreSQL");
            }
        }
        pg.prepare().await?;
        Ok(pg)
    }

    /// URL of the service database, password included: keep it from other accounts.
    pub fn url(&self) -> String {
        format!(
            "postgres://{ROLE}:{}@127.0.0.1:{}/{DATABASE}",
            self.password.as_str(),
            self.port
        )
    }

    /// Write [`Self::url`] to `path` for workers on this host: mode 0600, owned
    /// by the account running maelab, replaced whole.
    pub fn write_url_file(&self, path: &Path) -> Result<(), EmbeddedPgError> {
        private_file::write(path, format!("{}\n", self.url()).as_bytes(), None)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop the cluster if this process started it (fast shutdown: open
    /// connections are closed, committed data is safe).
    pub fn stop(mut self) -> Result<(), EmbeddedPgError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), EmbeddedPgError> {
        if !self.started {
            return Ok(());
        }
        self.started = false;
        let cluster = self.cluster.display().to_string();
        self.run(
            "pg_ctl stop",
            "pg_ctl",
            &["-D", &cluster, "-m", "fast", "-w", "-t", "30", "stop"],
        )?;
        tracing::info!(cluster, "stopped embedded PostgreSQL");
        Ok(())
    }

    /// `initdb` with the password already in place: no moment when the
    /// cluster trusts anyone.
    fn init(&self, data_dir: &Path) -> Result<(), EmbeddedPgError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.cluster)
            .map_err(|source| io_err(&self.cluster, source))?;
        if let Some(owner) = &self.owner {
            nix::unistd::chown(&self.cluster, Some(owner.uid), Some(owner.gid))
                .map_err(|e| io_err(&self.cluster, e.into()))?;
        }
        // initdb (as the cluster's owner) reads the password from a file, not
        // from its command line where `ps` would show it.
        let pwfile = TempSecret(data_dir.join(".initdb-password"));
        private_file::write(
            &pwfile.0,
            format!("{}\n", self.password.as_str()).as_bytes(),
            self.owner.as_ref(),
        )?;
        let cluster = self.cluster.display().to_string();
        let pwfile_arg = format!("--pwfile={}", pwfile.0.display());
        self.run(
            "initdb",
            "initdb",
            &[
                "-D",
                &cluster,
                "-U",
                ROLE,
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                &pwfile_arg,
                "--encoding=UTF8",
                "--no-locale",
            ],
        )?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), EmbeddedPgError> {
        let cluster = self.cluster.display().to_string();
        let log = self.cluster.join("server.log").display().to_string();
        // No Unix socket: the cluster folder may sit on a long path, TCP on
        // loopback is all maelab uses, and a socket in a shared folder would
        // be one more door to guard.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            self.port
        );
        self.run(
            "pg_ctl start",
            "pg_ctl",
            &[
                "-D", &cluster, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )
        .map_err(|e| match e {
            EmbeddedPgError::Command { what, detail } => EmbeddedPgError::Command {
                what,
                detail: format!("{detail} (see {log})"),
            },
            other => other,
        })?;
        Ok(())
    }

    /// The port of a postmaster that really runs on this cluster, from its pid
    /// file. A pid that now belongs to another process does not count.
    fn running_port(&self) -> Option<u16> {
        let text = std::fs::read_to_string(self.cluster.join("postmaster.pid")).ok()?;
        let mut lines = text.lines();
        let pid: i32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "postgres").then_some(port)
    }

    fn clear_stale_pid(&self) -> Result<(), EmbeddedPgError> {
        let pid_file = self.cluster.join("postmaster.pid");
        if pid_file.exists() {
            tracing::warn!(path = %pid_file.display(), "removing stale PostgreSQL pid file");
            std::fs::remove_file(&pid_file).map_err(|source| io_err(&pid_file, source))?;
        }
        Ok(())
    }

    /// On one connection: require the password (upgrading a trust cluster),
    /// then create the service database if it is missing.
    async fn prepare(&self) -> Result<(), EmbeddedPgError> {
        let admin = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username(ROLE)
            .password(self.password.as_str())
            .database("postgres")
            // The upgrade's ALTER ROLE carries the password.
            .disable_statement_logging();
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("28P01") => {
                    EmbeddedPgError::WrongPassword {
                        cluster: self.cluster.clone(),
                        password_file: self.password_file.clone(),
                    }
                }
                _ => EmbeddedPgError::Connect(e),
            })?;
        auth::require_password(
            &mut conn,
            &self.password,
            &self.cluster.join("pg_hba.conf"),
            self.owner.as_ref(),
        )
        .await?;
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            sqlx::query(&format!("create database {DATABASE}"))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Run a PostgreSQL tool, as the cluster's owner when we are root.
    fn run(&self, what: &str, tool: &str, args: &[&str]) -> Result<Output, EmbeddedPgError> {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args).current_dir(&self.cluster);
        if let Some(owner) = &self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(owner.uid.as_raw())
                .gid(owner.gid.as_raw())
                .env("HOME", &owner.dir)
                .env("USER", &owner.name);
        }
        let out = cmd.output().map_err(|e| EmbeddedPgError::Command {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // The last non-empty line is the one that says what went wrong.
            let detail = stderr
                .lines()
                .chain(stdout.lines())
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("no output")
                .to_string();
            return Err(EmbeddedPgError::Command {
                what: what.to_string(),
                detail,
            });
        }
        Ok(out)
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::error!(error = %e, "stopping embedded PostgreSQL");
        }
    }
}

/// A file removed when dropped, even when the step using it failed.
struct TempSecret(PathBuf);

impl Drop for TempSecret {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove temporary password file");
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> EmbeddedPgError {
    EmbeddedPgError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder holding `initdb` and `pg_ctl`: `MAELAB_PG_BIN`, then PATH, then
/// the newest /usr/lib/postgresql/*/bin (Debian keeps them off PATH).
fn find_bin_dir() -> Result<PathBuf, EmbeddedPgError> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("MAELAB_PG_BIN").map(PathBuf::from) {
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(EmbeddedPgError::MissingTool("initdb"))
        };
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(EmbeddedPgError::MissingTool("initdb"))
}

/// The port in `path` (see [`PORT_FILE`]) when nobody listens on it now.
fn remembered_free_port(path: &Path) -> Option<u16> {
    let port: u16 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (port != 0 && TcpListener::bind(("127.0.0.1", port)).is_ok()).then_some(port)
}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
