//! Connection set-up time (issue 14): open + first query, for
//! `sslmode=disable`, `require` and `verify-full`, persist next to raw
//! tokio-postgres with the same TLS settings. Target: persist >= 0.9x raw
//! (raw time / persist time).
//!
//! ```text
//! cargo run --release -p persist-bench -- --connect [--quick]
//! ```
//!
//! Starts its own private cluster with TLS and SCRAM (the test support of
//! `tests/common/tls_cluster.rs`, certificates made with `openssl`), so it
//! needs the PostgreSQL server programs and `openssl`, not a running server.
//! Every sample: persist builds its pool (TLS configuration included: the CA
//! file is read), opens one connection (SCRAM over TLS) and pings it; raw
//! builds the same rustls configuration, connects, sends the same empty
//! query. The variants alternate sample by sample, so drifts of the machine
//! hit both. Reported: medians, and the ratio raw/persist of the mean
//! set-up times with a 95 % paired bootstrap interval (`stats::paired_ratio`:
//! sample `i` of persist and of raw ran back to back, so they are resampled
//! together and a drift of the machine cancels out of the ratio).

#[allow(unreachable_pub)]
#[path = "../../tests/common/cluster.rs"]
pub(crate) mod cluster;
#[allow(unreachable_pub)]
#[path = "../../tests/common/tls_cluster.rs"]
mod tls_cluster;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use tls_cluster::{ServerCert, TlsCluster, ALICE_PASSWORD};

use crate::stats;

/// `require` without roots: encrypted, the certificate not checked (as
/// libpq, and persist, do).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn ring() -> Arc<CryptoProvider> {
    // The provider persist uses when the application installs none.
    #[allow(deprecated)]
    let p = rustls::crypto::ring::default_provider();
    Arc::new(p)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Require,
    VerifyFull,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Require => "require",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// Raw tokio-postgres: the TLS configuration of `mode` built, one
/// connection opened, one empty query.
async fn raw(tls: &TlsCluster, mode: Mode, ca: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(tls.port())
        .user("alice")
        .password(ALICE_PASSWORD)
        .connect_timeout(Duration::from_secs(10));
    let client = match mode {
        Mode::Disable => {
            cfg.dbname("plaindb")
                .ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client
        }
        Mode::Require | Mode::VerifyFull => {
            cfg.dbname("tlsdb")
                .ssl_mode(tokio_postgres::config::SslMode::Require);
            let provider = ring();
            let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()?;
            let config = if mode == Mode::Require {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                    .with_no_client_auth()
            } else {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)? {
                    roots.add(cert?)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            };
            let (client, conn) = cfg.connect(MakeRustlsConnect::new(config)).await?;
            tokio::spawn(conn);
            client
        }
    };
    client.simple_query("").await?;
    let took = start.elapsed();
    drop(client);
    Ok(took)
}

/// persist: `open` (pool, TLS configuration, first connection) + `ping`.
async fn persist_once(tls: &TlsCluster, mode: Mode, ca: &Path) -> Result<Duration> {
    let url = match mode {
        Mode::Disable => tls.alice_url("127.0.0.1", "plaindb", "sslmode=disable"),
        Mode::Require => tls.alice_url("127.0.0.1", "tlsdb", "sslmode=require"),
        Mode::VerifyFull => tls.alice_url(
            "127.0.0.1",
            "tlsdb",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
    };
    let config = persist::Config::from_url(&url)?.with_connect_timeout(Duration::from_secs(10));
    let start = Instant::now();
    let db = persist::open(&config).await?;
    db.ping().await?;
    let took = start.elapsed();
    db.close().await;
    Ok(took)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the measurement and prints its table; `Ok(true)` when every mode
/// meets the target.
pub async fn run(quick: bool) -> Result<bool> {
    let samples = if quick { 10 } else { 200 };
    eprintln!("connect: starting a private TLS cluster ...");
    let tls = TlsCluster::start(Some(ServerCert::Good)).await;
    let ca = tls.pki.path("ca.crt");
    println!(
        "\nConnection set-up (open + first query), {samples} samples per variant, interleaved"
    );
    println!(
        "{:<12} {:>12} {:>12} {:>8} {:>17}  target >= 0.90",
        "sslmode", "persist ms", "raw ms", "ratio", "95% CI"
    );
    let mut all_met = true;
    for mode in [Mode::Disable, Mode::Require, Mode::VerifyFull] {
        // One unmeasured round of each: first-use costs (DNS cache, pages).
        persist_once(&tls, mode, &ca)
            .await
            .with_context(|| format!("persist, sslmode={}", mode.name()))?;
        raw(&tls, mode, &ca)
            .await
            .with_context(|| format!("raw, sslmode={}", mode.name()))?;
        let (mut p, mut r) = (Vec::new(), Vec::new());
        for i in 0..samples {
            // Alternate which goes first.
            if i % 2 == 0 {
                p.push(persist_once(&tls, mode, &ca).await?.as_secs_f64() * 1e3);
                r.push(raw(&tls, mode, &ca).await?.as_secs_f64() * 1e3);
            } else {
                r.push(raw(&tls, mode, &ca).await?.as_secs_f64() * 1e3);
                p.push(persist_once(&tls, mode, &ca).await?.as_secs_f64() * 1e3);
            }
        }
        let e = stats::paired_ratio(std::slice::from_ref(&r), std::slice::from_ref(&p));
        let (ratio, lo, hi) = (e.value, e.lo, e.hi);
        // Met only when the whole interval clears the bound, missed when it
        // is all below, otherwise undecided (never counted as met).
        let verdict = stats::verdict(Some(e), 0.9, true);
        all_met &= verdict == stats::Verdict::Met;
        println!(
            "{:<12} {:>12.2} {:>12.2} {:>8.2} {:>8.2} - {:<6.2}  {}",
            mode.name(),
            median(&p),
            median(&r),
            ratio,
            lo,
            hi,
            verdict.label()
        );
    }
    Ok(all_met)
}
