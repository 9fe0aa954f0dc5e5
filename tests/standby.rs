//! A private primary and a streaming hot standby of it: reads work on the
//! standby, every write fails with [`Error::ReadOnlyServer`] (the CLI: one
//! line, exit code 8), and a multi-host URL with `target_session_attrs`
//! picks the server asked for.

mod common;

use std::process::Command;

use common::cluster::Cluster;
use common::{assert_exit, stderr};
use persist::{Config, Error, NewAccount};

const BIN: &str = env!("CARGO_BIN_EXE_persist");
const HASH: &[u8] = b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const T0: i64 = 1_700_000_000;

fn account<'a>(email: &'a str, username: &'a str) -> NewAccount<'a> {
    NewAccount {
        email,
        username,
        pass_hash: HASH,
        created_at: T0,
    }
}

fn assert_read_only<T: std::fmt::Debug>(r: persist::Result<T>, what: &str) {
    match r {
        Err(Error::ReadOnlyServer { message }) => {
            assert!(message.contains("25006"), "{what}: {message}");
        }
        other => panic!("{what}: expected Error::ReadOnlyServer, got {other:?}"),
    }
}

/// `persist ARGS --database-url URL`: exit 8 and one `error:` line that
/// says the server is a read-only standby.
fn assert_cli_refused(url: &str, args: &[&str]) {
    let o = Command::new(BIN)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(args)
        .args(["--database-url", url])
        .output()
        .expect("run persist");
    assert_exit(&o, 8, &format!("{args:?} on a standby"));
    let err = stderr(&o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("read-only (a hot standby)") && errors[0].contains("primary"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_standby_fail_with_one_clear_error() {
    let primary = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let primary_url = primary.create_database("game").await;
    let on_primary = persist::open(&Config::from_url(&primary_url).unwrap())
        .await
        .unwrap();
    on_primary.migrate().await.unwrap();
    let ada = common::register(&on_primary, &account("ada@x.invalid", "ada"))
        .await
        .unwrap();
    let standby = {
        let p = &primary;
        std::thread::scope(|s| s.spawn(|| Cluster::standby_of(p)).join().unwrap())
    };
    standby.wait_caught_up(&primary).await;
    let standby_url = standby.url_for("game");

    // Reads work; each kind of write fails with the one typed error and
    // changes nothing.
    let db = persist::open(&Config::from_url(&standby_url).unwrap())
        .await
        .unwrap();
    assert_eq!(
        db.accounts().get(ada.user_id).await.unwrap().username,
        "ada"
    );
    assert_read_only(
        db.accounts().create(&account("bob@x.invalid", "bob")).await,
        "create on the pool",
    );
    assert_read_only(
        db.accounts().update_last_login(ada.user_id, T0 + 1).await,
        "update on the pool",
    );
    let tx = db.begin().await.unwrap();
    assert_read_only(
        tx.accounts().create(&account("bob@x.invalid", "bob")).await,
        "create in a unit of work",
    );
    drop(tx);
    let swept = db.sessions().delete_expired(T0, 100).await;
    assert_read_only(swept, "sweep");
    assert_eq!(
        db.accounts().get(ada.user_id).await.unwrap().last_login_at,
        None
    );
    db.close().await;

    // The CLI: one line, exit code 8.
    assert_cli_refused(&standby_url, &["sweep-sessions"]);
    assert_cli_refused(&standby_url, &["demo", "--players", "4", "--tasks", "1"]);

    // A multi-host URL, standby first: read-write picks the primary,
    // read-only the standby.
    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/game?sslmode=disable",
        standby.port(),
        primary.port()
    );
    let rw = persist::open(
        &Config::from_url(&format!("{both}&target_session_attrs=read-write")).unwrap(),
    )
    .await
    .unwrap();
    let bob = common::register(&rw, &account("bob@x.invalid", "bob"))
        .await
        .unwrap();
    rw.close().await;
    standby.wait_caught_up(&primary).await;
    let ro = persist::open(
        &Config::from_url(&format!("{both}&target_session_attrs=read-only")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        ro.accounts().get(bob.user_id).await.unwrap().username,
        "bob"
    );
    assert_read_only(
        ro.accounts().update_last_login(bob.user_id, T0 + 2).await,
        "read-only target",
    );
    ro.close().await;
    on_primary.close().await;
}
