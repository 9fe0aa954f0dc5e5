//! A copy interrupted before its checksums are verified leaves its target
//! marked incomplete: `status` (exit 7) and `verify` (exit 6) refuse it, a
//! copy without `--force` is refused, and `copy --force` clears the mark.
//! On a SQLite and a PostgreSQL target (the source is the other dialect, so
//! the copy waits on the network between batches and can be stopped there,
//! as a killed process stops).

mod common;

use common::{assert_exit, stderr, stdout, Backend};

use std::future::Future;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use persist::{CopyEvent, CopyOptions, NewAccount};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_persist");

fn persist(args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run persist")
}

async fn interrupted_copy_is_flagged(target: Backend) {
    let source = match target {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    }
    .fresh()
    .await;
    for i in 0..4 {
        let email = format!("p{i}@example.com");
        let name = format!("player{i}");
        let new = NewAccount {
            email: &email,
            username: &name,
            pass_hash: b"h",
            created_at: 1,
        };
        common::fixtures::register(&source.db, &new).await.unwrap();
    }
    let (to_url, _place) = target.empty().await;
    let to = persist::open(&persist::Config::from_url(&to_url).unwrap())
        .await
        .unwrap();

    // Stop the copy at its first committed batch, as a kill would.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let options = CopyOptions {
        batch_size: 1,
        ..CopyOptions::default()
    };
    let copy = persist::copy(&source.db, &to, &options, move |e| {
        if matches!(e, CopyEvent::BatchCopied { .. }) {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let mut copy = Box::pin(copy);
    let finished = std::future::poll_fn(|cx| match copy.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r.map(|_| ()))),
        Poll::Pending if stop.load(Ordering::SeqCst) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await;
    assert!(
        finished.is_none(),
        "the copy was not interrupted: {finished:?}"
    );
    drop(copy);
    to.close().await;

    // Every gate refuses the half-copied target.
    let o = persist(&["--database-url", &to_url, "status"]);
    assert_exit(&o, 7, "status on an incomplete copy");
    assert!(
        stderr(&o).contains("copy that did not finish"),
        "{}",
        stderr(&o)
    );
    let o = persist(&["--database-url", &to_url, "status", "--json"]);
    assert_exit(&o, 7, "status --json on an incomplete copy");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["status"], "incomplete_copy");
    assert_eq!(v["up_to_date"], false);
    // The readiness check says why (what an orchestrator's probe sees).
    let probe = persist::open(&persist::Config::from_url(&to_url).unwrap())
        .await
        .unwrap();
    let h = probe.health().await;
    assert!(h.live && !h.ready, "{h:?}");
    assert!(
        h.incomplete
            .as_deref()
            .is_some_and(|r| r.contains("unfinished copy")),
        "{h:?}"
    );
    probe.close().await;
    let o = persist(&["--database-url", &to_url, "verify", "--json"]);
    assert_exit(&o, 6, "verify on an incomplete copy");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["incomplete_copy"].clone()),
        (false.into(), true.into())
    );

    // Again without --force: refused (the target holds rows).
    let copy_args = ["copy", "--from", &source.url, "--to", &to_url];
    assert_exit(&persist(&copy_args), 1, "copy again without --force");
    // --force finishes the job and clears the mark.
    let mut forced = copy_args.to_vec();
    forced.push("--force");
    assert_exit(&persist(&forced), 0, "copy --force");
    assert_exit(
        &persist(&["--database-url", &to_url, "status"]),
        0,
        "status after --force",
    );
    let o = persist(&["--database-url", &to_url, "verify", "--json"]);
    assert_exit(&o, 0, "verify after --force");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["incomplete_copy"], false);
    let probe = persist::open(&persist::Config::from_url(&to_url).unwrap())
        .await
        .unwrap();
    let h = probe.health().await;
    assert!(h.ready && h.incomplete.is_none(), "{h:?}");
    probe.close().await;
    source.close().await;
}

both_backends! {
    backend interrupted_copy_is_flagged,
}
