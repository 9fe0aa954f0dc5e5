//! Issue 14: authenticating the server with libpq's `sslmode`s, client
//! certificates and channel binding, against private clusters with real
//! certificates (see `tests/common/tls_cluster.rs`): each mode's accept and
//! refuse cases on a host name (`localhost`) and an IP address
//! (`127.0.0.1`), with one clear line for every refusal.

mod common;

use std::time::Duration;

use common::tls_cluster::{set_mode, ServerCert, TlsCluster};
use persist::{Config, Db, Error, SslMode, SslRootCert};

const HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

async fn open(url: &str) -> persist::Result<Db> {
    let config = Config::from_url(url)?
        .with_connect_timeout(Duration::from_secs(10))
        .with_pool_size(4)
        .with_shared_read_connections(0);
    persist::open(&config).await
}

/// Opens, pings and returns the handle; panics with the server log.
async fn accepted(tls: &TlsCluster, url: &str) -> Db {
    let db = open(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: refused: {e}\n{}", tls.log_tail()));
    db.ping().await.unwrap();
    db
}

/// The refusal's message; asserts it is one line and holds every `want`.
async fn refused(url: &str, want: &[&str]) -> Error {
    let e = match open(url).await {
        Ok(db) => panic!("{url}: accepted, expected a refusal ({db:?})"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{url}: not one line: {msg}");
    for w in want {
        assert!(msg.contains(w), "{url}: {msg:?} lacks {w:?}");
    }
    e
}

fn param(name: &str, path: &std::path::Path) -> String {
    format!("{name}={}", path.display())
}

/// Every mode against a server whose certificate is right for both host
/// forms and signed by the CA given: all encrypted except the refused
/// plaintext; the unrelated CA refused whenever a root is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_against_the_right_certificate() {
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    let other = param("sslrootcert", &tls.pki.path("other-ca.crt"));
    for host in HOSTS {
        for params in [
            "sslmode=allow".to_string(),
            "sslmode=prefer".into(),
            "sslmode=require".into(),
            format!("sslmode=require&{ca}"),
            format!("sslmode=verify-ca&{ca}"),
            format!("sslmode=verify-full&{ca}"),
            format!("{ca}&sslmode=verify-full&channel_binding=require"),
        ] {
            let url = tls.alice_url(host, "tlsdb", &params);
            let db = accepted(&tls, &url).await;
            let flags = tls.ssl_flags("alice", "tlsdb").await;
            assert!(
                !flags.is_empty() && flags.iter().all(|s| *s),
                "{params}: {flags:?}"
            );
            db.close().await;
        }
        // Plaintext is refused by the server (hostnossl ... reject).
        let url = tls.alice_url(host, "tlsdb", "sslmode=disable");
        let e = refused(&url, &["rejects connection", "no encryption"]).await;
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        // A root the server's CA is not among: refused, also for `require`
        // (a root given makes libpq check the chain).
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = tls.alice_url(host, "tlsdb", &format!("sslmode={mode}&{other}"));
            let e = refused(
                &url,
                &["server certificate refused: unknown CA", "other-ca.crt"],
            )
            .await;
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        }
        // The platform's roots do not hold the test CA.
        let url = tls.alice_url(host, "tlsdb", "sslrootcert=system");
        assert_eq!(
            Config::from_url(&url).unwrap().ssl_mode(),
            SslMode::VerifyFull
        );
        refused(&url, &["sslrootcert=system"]).await;
    }
}

/// Every pooled connection is encrypted, as `pg_stat_ssl` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooled_connection_is_encrypted() {
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    for host in HOSTS {
        let url = tls.alice_url(host, "tlsdb", &format!("sslmode=verify-full&{ca}"));
        let db = accepted(&tls, &url).await;
        // Four units of work hold all four connections of the pool.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(db.begin().await.unwrap());
        }
        let flags = tls.ssl_flags("alice", "tlsdb").await;
        assert_eq!(flags, vec![true; 4], "{host}");
        for tx in held {
            tx.rollback().await.unwrap();
        }
        db.close().await;
        // The next host's check must not count these sessions.
        for _ in 0..100 {
            if tls.ssl_flags("alice", "tlsdb").await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `clientcert=verify-full`: the client certificate for `carol` is
/// accepted; none, a key readable by others, a missing key and unusable
/// root files are refused with the file named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates() {
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    let cert = param("sslcert", &tls.pki.path("client.crt"));
    let key = param("sslkey", &tls.pki.path("client.key"));
    let open_key = tls.pki.dir().join("client-open.key");
    std::fs::copy(tls.pki.path("client.key"), &open_key).unwrap();
    set_mode(&open_key, 0o644);
    let garbage = tls.pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let broken = tls.pki.dir().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();

    for host in HOSTS {
        let url = tls.url(
            "carol",
            host,
            "certdb",
            &format!("sslmode=verify-full&{ca}&{cert}&{key}"),
        );
        let config = Config::from_url(&url).unwrap();
        assert_eq!(
            config.ssl_client_cert(),
            Some((
                tls.pki.path("client.crt").as_path(),
                tls.pki.path("client.key").as_path()
            ))
        );
        let db = accepted(&tls, &url).await;
        assert_eq!(tls.ssl_flags("carol", "certdb").await, vec![true]);
        db.close().await;

        // No client certificate: the server refuses.
        let url = tls.url(
            "carol",
            host,
            "certdb",
            &format!("sslmode=verify-full&{ca}"),
        );
        refused(&url, &["certificate"]).await;

        // A key readable by others: refused before connecting.
        let url = tls.url(
            "carol",
            host,
            "certdb",
            &format!(
                "sslmode=verify-full&{ca}&{cert}&{}",
                param("sslkey", &open_key)
            ),
        );
        let e = refused(
            &url,
            &[
                &open_key.display().to_string(),
                "group or world access (mode 0644)",
            ],
        )
        .await;
        assert!(matches!(e, Error::Config(_)), "{e:?}");

        let missing = tls.pki.dir().join("missing.key");
        let url = tls.url(
            "carol",
            host,
            "certdb",
            &format!(
                "sslmode=verify-full&{ca}&{cert}&{}",
                param("sslkey", &missing)
            ),
        );
        let e = refused(&url, &["cannot read private key file", "missing.key"]).await;
        assert!(matches!(e, Error::Config(_)), "{e:?}");

        for (root, want) in [
            (&garbage, "holds no PEM certificate"),
            (
                &broken,
                "is not valid PEM: a BEGIN line without its END line",
            ),
            (&missing, "cannot read root certificate file"),
        ] {
            let url = tls.alice_url(
                host,
                "tlsdb",
                &format!("sslmode=verify-full&{}", param("sslrootcert", root)),
            );
            let e = refused(&url, &[want, &root.display().to_string()]).await;
            assert!(matches!(e, Error::Config(_)), "{e:?}");
        }
    }
}

/// An encrypted client key (PKCS#8, AES-256-CBC) with `sslpassword`: the
/// right passphrase is accepted; none or a wrong one are refused; no
/// message and no `Debug` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_client_key_with_sslpassword() {
    const PASSPHRASE: &str = "Kp4ssPhr4se";
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let encrypted = tls.pki.dir().join("client-enc.key");
    let out = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout"])
        .arg(format!("pass:{PASSPHRASE}"))
        .arg("-in")
        .arg(tls.pki.path("client.key"))
        .arg("-out")
        .arg(&encrypted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_mode(&encrypted, 0o600);
    let base = format!(
        "sslmode=verify-full&{}&{}&{}",
        param("sslrootcert", &tls.pki.path("ca.crt")),
        param("sslcert", &tls.pki.path("client.crt")),
        param("sslkey", &encrypted)
    );
    for host in HOSTS {
        let url = tls.url(
            "carol",
            host,
            "certdb",
            &format!("{base}&sslpassword={PASSPHRASE}"),
        );
        let config = Config::from_url(&url).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(PASSPHRASE), "{debug}");
        assert!(debug.contains(", ssl_key_password: Some(***), "), "{debug}");
        let db = accepted(&tls, &url).await;
        assert!(!format!("{db:?}").contains(PASSPHRASE));
        db.close().await;

        let url = tls.url("carol", host, "certdb", &base);
        let e = refused(
            &url,
            &["is encrypted: give its passphrase with sslpassword"],
        )
        .await;
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        let url = tls.url(
            "carol",
            host,
            "certdb",
            &format!("{base}&sslpassword=Kp4ssWr0ng"),
        );
        let e = refused(
            &url,
            &["cannot decrypt private key file", "wrong passphrase"],
        )
        .await;
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains("Kp4ss"), "{shown}");
        }
        // The builder sets the same passphrase.
        let config = Config::from_url(&tls.url("carol", host, "certdb", &base))
            .unwrap()
            .with_ssl_key_password(PASSPHRASE);
        assert!(!format!("{config:?}").contains(PASSPHRASE));
        persist::open(&config).await.unwrap().close().await;
    }
}

