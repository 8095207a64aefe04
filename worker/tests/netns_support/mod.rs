//! Two "hosts" on one Linux machine for the multi-host test: two network
//! namespaces joined by a veth pair (the server side at [`SERVER_ADDR`], the
//! worker side at [`WORKER_ADDR`]), each process in its own mount namespace
//! that hides the other host's folders, and the server host's services (a
//! private PostgreSQL cluster, the s3s-fs S3 server) listening on the server
//! address only.
//!
//! Everything is torn down on drop, also when a test fails; namespaces left
//! by a test process that was itself killed are removed by the next one.
//! Needs root and `ip` (iproute2, installed by `scripts/setup --test`).
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The server host's address on the veth pair.
pub const SERVER_ADDR: &str = "10.77.0.1";
/// The worker host's address on the veth pair.
pub const WORKER_ADDR: &str = "10.77.0.2";
/// Ports on the server host (its namespace is private, so fixed ports are free).
pub const PG_PORT: u16 = 5432;
pub const S3_PORT: u16 = 9000;
pub const HTTP_PORT: u16 = 8080;
/// The S3 server's credentials.
pub const S3_ACCESS_KEY: &str = "multi-host";
pub const S3_SECRET_KEY: &str = "multi-host-secret";

/// Namespaces this fixture creates are named `PREFIX<pid>-<n>{s,w}`.
const PREFIX: &str = "mlh";

/// Run a command to completion; panic with its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Remove namespaces of earlier test processes that are gone (killed before
/// their drop ran), with whatever still runs inside them.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_all_in(name);
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

/// SIGKILL every process in namespace `name`.
fn kill_all_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The two namespaces and the veth pair between them, and a scratch folder
/// with one sub-folder per host. Dropping it kills what runs inside, deletes
/// the namespaces and the scratch folder.
pub struct TwoHosts {
    pub server_ns: String,
    pub worker_ns: String,
    pub scratch: PathBuf,
    procs: Vec<Child>,
    pg: Option<PgCluster>,
}

