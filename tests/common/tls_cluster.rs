//! A private PostgreSQL cluster that speaks TLS with certificates made for
//! the test, and a `pg_hba.conf` that requires TLS, SCRAM and client
//! certificates.
//!
//! [`Pki::create`] makes, with the `openssl` program, in a temp dir:
//! a CA; server certificates signed by it for `localhost` + `127.0.0.1`, for
//! the wrong name `evil.example`, and an expired one (for the right names);
//! a client certificate for the role `carol`; and a second, unrelated CA.
//!
//! [`TlsCluster::start`] starts a [`Cluster`], creates the roles and
//! databases below, switches `ssl` on with the chosen server certificate
//! (or leaves it off) and installs this `pg_hba.conf`, first match wins:
//!
//! | database  | user     | connection | method                          |
//! |-----------|----------|------------|---------------------------------|
//! | all       | postgres | plaintext  | trust (the test's admin)        |
//! | `plaindb` | all      | TLS        | reject                          |
//! | `plaindb` | alice    | plaintext  | scram-sha-256                   |
//! | `certdb`  | carol    | TLS        | trust, `clientcert=verify-full` |
//! | `tlsdb`   | alice    | TLS        | scram-sha-256                   |
//! | all       | all      | plaintext  | reject                          |
//!
//! Dropping it stops the cluster and removes the files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cluster::Cluster;

/// `alice`'s password: SCRAM, with characters `.pgpass` must escape.
pub const ALICE_PASSWORD: &str = "s3:cr\\et-Al1ce";

/// The certificates and keys of a test, in one temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
}

