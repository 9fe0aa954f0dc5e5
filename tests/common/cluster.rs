//! A private, throwaway PostgreSQL cluster for tests that kill backends or
//! restart the server. The shared test server (`PERSIST_TEST_DATABASE_URL`)
//! is never stopped or restarted by a test: those tests start their own
//! cluster here.
//!
//! [`Cluster::start`] runs `initdb` in a temp dir (as the `postgres` user when
//! running as root, since `initdb` and `postgres` refuse root), with trust
//! authentication, on a free TCP port of 127.0.0.1 and with its Unix socket in
//! the temp dir. Dropping the cluster stops it (`pg_ctl stop -m immediate`)
//! and removes the dir, also when the test panics. Missing PostgreSQL
//! programs are a panic with the install command: tests never skip.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The user that owns the cluster when the tests run as root.
const CLUSTER_USER: &str = "postgres";

/// A running private cluster; see the module docs.
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    run_as: Option<&'static str>,
    running: AtomicBool,
}

impl Cluster {
    /// Creates and starts a fresh cluster. Panics (with the reason and the
    /// server log) when it cannot.
    pub fn start() -> Cluster {
        let (initdb, mut cluster) = Cluster::prepare("initdb");
        let mut initdb_err = String::new();
        let mut initialised = false;
        for locale in ["C.UTF-8", "C"] {
            let out = cluster.run(
                &initdb,
                &[
                    "-D",
                    path_str(&cluster.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    &format!("--locale={locale}"),
                ],
            );
            if out.status.success() {
                initialised = true;
                break;
            }
            initdb_err = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(&cluster.data);
        }
        assert!(initialised, "initdb failed: {initdb_err}");
        cluster.first_start();
        cluster
    }

    /// Creates and starts a streaming hot standby of `primary`
    /// (`pg_basebackup -R` with a replication slot of its own), on its own
    /// free port. Every method of [`Cluster`] works on it. Blocking.
    pub fn standby_of(primary: &Cluster) -> Cluster {
        let (basebackup, mut standby) = Cluster::prepare("pg_basebackup");
        let slot = format!(
            "standby_{}",
            standby
                .dir_path()
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        let port = primary.port.to_string();
        let out = standby.run(
            &basebackup,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                path_str(&standby.data),
                "-R",
                "-X",
                "stream",
                "-C",
                "-S",
                &slot,
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup from port {port} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        standby.first_start();
        standby
    }

    /// Promotes a standby to a primary (`pg_ctl promote -w`). Blocking.
    pub fn promote(&self) {
        let out = self.pg_ctl(&["promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Pauses WAL replay on a standby (`pg_wal_replay_pause()`): it keeps
    /// answering reads, with a state that no longer advances.
    pub async fn pause_replay(&self) {
        self.connect("postgres")
            .await
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap_or_else(|e| panic!("pg_wal_replay_pause: {e}"));
    }

    /// Resumes WAL replay on a standby (`pg_wal_replay_resume()`).
    pub async fn resume_replay(&self) {
        self.connect("postgres")
            .await
            .batch_execute("SELECT pg_wal_replay_resume()")
            .await
            .unwrap_or_else(|e| panic!("pg_wal_replay_resume: {e}"));
    }

    /// Waits (up to 30 s, else panics) until this standby has replayed
    /// everything `primary` had written when the call began.
    pub async fn wait_caught_up(&self, primary: &Cluster) {
        let target: String = primary
            .connect("postgres")
            .await
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .expect("pg_current_wal_lsn")
            .get(0);
        let me = self.connect("postgres").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let done: bool = me
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&target],
                )
                .await
                .expect("pg_last_wal_replay_lsn")
                .get(0);
            if done {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the standby on port {} did not reach {target} in 30 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Finds `program` and the server's `pg_ctl`, and makes the temp dir
    /// (owned by the cluster user) and the not-yet-started cluster.
    fn prepare(program: &str) -> (PathBuf, Cluster) {
        let found = find_pg_bin(program).unwrap_or_else(|| {
            panic!(
                "{program} not found on PATH or in /usr/lib/postgresql/*/bin: this test needs \
                 the PostgreSQL server programs (apt-get install -y postgresql)"
            )
        });
        let bindir = std::fs::canonicalize(&found)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let pg_ctl = bindir
            .map(|d| d.join("pg_ctl"))
            .filter(|p| p.is_file())
            .or_else(|| find_pg_bin("pg_ctl"))
            .unwrap_or_else(|| panic!("found {} but no pg_ctl", found.display()));

        let run_as = if is_root() { Some(CLUSTER_USER) } else { None };
        // The cluster user must reach the directory: /tmp, not root's TMPDIR.
        let dir = match run_as {
            Some(_) => tempfile::Builder::new()
                .prefix("persist-pg-")
                .tempdir_in("/tmp"),
            None => tempfile::Builder::new().prefix("persist-pg-").tempdir(),
        }
        .expect("create the cluster's temp dir");
        if let Some(user) = run_as {
            chown(user, dir.path());
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let cluster = Cluster {
            data,
            log,
            port: 0,
            pg_ctl,
            run_as,
            running: AtomicBool::new(false),
            dir: Some(dir),
        };
        (found, cluster)
    }

    /// The first start, on a free port. A free port can be taken between the
    /// probe and the start: retry.
    fn first_start(&mut self) {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port();
            let out = self.pg_ctl(&["-o", &self.server_options(), "start"]);
            if out.status.success() {
                self.running.store(true, Ordering::SeqCst);
                return;
            }
            last = format!(
                "{}{}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        panic!("the private PostgreSQL cluster did not start: {last}");
    }

    fn server_options(&self) -> String {
        let sock_dir = self.dir_path().display().to_string();
        format!(
            "-c listen_addresses=127.0.0.1 -p {} -k '{sock_dir}' -c max_connections=100 \
             -c fsync=on -c log_min_messages=warning",
            self.port
        )
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the `postgres` database, as superuser `postgres`, no TLS.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// URL of database `db` of this cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// A plain tokio-postgres connection to database `db` (its connection
    /// task is spawned on the current runtime).
    pub async fn try_connect(
        &self,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg: tokio_postgres::Config = self.url_for(db).parse().expect("cluster URL");
        cfg.connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// As [`Cluster::try_connect`], panicking on failure.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        self.try_connect(db)
            .await
            .unwrap_or_else(|e| panic!("connect to the private cluster ({db}): {e}"))
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        self.connect("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url_for(name)
    }

    /// `pg_ctl restart -m MODE -w` (`mode`: `smart`, `fast` or `immediate`).
    /// Blocking: call it from `spawn_blocking` inside a runtime.
    pub fn restart(&self, mode: &str) {
        let out = self.pg_ctl(&["-m", mode, "restart"]);
        assert!(
            out.status.success(),
            "pg_ctl restart -m {mode} failed: {}{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        self.running.store(true, Ordering::SeqCst);
    }

    /// `pg_ctl stop -m MODE -w`. Blocking.
    pub fn stop_with(&self, mode: &str) {
        let out = self.pg_ctl(&["-m", mode, "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop -m {mode} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.running.store(false, Ordering::SeqCst);
    }

    /// `pg_ctl stop -m fast -w`. Blocking.
    pub fn stop(&self) {
        self.stop_with("fast");
    }

    /// Starts a stopped cluster again, with the options of its first start
    /// (`postmaster.opts`). Blocking.
    pub fn start_again(&self) {
        let out = self.pg_ctl(&["-o", &self.server_options(), "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        self.running.store(true, Ordering::SeqCst);
    }

    /// The directory holding the data dir, the log and the Unix socket.
    pub fn dir_path(&self) -> &Path {
        self.dir.as_ref().expect("cluster dir").path()
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "-D",
            path_str(&self.data),
            "-l",
            path_str(&self.log),
            "-w",
            "-t",
            "60",
        ];
        all.extend_from_slice(args);
        self.run(&self.pg_ctl, &all)
    }

    /// Runs a PostgreSQL program, as the cluster user when running as root.
    /// Its output is captured; with `-l` the server itself writes to the log
    /// file, so it never holds our pipes open.
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args).current_dir(self.dir_path());
        cmd.output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            let out = self.pg_ctl(&["-m", "immediate", "stop"]);
            if !out.status.success() {
                // Last resort: kill the postmaster named in its pid file
                // (its children exit when it dies).
                if let Ok(pidfile) = std::fs::read_to_string(self.data.join("postmaster.pid")) {
                    if let Some(pid) = pidfile.lines().next() {
                        let _ = Command::new("kill").args(["-9", pid.trim()]).status();
                    }
                }
                eprintln!(
                    "warning: pg_ctl stop -m immediate failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                eprintln!("warning: could not remove the private cluster's dir: {e}");
            }
        }
    }
}

/// `chown USER: path`, panicking with the reason when it fails.
pub fn chown(user: &str, path: &Path) {
    let out = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(path)
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown {user}: {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("cluster paths are UTF-8")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port on 127.0.0.1")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A PostgreSQL program: PATH first, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_pg_bin(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if is_executable(&p) {
                return Some(p);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|s| s.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| is_executable(p))
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}
