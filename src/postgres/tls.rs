//! TLS with libpq's `sslmode` meanings, on rustls.
//!
//! - `verify-full`: the certificate must chain to a root of `sslrootcert`
//!   and name the host connected to (DNS name or IP address);
//! - `verify-ca`, and the weaker modes when root certificates are given (as
//!   libpq does with `sslrootcert` or `~/.postgresql/root.crt`): the chain
//!   only;
//! - otherwise (`allow`, `prefer`, `require` without roots): encrypted, the
//!   certificate not checked against a CA. Handshake signatures are always
//!   verified, so the peer must hold the key of the certificate it shows.
//!
//! Root, client certificate and key files are read here, when the pool
//! opens; [`crate::config`] holds only their paths.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Config, SslMode, SslRootCert};
use crate::error::{Error, Result};

/// What the client checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    EncryptOnly,
    Chain,
    ChainAndName,
}

#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    check: Check,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::EncryptOnly {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check == Check::ChainAndName {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The crypto provider: the one the application installed as the process
/// default, else *ring*'s.
fn provider() -> Arc<CryptoProvider> {
    if let Some(p) = CryptoProvider::get_default() {
        return Arc::clone(p);
    }
    // rustls 0.23.48 deprecates this function because *ring* has no
    // post-quantum key exchange; *ring* is kept on purpose (pure build, no C
    // toolchain for aws-lc; see the ledger). An application that wants
    // another provider installs it as the process default, used above.
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider();
    Arc::new(ring)
}

/// The TLS connector for `config`, or `None` for `sslmode=disable`.
///
/// # Errors
/// [`Error::Config`] naming the file and what is wrong with it: a root,
/// certificate or key file that is missing, unreadable, not PEM or holds
/// nothing usable; a key readable by group or others; no system roots.
pub(crate) fn connector(config: &Config) -> Result<Option<MakeRustlsConnect>> {
    let root = config.tls.root_cert.as_ref();
    let check = match (config.ssl_mode, root) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::VerifyFull, _) => Check::ChainAndName,
        (SslMode::VerifyCa, _) | (_, Some(_)) => Check::Chain,
        _ => Check::EncryptOnly,
    };
    let provider = provider();
    let mut roots = RootCertStore::empty();
    if check != Check::EncryptOnly {
        match root {
            Some(SslRootCert::File(path)) => load_roots(&mut roots, path)?,
            Some(SslRootCert::System) => load_system_roots(&mut roots)?,
            // The configuration refuses verify-* without roots.
            None => {
                return Err(Error::Config(format!(
                    "sslmode={} needs root certificates (sslrootcert)",
                    config.ssl_mode
                )))
            }
        }
    }
    let verifier = Verifier {
        provider: Arc::clone(&provider),
        roots: Arc::new(roots),
        check,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert, "client certificate")?;
            let passphrase = config.tls.key_password.as_ref().map(|p| p.0.as_str());
            let key_der = load_key(key, passphrase)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                Error::Config(format!(
                    "client certificate {} with key {} is unusable: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(MakeRustlsConnect::new(tls)))
}

/// Every certificate of the PEM file at `path`; at least one.
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    // Read first: a missing or unreadable file gets the OS's reason.
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} file {shown}: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Config(format!(
                "{what} file {shown} is not valid PEM: {}",
                pem_error(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{what} file {shown} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

fn load_roots(roots: &mut RootCertStore, path: &Path) -> Result<()> {
    for (i, cert) in load_certs(path, "root certificate")?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            Error::Config(format!(
                "root certificate file {}: certificate {} is not a usable CA certificate: {e}",
                path.display(),
                i + 1
            ))
        })?;
    }
    Ok(())
}

fn load_system_roots(roots: &mut RootCertStore) -> Result<()> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(Error::Config(format!(
            "sslrootcert=system: no trusted root certificates found on this system{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        )));
    }
    Ok(())
}

/// The private key at `path`, refused (as libpq does) when group or others
/// may access it: `u=rw` (0600) or less, or `u=rw,g=r` (0640) when owned by
/// root.
fn load_key(path: &Path, passphrase: Option<&str>) -> Result<PrivateKeyDer<'static>> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("cannot read private key file {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::Config(format!(
            "private key file {shown} is not a regular file"
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode();
        let too_open = if meta.uid() == 0 {
            mode & 0o037 != 0
        } else {
            mode & 0o077 != 0
        };
        if too_open {
            return Err(Error::Config(format!(
                "private key file {shown} has group or world access (mode {:04o}); it must be \
                 u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) or less \
                 if owned by root",
                mode & 0o7777
            )));
        }
    }
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read private key file {shown}: {e}")))?;
    if let Some(key) = encrypted_key(&pem, passphrase, path)? {
        return Ok(key);
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::Config(format!(
            "private key file {shown} holds no unencrypted private key (PEM: PKCS#8, PKCS#1 \
             or SEC1; encrypted keys are not supported)"
        )),
        e => Error::Config(format!(
            "private key file {shown} is not valid PEM: {}",
            pem_error(&e)
        )),
    })
}

