//! TLS for PostgreSQL connections over rustls (the TLS stack already in the tree under the
//! Temporal client and the object-store clients: no OpenSSL to link or keep patched).
//!
//! Owns the rustls client configuration for each `sslmode` (no check, the chain only, the
//! chain and the host name), the client certificate, tokio-postgres's `MakeTlsConnect`
//! over tokio-rustls with channel binding (`tls-server-end-point`, so SCRAM can use
//! `SCRAM-SHA-256-PLUS`), and the translation of a failed handshake into a message that
//! names the cause.

use super::conninfo::{ConnInfo, RootCert, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// The crypto provider: named explicitly, since the tree builds rustls with two of them
/// (and rustls then refuses to pick one itself).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing (sslmode=require/prefer/allow without a root certificate).
    Nothing,
    /// Signed by a root certificate (verify-ca, or a weaker mode given a root).
    Chain,
    /// Signed, and valid for the host name (verify-full).
    ChainAndName,
}

/// The rustls configuration for `info`; the error names the file at fault.
pub fn client_config(info: &ConnInfo) -> Result<Arc<rustls::ClientConfig>, String> {
    let p = provider();
    let check = match (info.mode, &info.root) {
        (SslMode::VerifyFull, _) => Check::ChainAndName,
        (_, Some(_)) => Check::Chain,
        (_, None) => Check::Nothing,
    };
    let roots = match &info.root {
        None => RootCertStore::empty(),
        Some(root) => load_roots(root)?,
    };
    let builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let builder = match check {
        Check::ChainAndName => builder.with_root_certificates(roots),
        Check::Chain | Check::Nothing => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    roots: (check == Check::Chain).then(|| Arc::new(roots)),
                    provider: p,
                }))
        }
    };
    let mut config = match &info.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "client certificate file \"{}\" (sslcert): {e}",
                        cert.display()
                    )
                })?;
            if chain.is_empty() {
                return Err(format!(
                    "client certificate file \"{}\" (sslcert) holds no PEM certificate",
                    cert.display()
                ));
            }
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "client key file \"{}\" (sslkey): {e} (an unencrypted PKCS#8, PKCS#1 or SEC1 PEM key is needed)",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("client certificate and key do not go together: {e}"))?
        }
    };
    // What libpq 17 sends; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

fn load_roots(root: &RootCert) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "root certificate file \"{}\" (sslrootcert): {e}",
                        path.display()
                    )
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "root certificate file \"{}\" (sslrootcert) holds no usable PEM certificate",
                    path.display()
                ));
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslrootcert=system: no trusted root certificate found on this machine (install ca-certificates, or set SSL_CERT_FILE)".into(),
                );
            }
        }
    }
    Ok(store)
}

/// The server check for every mode but verify-full: the chain against `roots` when given
/// (the host name not), or nothing; the handshake's signatures are always checked, so the
/// server still proves it holds its certificate's key.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

/// What happened to the TLS handshake of one connection attempt.
#[derive(Debug, Default)]
pub struct Handshake {
    /// A handshake was started.
    pub attempted: bool,
    /// It completed.
    pub established: bool,
    /// rustls's reason when it failed.
    pub failure: Option<rustls::Error>,
}

/// tokio-postgres's TLS factory over tokio-rustls; records each handshake in `seen`.
#[derive(Clone)]
pub struct MakeTls {
    config: Arc<rustls::ClientConfig>,
    /// The last handshake's outcome (shared with the connector it makes).
    pub seen: Arc<Mutex<Handshake>>,
}

impl MakeTls {
    /// A factory for `config`.
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        MakeTls {
            config,
            seen: Arc::default(),
        }
    }
}

/// One connection's TLS connector.
pub struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: Option<ServerName<'static>>,
    seen: Arc<Mutex<Handshake>>,
}

impl<S> MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        // A Unix socket host comes as "": fail only if a handshake is attempted on it.
        let name = ServerName::try_from(domain).ok().map(|n| n.to_owned());
        Ok(Connect {
            config: self.config.clone(),
            name,
            seen: self.seen.clone(),
        })
    }
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the host is not a valid TLS server name",
                )
            })?;
            self.seen.lock().expect("handshake record").attempted = true;
            match tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await
            {
                Ok(tls) => {
                    self.seen.lock().expect("handshake record").established = true;
                    Ok(Stream(tls))
                }
                Err(e) => {
                    let failure = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .cloned();
                    self.seen.lock().expect("handshake record").failure = failure;
                    Err(e)
                }
            }
        })
    }
}

/// A TLS connection to the server.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| end_point_hash(c))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929 `tls-server-end-point`: the server certificate's hash with its signature's
/// hash (MD5 and SHA-1 become SHA-256). None for an algorithm without one (Ed25519,
/// RSA-PSS): the server then offers no binding either, and a guess would fail the login.
fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    let (cert, _) = der_item(der, 0x30)?;
    let (_, after_tbs) = der_item(cert, 0x30)?;
    let (alg, _) = der_item(after_tbs, 0x30)?;
    let (oid, _) = der_item(alg, 0x06)?;
    // 1.2.840.113549.1.1.x (RSA with a hash) and 1.2.840.10045.4.x (ECDSA).
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let bits = match (oid.strip_prefix(RSA), oid.strip_prefix(ECDSA_SHA2)) {
        (Some([0x04 | 0x05 | 0x0b]), _) | (_, Some([0x02])) => 256,
        (Some([0x0c]), _) | (_, Some([0x03])) => 384,
        (Some([0x0d]), _) | (_, Some([0x04])) => 512,
        _ if oid == ECDSA_SHA1 => 256,
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(der).to_vec(),
        384 => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha512::digest(der).to_vec(),
    })
}

/// One DER item with `tag` at the start of `input`: (its contents, what follows).
fn der_item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A failed handshake in words: what was wrong and what to change.
pub fn explain(failure: &rustls::Error, info: &ConnInfo, host: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let root = match &info.root {
        Some(RootCert::File(f)) => {
            format!("the CA certificates in sslrootcert \"{}\"", f.display())
        }
        Some(RootCert::System) => "the system's trusted roots (sslrootcert=system)".into(),
        None => "a root certificate".into(),
    };
    match failure {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "the server's certificate is not signed by {root} (wrong CA file, or the server presents a certificate from another CA)"
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the server's certificate is not valid for host \"{host}\" ({failure}); sslmode=verify-full checks the host name against the certificate's subjectAltName: connect by a name the certificate lists, fix the certificate, or use sslmode=verify-ca to check the CA only"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the server's certificate has expired ({failure})")
        }
        E::InvalidCertificate(_) => format!("the server's certificate was refused: {failure}"),
        E::AlertReceived(
            A::UnknownCA
            | A::BadCertificate
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::AccessDenied,
        ) => format!(
            "the server refused the client certificate ({failure}): check sslcert/sslkey and that the server's ssl_ca_file signs the certificate"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_items_are_walked_with_short_and_long_lengths() {
        let short = [0x30, 0x02, 0x05, 0x00, 0xff];
        assert_eq!(
            der_item(&short, 0x30),
            Some((&[0x05, 0x00][..], &[0xff][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let (body, rest) = der_item(&long, 0x04).unwrap();
        assert_eq!((body.len(), rest.len()), (0x80, 0));
        assert_eq!(der_item(&short, 0x31), None);
        assert_eq!(der_item(&[0x30, 0x05, 0x00], 0x30), None, "truncated");
    }
}
