//! TLS for the HTTP listener: the certificate and key read from PEM files,
//! replaced while the node runs without dropping a connection.
//!
//! The listener's rustls configuration asks a [`ServerCert`] for the
//! certificate of every new handshake; the files are read again on
//! [`ServerCert::reload`] (the binary calls it on SIGHUP) and when their
//! contents change (polled every [`TlsSettings::poll_interval`] while the
//! server runs). Connections already open keep the session they
//! negotiated. A new pair that does not load (unreadable, bad PEM, a key
//! that is not the certificate's) is logged and the current one stays.
//!
//! ALPN offers `h2` and `http/1.1`; the server serves each connection with
//! the protocol the handshake chose (HTTP/1.1 when the client offered none).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Default interval at which the certificate and key files are checked for
/// changes.
pub const DEFAULT_TLS_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Where the listener's certificate and key are (`[tls]` in the config file).
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM certificate chain, the node's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_file: PathBuf,
    /// Interval at which the files are checked for changes.
    pub poll_interval: Duration,
}

/// The rustls crypto provider of every TLS configuration of the node
/// (`ring`; see [`switchyard_cluster::transport::tls_provider`]).
pub fn provider() -> Arc<CryptoProvider> {
    switchyard_cluster::transport::tls_provider()
}

/// Every certificate in the PEM file `path` (a CA bundle, a chain).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_certs(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (BEGIN CERTIFICATE) in it".into());
    }
    Ok(certs)
}

/// The listener's current certificate and the contents of the files it was
/// read from. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ServerCert {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: TlsSettings,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' contents at the last look, loaded or not: a bad pair is
    /// reported once, not at every poll.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

/// Reads and checks a certificate chain and its key.
fn load(cert_pem: &[u8], key_pem: &[u8], s: &TlsSettings) -> Result<CertifiedKey, String> {
    let certs = parse_certs(cert_pem).map_err(|e| format!("{}: {e}", s.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!(
            "{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            s.key_file.display()
        )
    })?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", s.key_file.display()))?;
    let certified = CertifiedKey::new(certs, key);
    certified.keys_match().map_err(|e| {
        format!(
            "{} is not the key of the certificate in {}: {e}",
            s.key_file.display(),
            s.cert_file.display()
        )
    })?;
    Ok(certified)
}

fn read_pair(s: &TlsSettings) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    Ok((read(&s.cert_file)?, read(&s.key_file)?))
}

impl ServerCert {
    /// Reads the certificate and key; the message says what is wrong with
    /// them (the node does not start).
    pub fn load(settings: TlsSettings) -> Result<ServerCert, String> {
        let (cert, key) = read_pair(&settings)?;
        let certified = load(&cert, &key, &settings)?;
        Ok(ServerCert {
            inner: Arc::new(Inner {
                settings,
                current: RwLock::new(Arc::new(certified)),
                seen: Mutex::new((cert, key)),
            }),
        })
    }

    /// The settings it was loaded with.
    pub fn settings(&self) -> &TlsSettings {
        &self.inner.settings
    }

    /// Reads the files again and serves the pair from the next handshake
    /// on; keeps the current one (and logs why) when the new one does not
    /// load. Returns whether the new pair is served.
    pub fn reload(&self) -> bool {
        let s = &self.inner.settings;
        let loaded = read_pair(s).and_then(|(cert, key)| {
            let certified = load(&cert, &key, s);
            *self.inner.seen.lock() = (cert, key);
            certified
        });
        match loaded {
            Ok(certified) => {
                *self.inner.current.write() = Arc::new(certified);
                tracing::info!(
                    target: "switchyard",
                    cert = %s.cert_file.display(),
                    "TLS certificate reloaded"
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    target: "switchyard",
                    error = %e,
                    "TLS certificate not reloaded; the previous one is still served"
                );
                false
            }
        }
    }

    /// Reloads when the files' contents differ from the last look.
    fn reload_if_changed(&self) {
        let Ok(now) = read_pair(&self.inner.settings) else {
            // Being replaced (one file written, the other not yet), or
            // gone: the next look or a SIGHUP settles it.
            return;
        };
        if *self.inner.seen.lock() != now {
            self.reload();
        }
    }

    /// Checks the files every poll interval until dropped (the task ends
    /// with the server).
    pub(crate) async fn watch(self) {
        let mut tick = tokio::time::interval(self.inner.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let this = self.clone();
            // File reads on a blocking thread, off the request workers.
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }

    /// The rustls configuration of the listener.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.inner.current.read().clone())
    }
}
