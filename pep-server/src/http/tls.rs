//! HTTPS on the API (issue #14 §1): rustls with the ring provider, on the same hyper server,
//! timeouts and connection cap as plain HTTP ([`super::serve_with`]).
//!
//! The certificate and key are held by [`CertStore`], the `ResolvesServerCert` of the server
//! config: [`CertStore::reload`] (on SIGHUP) swaps in the new pair for the handshakes that follow,
//! while open connections keep the session they negotiated, so a rotation drops nothing. A new
//! pair that does not load (unreadable, not PEM, key not matching the certificate) is refused with
//! an error naming the file, and the old pair stays in service.
//!
//! With `[tls] client_ca`, clients are asked for a certificate but not required to send one (bearer
//! tokens keep working beside station certificates); one that rustls verified against that CA is
//! handed to the request as [`ClientCertificate`], for `http::auth` to map to its station.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// Why the TLS files could not be used. Each variant names the file (and the config field).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", crate::config::path_for_people(.path))]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no PEM certificate, or a malformed one.
    #[error("{}: no valid PEM certificate ({reason})", .path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key file holds no PEM private key rustls can read.
    #[error("{}: no PEM private key (PKCS#8, SEC1 or PKCS#1): {source}", .path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The key is of a type rustls cannot sign with, or does not match the certificate.
    #[error("{}: {source}", .path.display())]
    Unusable {
        /// The key file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// `client_ca` holds no certificate usable as a trust anchor.
    #[error("{}: not usable as the client CA: {reason}", .path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration (no protocol version in common with the provider).
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// The file at fault, if the error is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Read { path, .. }
            | TlsError::Certificate { path, .. }
            | TlsError::Key { path, .. }
            | TlsError::Unusable { path, .. }
            | TlsError::ClientCa { path, .. } => Some(path),
            TlsError::Config(_) => None,
        }
    }
}

/// Reads every PEM certificate of `path` (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            path: path.to_owned(),
            reason: "no `BEGIN CERTIFICATE` block".into(),
        });
    }
    Ok(certs)
}

/// Loads a certificate chain and its key, checking that they belong together.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let pem = zeroize::Zeroizing::new(std::fs::read(key).map_err(|source| TlsError::Read {
        path: key.to_owned(),
        source,
    })?);
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let signing =
        provider::sign::any_supported_type(&der).map_err(|source| TlsError::Unusable {
            path: key.to_owned(),
            source,
        })?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|source| TlsError::Unusable {
        path: key.to_owned(),
        source,
    })?;
    Ok(pair)
}

/// The server's certificate and key, replaceable while the server runs.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads `cert` and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore, TlsError> {
        let pair = load_pair(cert, key)?;
        Ok(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(pair)),
        })
    }

    /// Reads the files again and serves the new pair to the handshakes that follow. On error the
    /// pair in service stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = Arc::new(load_pair(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = pair;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What the server needs to serve HTTPS: the acceptor for the listener, the certificate store to
/// reload.
#[derive(Clone)]
pub struct ServerTls {
    /// Performs the handshakes.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate and key in service.
    pub certs: Arc<CertStore>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS server of `[tls]`: its certificate and key, and the client CA if set.
    pub fn new(config: &TlsConfig) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(provider::default_provider());
        let certs = Arc::new(CertStore::load(&config.cert, &config.key)?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::ClientCa {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                // Optional: a client without a certificate goes on to bearer-token auth.
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder.with_cert_resolver(certs.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            certs,
        })
    }
}

/// Marks a request that arrived over TLS served by this process (the floor cookie gets `Secure`).
#[derive(Debug, Clone, Copy)]
pub struct ServedOverTls;

/// The names of a client certificate that rustls verified against `[tls] client_ca`: its subject
/// CN and its SAN DNS names, which `[[stations]] subject` is matched against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// CN first, then the SAN DNS names.
    pub names: Vec<String>,
}

impl ClientCertificate {
    /// The names of the leaf certificate `der`; `None` when it does not parse (rustls verified
    /// it, so this does not happen in practice; such a client gets no station).
    pub fn from_der(der: &[u8]) -> Option<ClientCertificate> {
        use x509_cert::der::Decode as _;
        use x509_cert::der::asn1::{
            Ia5StringRef, ObjectIdentifier, PrintableStringRef, Utf8StringRef,
        };
        const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut names = Vec::new();
        for rdn in tbs.subject.0.iter() {
            for attr in rdn.0.iter().filter(|a| a.oid == CN) {
                let value = attr
                    .value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
                    .or_else(|_| {
                        attr.value
                            .decode_as::<PrintableStringRef<'_>>()
                            .map(|s| s.as_str().to_owned())
                    })
                    .or_else(|_| {
                        attr.value
                            .decode_as::<Ia5StringRef<'_>>()
                            .map(|s| s.as_str().to_owned())
                    });
                if let Ok(v) = value {
                    names.push(v);
                }
            }
        }
        if let Ok(Some((_, san))) = tbs.get::<x509_cert::ext::pkix::SubjectAltName>() {
            for name in san.0 {
                if let x509_cert::ext::pkix::name::GeneralName::DnsName(dns) = name {
                    names.push(dns.as_str().to_owned());
                }
            }
        }
        Some(ClientCertificate { names })
    }
}