/// Which certificate the server shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCert {
    /// For `localhost` and `127.0.0.1`, signed by the CA, valid now.
    Good,
    /// For `evil.example` only, signed by the CA, valid now.
    WrongName,
    /// For `localhost` and `127.0.0.1`, signed by the CA, expired in 2020.
    Expired,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("run openssl (this test needs the openssl program: apt-get install -y openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate the CA signs: file name, common name, extensions, and the
/// validity period when not the next 30 days.
type Leaf<'a> = (&'a str, &'a str, String, Option<(&'a str, &'a str)>);

const CA_CONFIG: &str = "[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = index.txt\nnew_certs_dir = .\n\
serial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[ p ]\ncommonName = supplied\n";

impl Pki {
    /// Makes every certificate and key; see the module docs.
    pub fn create() -> Pki {
        // In /tmp, readable by the cluster user when running as root.
        let dir = tempfile::Builder::new()
            .prefix("persist-pki-")
            .tempdir_in("/tmp")
            .expect("create the PKI dir");
        set_mode(dir.path(), 0o755);
        let d = dir.path();
        std::fs::write(d.join("ca.cnf"), CA_CONFIG).unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "1000\n").unwrap();
        for (name, cn) in [("ca", "persist test CA"), ("other-ca", "unrelated CA")] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                    "-days",
                    "30",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        let good_names = "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
        let server_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
        let leaves: [Leaf; 4] = [
            (
                "server",
                "localhost",
                format!("{good_names}{server_ext}"),
                None,
            ),
            (
                "wrong-name",
                "evil.example",
                format!("subjectAltName=DNS:evil.example\n{server_ext}"),
                None,
            ),
            (
                "expired",
                "localhost",
                format!("{good_names}{server_ext}"),
                Some(("20200101000000Z", "20200201000000Z")),
            ),
            (
                "client",
                "carol",
                "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n".to_string(),
                None,
            ),
        ];
        for (name, cn, ext, dates) in leaves {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
            let (csr, crt, ext) = (
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let mut args = vec![
                "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile",
                "ca.key", "-in", &csr, "-out", &crt, "-extfile", &ext,
            ];
            match dates {
                Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
                None => args.extend(["-days", "30"]),
            }
            openssl(d, &args);
            set_mode(&d.join(format!("{name}.key")), 0o600);
        }
        Pki { dir }
    }

    /// A file of the PKI dir (`ca.crt`, `client.key`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The dir itself, for files a test adds.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

const HBA: &str = "\
local     all      all                    trust
hostnossl all      postgres 127.0.0.1/32  trust
hostssl   plaindb  all      127.0.0.1/32  reject
hostnossl plaindb  alice    127.0.0.1/32  scram-sha-256
hostssl   certdb   carol    127.0.0.1/32  trust clientcert=verify-full
hostssl   tlsdb    alice    127.0.0.1/32  scram-sha-256
hostnossl all      all      127.0.0.1/32  reject
";

/// A running cluster configured as the module docs say.
pub struct TlsCluster {
    pub pki: Pki,
    pub cluster: Cluster,
}

impl TlsCluster {
    /// Starts it; `cert: None` leaves TLS off.
    pub async fn start(cert: Option<ServerCert>) -> TlsCluster {
        let pki = Pki::create();
        let cluster = tokio::task::spawn_blocking(Cluster::start)
            .await
            .expect("start the private cluster");
        let admin = cluster.connect("postgres").await;
        let data: String = admin
            .query_one("SHOW data_directory", &[])
            .await
            .unwrap()
            .get(0);
        let hba: String = admin.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
        let alice_pw = ALICE_PASSWORD.replace('\'', "''");
        for sql in [
            format!(
                "SET password_encryption = 'scram-sha-256'; \
                 CREATE ROLE alice LOGIN PASSWORD '{alice_pw}'; CREATE ROLE carol LOGIN"
            ),
            "CREATE DATABASE tlsdb".into(),
            "CREATE DATABASE certdb".into(),
            "CREATE DATABASE plaindb".into(),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        if let Some(cert) = cert {
            let name = match cert {
                ServerCert::Good => "server",
                ServerCert::WrongName => "wrong-name",
                ServerCert::Expired => "expired",
            };
            // The server's copies, in its data dir, owned by its user.
            let data = Path::new(&data);
            for (from, to) in [
                (format!("{name}.crt"), "tls-server.crt"),
                (format!("{name}.key"), "tls-server.key"),
                ("ca.crt".to_string(), "tls-ca.crt"),
            ] {
                std::fs::copy(pki.path(&from), data.join(to)).unwrap();
                set_mode(&data.join(to), 0o600);
                if is_root() {
                    let out = Command::new("chown")
                        .arg("postgres:")
                        .arg(data.join(to))
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "chown {to}");
                }
            }
            for sql in [
                "ALTER SYSTEM SET ssl_cert_file = 'tls-server.crt'",
                "ALTER SYSTEM SET ssl_key_file = 'tls-server.key'",
                "ALTER SYSTEM SET ssl_ca_file = 'tls-ca.crt'",
                "ALTER SYSTEM SET ssl = on",
            ] {
                admin.batch_execute(sql).await.unwrap();
            }
        }
        std::fs::write(&hba, HBA).unwrap();
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        drop(admin);
        let tls = TlsCluster { pki, cluster };
        // The reload is asynchronous: wait until a new session sees it.
        let want = if cert.is_some() { "on" } else { "off" };
        for _ in 0..100 {
            let c = tls.cluster.connect("postgres").await;
            let ssl: String = c.query_one("SHOW ssl", &[]).await.unwrap().get(0);
            let rules: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_hba_file_rules WHERE database = '{certdb}'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if ssl == want && rules == 1 {
                return tls;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the cluster did not take the TLS settings: {}",
            tls.cluster.log_tail()
        );
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// `postgres://USER@HOST:PORT/DB?PARAMS`, without a password.
    pub fn url(&self, user: &str, host: &str, db: &str, params: &str) -> String {
        let url = format!("postgres://{user}@{host}:{}/{db}", self.port());
        if params.is_empty() {
            url
        } else {
            format!("{url}?{params}")
        }
    }

    /// [`TlsCluster::url`] with `alice`'s password in it (percent-encoded).
    pub fn alice_url(&self, host: &str, db: &str, params: &str) -> String {
        let pw: String = ALICE_PASSWORD
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        self.url(&format!("alice:{pw}"), host, db, params)
    }

    /// The `ssl` flag of every session of `user` on `db`, from the server.
    pub async fn ssl_flags(&self, user: &str, db: &str) -> Vec<bool> {
        self.cluster
            .connect("postgres")
            .await
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.usename = $1 AND a.datname = $2",
                &[&user, &db],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub fn log_tail(&self) -> String {
        self.cluster.log_tail()
    }
}
