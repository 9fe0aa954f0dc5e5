//! Production topology parts for tests: a private PgBouncer in front of a
//! PostgreSQL server. (Streaming standbys are [`Cluster::standby_of`].)
//!
//! [`Bouncer::start`] runs Debian's `pgbouncer` with its default settings
//! (no `ignore_startup_parameters`, no protocol-level prepared statements)
//! in the pool mode asked for, trust authentication, on a free TCP port of
//! 127.0.0.1, forwarding every database name to the target server. When
//! running as root it is started with `-u postgres` (PgBouncer refuses to
//! run as root). Dropping it kills it and removes its directory, also when
//! the test panics. A missing `pgbouncer` is a panic with the install
//! command (`scripts/test` installs it): tests never skip.
//!
//! [`Cluster::standby_of`]: super::cluster::Cluster::standby_of

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{chown, free_port, is_root};

/// PgBouncer's `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client connection, for its lifetime.
    Session,
    /// A server connection per transaction (per statement outside one).
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// A running private PgBouncer; see the module docs.
pub struct Bouncer {
    dir: Option<tempfile::TempDir>,
    child: Child,
    port: u16,
    mode: PoolMode,
}

impl Bouncer {
    /// Starts a PgBouncer in `mode` in front of the server listening on
    /// 127.0.0.1:`target_port`. Blocking; panics with its log when it does
    /// not start.
    pub fn start(target_port: u16, mode: PoolMode) -> Bouncer {
        Bouncer::start_with(target_port, mode, "")
    }

    /// As [`Bouncer::start`], with `extra` lines appended to the
    /// `[pgbouncer]` section (e.g. `ignore_startup_parameters = options`).
    pub fn start_with(target_port: u16, mode: PoolMode, extra: &str) -> Bouncer {
        let program = find_pgbouncer().unwrap_or_else(|| {
            panic!(
                "pgbouncer not found on PATH or in /usr/sbin: this test needs it \
                 (apt-get install -y pgbouncer; scripts/test installs it)"
            )
        });
        let root = is_root();
        let dir = if root {
            tempfile::Builder::new()
                .prefix("persist-bouncer-")
                .tempdir_in("/tmp")
        } else {
            tempfile::Builder::new()
                .prefix("persist-bouncer-")
                .tempdir()
        }
        .expect("create the bouncer's temp dir");
        if root {
            chown("postgres", dir.path());
        }
        let users = dir.path().join("userlist.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").expect("write userlist.txt");
        if root {
            chown("postgres", &users);
        }

        let mut dir = Some(dir);
        let mut last = String::new();
        for _ in 0..3 {
            let mut bouncer = spawn(
                &program,
                dir.take().expect("bouncer dir"),
                target_port,
                mode,
                extra,
            );
            if bouncer.wait_listening() {
                return bouncer;
            }
            // The probed port was taken meanwhile, or it failed (the log
            // says why): keep the dir, stop this one, try another port.
            last = bouncer.log_tail();
            dir = bouncer.dir.take();
        }
        panic!("pgbouncer did not start: {last}");
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pool mode.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// URL of database `db` through this bouncer, as `postgres`, no TLS.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self
            .dir
            .as_ref()
            .map(|d| d.path().join("pgbouncer.log"))
            .unwrap_or_default();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits up to 10 s for the port to accept connections; false when the
    /// process exited or the time ran out.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                eprintln!("warning: could not remove the bouncer's dir: {e}");
            }
        }
    }
}

/// Starts `pgbouncer` on a free port with its files in `dir`.
fn spawn(
    program: &Path,
    dir: tempfile::TempDir,
    target_port: u16,
    mode: PoolMode,
    extra: &str,
) -> Bouncer {
    let port = free_port();
    let ini = write_ini(dir.path(), target_port, port, mode, extra);
    let mut cmd = Command::new(program);
    if is_root() {
        cmd.args(["-u", "postgres"]);
    }
    let child = cmd
        .arg(&ini)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    Bouncer {
        dir: Some(dir),
        child,
        port,
        mode,
    }
}

/// Writes `pgbouncer.ini` into `dir`: the defaults, plus what a private
/// instance needs (its port, its files, trust auth, the fallback database).
fn write_ini(dir: &Path, target_port: u16, port: u16, mode: PoolMode, extra: &str) -> PathBuf {
    let d = dir.display();
    let ini = format!(
        "[databases]\n\
         * = host=127.0.0.1 port={target_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {d}/userlist.txt\n\
         admin_users = postgres\n\
         pool_mode = {mode}\n\
         max_client_conn = 500\n\
         logfile = {d}/pgbouncer.log\n\
         pidfile = {d}/pgbouncer.pid\n\
         {extra}\n",
        mode = mode.as_str()
    );
    let path = dir.join("pgbouncer.ini");
    std::fs::write(&path, ini).expect("write pgbouncer.ini");
    if is_root() {
        chown("postgres", &path);
    }
    path
}

fn find_pgbouncer() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.into_iter()
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
}