/// The key of an `ENCRYPTED PRIVATE KEY` PEM file (PKCS#8, PBES2),
/// decrypted with `passphrase`; `None` when the file holds no such key. The
/// passphrase never appears in an error.
fn encrypted_key(
    pem: &[u8],
    passphrase: Option<&str>,
    path: &Path,
) -> Result<Option<PrivateKeyDer<'static>>> {
    use pkcs8::der::pem::PemLabel;
    use pkcs8::der::Decode;
    let shown = path.display();
    let text = String::from_utf8_lossy(pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::Config(format!(
            "private key file {shown} uses OpenSSL's legacy key encryption, which is not \
             supported; convert it to PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc)"
        )));
    }
    let begin = format!(
        "-----BEGIN {}-----",
        pkcs8::EncryptedPrivateKeyInfo::PEM_LABEL
    );
    let Some(at) = text.find(&begin) else {
        return Ok(None);
    };
    let Some(passphrase) = passphrase else {
        return Err(Error::Config(format!(
            "private key file {shown} is encrypted: give its passphrase with sslpassword"
        )));
    };
    let (_, doc) = pkcs8::SecretDocument::from_pem(&text[at..])
        .map_err(|e| Error::Config(format!("private key file {shown} is not valid PEM: {e}")))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| {
        Error::Config(format!(
            "private key file {shown} is not a valid encrypted PKCS#8 key: {e}"
        ))
    })?;
    let plain = info.decrypt(passphrase).map_err(|_| {
        Error::Config(format!(
            "cannot decrypt private key file {shown} with the sslpassword given (wrong \
             passphrase, or an unsupported cipher)"
        ))
    })?;
    Ok(Some(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into())))
}

/// A PEM error for a person (rustls-pki-types shows some as byte lists).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a BEGIN line without its END line".into(),
        E::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        E::Base64Decode(_) => "malformed base64 between BEGIN and END".into(),
        other => other.to_string(),
    }
}

/// `2020-02-01 00:00:00 UTC` for Unix time `secs`.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A name of a certificate as rustls lists it (`DnsName("db.example")`),
/// without the kind.
fn bare_name(presented: &str) -> &str {
    presented
        .split_once("(\"")
        .and_then(|(_, rest)| rest.strip_suffix("\")"))
        .unwrap_or(presented)
}

/// The rustls error among `err`'s sources (tokio-rustls wraps it in an
/// `io::Error`).
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut src = Some(err);
    std::iter::from_fn(|| {
        let e = src?;
        src = e.source();
        Some(e)
    })
    .find_map(|e| {
        e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        })
    })
}

/// Whether a connection attempt failed in the TLS handshake.
pub(crate) fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    find_rustls(e).is_some()
}

/// One line saying why a connection was refused at the TLS level, from the
/// structured rustls error in `err`'s sources; `None` when `err` holds none.
pub(crate) fn explain(err: &(dyn std::error::Error + 'static), config: &Config) -> Option<String> {
    let tls = find_rustls(err)?;
    use rustls::CertificateError as C;
    let roots = match config.ssl_root_cert() {
        Some(SslRootCert::File(p)) => format!("sslrootcert={}", p.display()),
        Some(SslRootCert::System) => "sslrootcert=system".into(),
        None => "no sslrootcert".into(),
    };
    Some(match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => format!(
                "server certificate refused: unknown CA, it is not signed by a root certificate \
                 of {roots}"
            ),
            C::NotValidForNameContext {
                expected,
                presented,
            } => format!(
                "server certificate refused: host name mismatch, host {:?} is not among the \
                 names in the certificate ({})",
                expected.to_str(),
                if presented.is_empty() {
                    "none".to_string()
                } else {
                    presented
                        .iter()
                        .map(|n| bare_name(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            C::NotValidForName => {
                "server certificate refused: host name mismatch, the certificate does not name \
                 the host connected to"
                    .to_string()
            }
            C::ExpiredContext { time, not_after } => format!(
                "server certificate refused: expired certificate, not valid after {} (now {})",
                utc(not_after.as_secs()),
                utc(time.as_secs())
            ),
            C::Expired => "server certificate refused: expired certificate".to_string(),
            C::NotValidYetContext { time, not_before } => format!(
                "server certificate refused: not valid before {} (now {})",
                utc(not_before.as_secs()),
                utc(time.as_secs())
            ),
            other => format!("server certificate refused: {other}"),
        },
        other => format!("TLS handshake failed: {other}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_580_515_200), "2020-02-01 00:00:00 UTC");
        assert_eq!(super::utc(951_825_599), "2000-02-29 11:59:59 UTC");
        assert_eq!(super::bare_name("DnsName(\"a.b\")"), "a.b");
        assert_eq!(super::bare_name("IpAddress(V4(1))"), "IpAddress(V4(1))");
    }
}
