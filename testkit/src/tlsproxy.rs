//! A TLS terminator for tests: accepts TLS on a loopback port (optionally requiring a client
//! certificate signed by a given CA) and relays the plain bytes to a backend, such as the
//! Temporal dev server or the tansu Kafka broker, which have no TLS of their own. For gRPC
//! it offers ALPN `h2`, which gRPC clients require (Debian's stunnel has no ALPN, so it
//! cannot stand in front of gRPC); for other protocols ([`start_tcp`]) no ALPN at all.

use crate::pki::CertFiles;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running terminator; stops when dropped.
pub struct TlsProxy {
    /// `127.0.0.1:PORT`, where it accepts TLS.
    pub address: String,
    handshakes_ok: Arc<AtomicUsize>,
    handshakes_failed: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        // Without waiting: a runtime may not block inside another (async tests).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl TlsProxy {
    /// (completed, failed) TLS handshakes so far.
    pub fn handshakes(&self) -> (usize, usize) {
        (
            self.handshakes_ok.load(Ordering::Relaxed),
            self.handshakes_failed.load(Ordering::Relaxed),
        )
    }
}

/// Starts a terminator for gRPC (ALPN `h2`) in front of `backend` (`host:port`) presenting
/// `server`; with `client_ca`, a client must present a certificate that CA signed (mutual
/// TLS).
pub fn start(
    backend: &str,
    server: &CertFiles,
    client_ca: Option<&Path>,
) -> anyhow::Result<TlsProxy> {
    start_with_alpn(backend, server, client_ca, &[b"h2", b"http/1.1"])
}

/// As [`start`], for a protocol without ALPN (Kafka).
pub fn start_tcp(
    backend: &str,
    server: &CertFiles,
    client_ca: Option<&Path>,
) -> anyhow::Result<TlsProxy> {
    start_with_alpn(backend, server, client_ca, &[])
}

fn start_with_alpn(
    backend: &str,
    server: &CertFiles,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> anyhow::Result<TlsProxy> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(&server.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .context("the server certificate")?;
    let key = PrivateKeyDer::from_pem_file(&server.key).context("the server key")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).context("the client CA")? {
                roots.add(c?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Bound without `block_on`, so a terminator can be started from async tests too.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let address = listener.local_addr()?.to_string();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (ok2, failed2, backend) = (ok.clone(), failed.clone(), backend.to_string());
    runtime.spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, backend, ok, failed) = (
                acceptor.clone(),
                backend.clone(),
                ok2.clone(),
                failed2.clone(),
            );
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(inbound).await {
                    Ok(t) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        t
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                if let Ok(mut out) = tokio::net::TcpStream::connect(&backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut out).await;
                }
            });
        }
    });
    Ok(TlsProxy {
        address,
        handshakes_ok: ok,
        handshakes_failed: failed,
        runtime: Some(runtime),
    })
}