/// A certificate for `evil.example`, signed by the trusted CA:
/// `verify-full` refuses it naming the host and the certificate's names;
/// `verify-ca` and `require` (which do not check names) accept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_name_is_refused_by_verify_full_only() {
    let tls = TlsCluster::start(Some(ServerCert::WrongName)).await;
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    for host in HOSTS {
        let url = tls.alice_url(host, "tlsdb", &format!("sslmode=verify-full&{ca}"));
        let e = refused(
            &url,
            &[
                "server certificate refused: host name mismatch",
                &format!("host {host:?} is not among the names in the certificate (evil.example)"),
            ],
        )
        .await;
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        for params in [format!("sslmode=verify-ca&{ca}"), "sslmode=require".into()] {
            let db = accepted(&tls, &tls.alice_url(host, "tlsdb", &params)).await;
            db.close().await;
        }
    }
}

/// An expired certificate (for the right names, signed by the trusted CA)
/// is refused whenever the chain is checked; `require` without a root does
/// not check it, as in libpq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    let tls = TlsCluster::start(Some(ServerCert::Expired)).await;
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    for host in HOSTS {
        for mode in ["verify-full", "verify-ca", "require"] {
            let url = tls.alice_url(host, "tlsdb", &format!("sslmode={mode}&{ca}"));
            refused(
                &url,
                &["server certificate refused: expired certificate, not valid after 2020-02-01 00:00:00 UTC"],
            )
            .await;
        }
        let db = accepted(&tls, &tls.alice_url(host, "tlsdb", "sslmode=require")).await;
        db.close().await;
    }
}

