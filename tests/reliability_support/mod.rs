//! Shared by the `reliability_*` test files (SQLite crash, disk full, many
//! writers, migrations under faults): the long/short switch, bounded loops,
//! re-executed child processes that are always killed and reaped, a small
//! deterministic PRNG and raw SQLite checks.
//!
//! Child processes re-execute the running test binary with
//! `--exact <child test> --ignored --nocapture` (`common::child_test_args`)
//! and an environment variable that carries the child's work. The child test
//! is `#[ignore]`d, so a plain run (libtest or nextest) never counts it as a
//! test; the parent asserts on what the child reports, so a child that did
//! nothing fails its parent.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Set to `1` for the long setting; unset (or anything else) is the short one
/// that CI runs.
pub const LONG_ENV: &str = "PERSIST_RELIABILITY_LONG";

/// True under `PERSIST_RELIABILITY_LONG=1`.
pub fn long() -> bool {
    std::env::var(LONG_ENV).is_ok_and(|v| v.trim() == "1")
}

/// `short` or `long`, by the setting.
pub fn scale<T>(short: T, long_value: T) -> T {
    if long() {
        long_value
    } else {
        short
    }
}

/// A loop bound: at most `loops` iterations and at most `budget` of time
/// (checked before each iteration; the first always runs).
pub struct Bound {
    pub loops: usize,
    pub budget: Duration,
    start: Instant,
    done: usize,
}

impl Bound {
    pub fn new(loops: usize, budget: Duration) -> Self {
        Bound {
            loops,
            budget,
            start: Instant::now(),
            done: 0,
        }
    }

    /// Whether another iteration may start; counts it when it may.
    pub fn next(&mut self) -> bool {
        if self.done >= self.loops || (self.done > 0 && self.start.elapsed() >= self.budget) {
            return false;
        }
        self.done += 1;
        true
    }

    pub fn done(&self) -> usize {
        self.done
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// splitmix64: tiny, deterministic, good enough to pick delays and ops.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A seed from the clock and the process id; printed in the figures line
    /// so a failing run can be replayed.
    pub fn seed_from_clock() -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One line a child printed, or the end of its output.
pub enum Line {
    Out(String),
    Eof,
}

/// A child process that is always killed (SIGKILL) and reaped, whatever path
/// the test takes. Its stdout is read line by line on a thread (so a chatty
/// child never blocks on a full pipe); its stderr is collected for failure
/// messages.
pub struct ChildProc {
    child: Option<Child>,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Line>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<String>>,
    /// Every complete stdout line received so far.
    pub seen: Vec<String>,
    /// A last line without its newline (the child died mid-write).
    pub partial: Option<String>,
}

/// Re-executes this test binary to run the test `child_test` as a child,
/// with the given environment. stdin is piped (a child may wait for a start
/// signal on it), stdout is read by [`ChildProc`], stderr is collected.
pub fn spawn_self(child_test: &str, env: &[(&str, String)]) -> ChildProc {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = Command::new(exe);
    cmd.args(crate::common::child_test_args(child_test))
        .env_remove(LONG_ENV)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildProc::spawn(cmd)
}

impl ChildProc {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn child process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let stdout_thread = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let s = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(Line::Out(s)).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(Line::Eof);
        });
        let stderr_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        ChildProc {
            child: Some(child),
            stdin,
            lines: rx,
            stdout_thread: Some(stdout_thread),
            stderr_thread: Some(stderr_thread),
            seen: Vec::new(),
            partial: None,
        }
    }

    fn take(&mut self, l: Line) -> bool {
        match l {
            Line::Out(s) => {
                if let Some(full) = s.strip_suffix('\n') {
                    self.seen.push(full.to_string());
                } else {
                    self.partial = Some(s);
                }
                true
            }
            Line::Eof => false,
        }
    }

    /// Waits up to `timeout` for a complete line satisfying `pred`; true when
    /// one arrived (it is in `seen`), false on timeout or end of output.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        if self.seen.iter().any(|l| pred(l)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let before = self.seen.len();
                    if !self.take(l) {
                        return false;
                    }
                    if self.seen[before..].iter().any(|l| pred(l)) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Sends SIGKILL (if still running), reaps the process and drains its
    /// output. Returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child not yet reaped");
        let _ = child.kill();
        let status = child.wait().expect("reap child");
        self.drain();
        status
    }

    /// Waits for the process to exit by itself (at most `timeout`, then it
    /// is killed), reaps it and drains its output.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("child not yet reaped");
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.drain();
                return st;
            }
            if Instant::now() >= deadline {
                let st = self.kill();
                panic!(
                    "child did not exit within {timeout:?} (killed: {st}); stderr: {}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn drain(&mut self) {
        self.stdin = None;
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        while let Ok(l) = self.lines.try_recv() {
            if !self.take(l) {
                break;
            }
        }
    }

    /// The child's stderr (complete once it was reaped).
    pub fn stderr_text(&mut self) -> String {
        match self.stderr_thread.take() {
            Some(t) if self.child.is_none() => t.join().unwrap_or_default(),
            Some(t) => {
                self.stderr_thread = Some(t);
                String::from("<child still running>")
            }
            None => String::new(),
        }
    }

    /// Its output so far, for a failure message.
    pub fn describe(&mut self) -> String {
        let err = self.stderr_text();
        format!("stdout {:?}; stderr {err}", self.seen)
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// True when the process was ended by SIGKILL.
pub fn killed_by_sigkill(st: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    st.signal() == Some(9)
}

/// `PRAGMA integrity_check` through a raw connection: the rows it returns
/// (`["ok"]` when the file is sound).
pub fn integrity_check(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).expect("raw sqlite connection");
    let mut st = c.prepare("PRAGMA integrity_check").expect("prepare");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("integrity_check")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("integrity_check rows")
}

/// Rows of `PRAGMA foreign_key_check` (orphaned child rows), as text.
pub fn foreign_key_violations(c: &rusqlite::Connection) -> Vec<String> {
    let mut st = c.prepare("PRAGMA foreign_key_check").expect("prepare");
    st.query_map([], |r| {
        Ok(format!(
            "{}:{:?}->{}",
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, String>(2)?
        ))
    })
    .expect("foreign_key_check")
    .collect::<rusqlite::Result<Vec<_>>>()
    .expect("foreign_key_check rows")
}

/// A current-thread runtime for a child's work loop.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Writes one line to stdout and flushes it, bypassing libtest's capture.
/// Used by children to report; a closed pipe (parent gone) ends the child.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    if out
        .write_all(buf.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(3);
    }
}

/// Whether a session of this database sits in `pg_sleep` (the slow
/// migration, past its first statements).
pub async fn pg_in_sleep(c: &tokio_postgres::Client) -> bool {
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event = 'PgSleep'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    n > 0
}