impl TwoHosts {
    /// Create both namespaces (loopback up, veth addressed) and the scratch
    /// folder under `base` (not /tmp: each host gets its own /tmp).
    pub fn new(base: &Path) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the multi-host test needs root (network namespaces); CI runs tests as root"
        );
        assert!(
            Command::new("ip").arg("-V").output().is_ok(),
            "no `ip` command: run scripts/setup --test (installs iproute2)"
        );
        remove_stale_namespaces();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{PREFIX}{}-{n}", std::process::id());
        let scratch = base.join(&id);
        let _ = std::fs::remove_dir_all(&scratch);
        for dir in ["server", "worker1", "worker2", "host", "logs"] {
            std::fs::create_dir_all(scratch.join(dir)).expect("scratch dir");
        }
        let hosts = Self {
            server_ns: format!("{id}s"),
            worker_ns: format!("{id}w"),
            scratch,
            procs: Vec::new(),
            pg: None,
        };
        // From here on, Drop removes whatever was made.
        let (s, w) = (hosts.server_ns.as_str(), hosts.worker_ns.as_str());
        sh("ip", &["netns", "add", s]);
        sh("ip", &["netns", "add", w]);
        sh(
            "ip",
            &[
                "-n", s, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns",
                w,
            ],
        );
        for (ns, addr) in [(s, SERVER_ADDR), (w, WORKER_ADDR)] {
            sh(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "veth0",
                ],
            );
            sh("ip", &["-n", ns, "link", "set", "veth0", "up"]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    pub fn dir(&self, host: &str) -> PathBuf {
        self.scratch.join(host)
    }

    /// The path where each worker host sees its own folder (`worker1` or
    /// `worker2`): one path, different files per host, like two machines.
    pub fn host_dir(&self) -> PathBuf {
        self.scratch.join("host")
    }

    /// A command run in namespace `ns`, in a mount namespace of its own where
    /// `own` (a sub-folder of the scratch folder) is mounted at
    /// [`Self::host_dir`], every other host folder is hidden, and /tmp is
    /// empty: the process sees no file of another host, and works in its own.
    pub fn command(&self, ns: &str, own: &str, program: &Path, args: &[&str]) -> Command {
        let quote = |p: &Path| {
            let s = p.display().to_string();
            assert!(!s.contains('\''), "{s} holds a quote");
            format!("'{s}'")
        };
        let mut script = String::from("set -e\n");
        script += &format!(
            "mount --bind {} {}\n",
            quote(&self.dir(own)),
            quote(&self.host_dir())
        );
        for other in ["server", "worker1", "worker2"] {
            script += &format!("mount -t tmpfs tmpfs {}\n", quote(&self.dir(other)));
        }
        // The working folder too: a relative default path lands on this host.
        script += &format!(
            "mount -t tmpfs tmpfs /tmp\ncd {}\nexec \"$@\"\n",
            quote(&self.host_dir())
        );
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["--", "sh", "-c", &script, "sh"])
        .arg(program)
        .args(args);
        cmd
    }

    /// Start `cmd` with stdout and stderr into `logs/<name>.log`; it is
    /// killed (SIGKILL) when the fixture drops. Returns the log's path.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> (u32, PathBuf) {
        let log = self.scratch.join("logs").join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pid = child.id();
        self.procs.push(child);
        (pid, log)
    }

    /// SIGKILL the process `pid` started by [`Self::spawn`] and reap it.
    pub fn kill9(&mut self, pid: u32) {
        if let Some(i) = self.procs.iter().position(|c| c.id() == pid) {
            let mut child = self.procs.swap_remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process `pid` started by [`Self::spawn`] still runs.
    pub fn is_running(&mut self, pid: u32) -> bool {
        self.procs
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A private PostgreSQL cluster in `server/pg`, listening on the server
    /// address (workers reach it over the veth) and on a Unix socket in the
    /// scratch folder (for the test itself, which is on neither host).
    /// Returns the URL the test connects with; the database `maelab` exists.
    pub fn start_postgres(&mut self) -> String {
        let pg = PgCluster::start(self);
        let url = pg.socket_url("maelab");
        self.pg = Some(pg);
        url
    }

    /// The database URL for the hosts (over the veth).
    pub fn database_url(&self) -> String {
        format!("postgres://postgres@{SERVER_ADDR}:{PG_PORT}/maelab")
    }

    /// s3s-fs serving `server/s3` on the server address, with `bucket`
    /// already there (a bucket is a folder of its root).
    pub fn start_s3(&mut self, s3s_fs: &Path, bucket: &str) {
        let root = self.dir("server").join("s3");
        std::fs::create_dir_all(root.join(bucket)).expect("bucket folder");
        let port = S3_PORT.to_string();
        let root_arg = root.display().to_string();
        let args = [
            "--host",
            SERVER_ADDR,
            "--port",
            &port,
            "--access-key",
            S3_ACCESS_KEY,
            "--secret-key",
            S3_SECRET_KEY,
            &root_arg,
        ];
        // s3s-fs needs its root, so it is the one server-side process that
        // runs without the hiding mount namespace (it is still in the server's
        // network namespace, reachable from workers only over the veth).
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server_ns])
            .arg(s3s_fs)
            .args(args);
        let (_, log) = self.spawn("s3s-fs", cmd);
        self.wait_listening(&self.server_ns.clone(), SERVER_ADDR, S3_PORT, &log);
    }

    /// The AWS_* environment that reaches the S3 server.
    pub fn s3_env(&self) -> Vec<(String, String)> {
        maelab_core::s3_testing::TestS3 {
            endpoint: format!("http://{SERVER_ADDR}:{S3_PORT}"),
            access_key_id: S3_ACCESS_KEY.into(),
            secret_access_key: S3_SECRET_KEY.into(),
        }
        .options()
    }

    /// Wait until `addr:port` accepts connections inside namespace `ns`.
    pub fn wait_listening(&self, ns: &str, addr: &str, port: u16, log: &Path) {
        let target: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("address");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if in_namespace(ns, move || {
                std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
            }) {
                return;
            }
            assert!(
                Instant::now() < end,
                "nothing listens on {addr}:{port} in {ns}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for child in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pg) = self.pg.take() {
            pg.stop();
        }
        for ns in [&self.server_ns, &self.worker_ns] {
            kill_all_in(ns);
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("MAELAB_KEEP_MULTI_HOST").is_none() {
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
    }
}

/// Run `f` on a thread that joined namespace `ns`'s network: its sockets
/// are that host's. The test's own threads stay where they are.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = File::open(format!("/run/netns/{ns}")).expect("namespace handle");
    std::thread::spawn(move || {
        nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A private PostgreSQL cluster owned by the `postgres` system user (initdb
/// refuses root), trust authentication for the veth's subnet.
struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
}

impl PgCluster {
    fn start(hosts: &TwoHosts) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL in /usr/lib/postgresql: run scripts/setup")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").is_file())
            .max_by_key(|b| {
                b.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
            })
            .expect("initdb in /usr/lib/postgresql/*/bin: run scripts/setup");
        let pg_root = hosts.dir("server").join("pg");
        let (data, socket_dir) = (pg_root.join("data"), pg_root.join("sock"));
        std::fs::create_dir_all(&socket_dir).expect("pg dirs");
        sh(
            "chown",
            &["-R", "postgres:postgres", &pg_root.display().to_string()],
        );
        let initdb = bin.join("initdb").display().to_string();
        let data_arg = data.display().to_string();
        sh(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                &initdb,
                "-D",
                &data_arg,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules += "host all all 10.77.0.0/24 trust\n";
        std::fs::write(&hba, rules).expect("pg_hba.conf");
        let options = format!(
            "-p {PG_PORT} -c listen_addresses={SERVER_ADDR} -c unix_socket_directories='{}' \
             -c max_connections=200 -c fsync=off",
            socket_dir.display()
        );
        let pg_ctl = bin.join("pg_ctl").display().to_string();
        // In the cluster's folder: the `postgres` user cannot write to logs/.
        let log = pg_root.join("server.log");
        let log_arg = log.display().to_string();
        // pg_ctl forks the postmaster inside the server's network namespace.
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &hosts.server_ns,
                "runuser",
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data_arg,
                "-l",
                &log_arg,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        let cluster = Self {
            bin,
            data,
            socket_dir,
        };
        let psql = cluster.bin.join("psql").display().to_string();
        let sock = cluster.socket_dir.display().to_string();
        let port = PG_PORT.to_string();
        sh(
            &psql,
            &[
                "-h",
                &sock,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atqc",
                "create database maelab",
            ],
        );
        cluster
    }

    /// A URL through the Unix socket (sqlx takes the folder as `host`).
    fn socket_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{PG_PORT}/{database}?host={}",
            self.socket_dir.display()
        )
    }

    fn stop(self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.data.display().to_string();
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}