/// Over a Unix socket no mode uses TLS, as in libpq (the server offers
/// none there): even `verify-full` connects, in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_never_use_tls() {
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let dir: String = tls
        .cluster
        .connect("postgres")
        .await
        .query_one("SHOW unix_socket_directories", &[])
        .await
        .unwrap()
        .get(0);
    let dir = dir.split(',').next().unwrap().trim().replace('/', "%2F");
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = tls.url("alice", &dir, "tlsdb", &format!("sslmode={mode}&{ca}"));
        let db = accepted(&tls, &url).await;
        assert_eq!(tls.ssl_flags("alice", "tlsdb").await, vec![false], "{mode}");
        db.close().await;
        for _ in 0..100 {
            if tls.ssl_flags("alice", "tlsdb").await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A server without TLS: the modes that need TLS are refused saying so;
/// `allow` and `prefer` connect in plaintext; `channel_binding=require`
/// is refused over plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_tls() {
    let tls = TlsCluster::start(None).await;
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    for host in HOSTS {
        for params in [
            "sslmode=require".to_string(),
            format!("sslmode=verify-ca&{ca}"),
            format!("sslmode=verify-full&{ca}"),
        ] {
            let url = tls.alice_url(host, "plaindb", &params);
            refused(&url, &["server does not support TLS"]).await;
        }
        for mode in ["allow", "prefer", "disable"] {
            let url = tls.alice_url(host, "plaindb", &format!("sslmode={mode}"));
            let db = accepted(&tls, &url).await;
            let flags = tls.ssl_flags("alice", "plaindb").await;
            assert!(
                !flags.is_empty() && flags.iter().all(|s| !s),
                "{mode}: {flags:?}"
            );
            db.close().await;
            let url = format!("{url}&channel_binding=require");
            refused(&url, &["channel binding"]).await;
        }
    }
}

/// A TLS server whose `pg_hba.conf` refuses TLS for a database: `prefer`
/// falls back to plaintext (as libpq does), `allow` starts there, `require`
/// is refused; channel binding is refused over the plaintext connection and
/// accepted over TLS with SCRAM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_when_the_server_refuses_tls() {
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let ca = param("sslrootcert", &tls.pki.path("ca.crt"));
    for host in HOSTS {
        for mode in ["prefer", "allow"] {
            let url = tls.alice_url(host, "plaindb", &format!("sslmode={mode}"));
            let db = accepted(&tls, &url).await;
            let flags = tls.ssl_flags("alice", "plaindb").await;
            assert!(
                !flags.is_empty() && flags.iter().all(|s| !s),
                "{mode}: {flags:?}"
            );
            db.close().await;
        }
        let url = tls.alice_url(host, "plaindb", "sslmode=require");
        refused(&url, &["rejects connection", "SSL encryption"]).await;
        let url = tls.alice_url(host, "plaindb", "sslmode=disable&channel_binding=require");
        refused(&url, &["channel binding"]).await;
        let url = tls.alice_url(
            host,
            "tlsdb",
            &format!("sslmode=verify-full&{ca}&channel_binding=require"),
        );
        accepted(&tls, &url).await.close().await;
        // Both attempts of `prefer` fail: the TLS one's reason (a wrong
        // password) is reported, not the plaintext one's pg_hba refusal.
        let wrong = tls.url("alice:wrong", host, "tlsdb", "sslmode=prefer");
        refused(&wrong, &["password authentication failed"]).await;
        // The configuration reports what the URL asked for.
        let c = Config::from_url(&url).unwrap();
        assert_eq!(
            c.ssl_root_cert(),
            Some(&SslRootCert::File(tls.pki.path("ca.crt")))
        );
    }
}
