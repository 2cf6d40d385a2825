//! A mailbox on `ferry serve`, over HTTPS (MAILBOX.md, section 5).
//!
//! TLS is rustls (aws-lc-rs) and trusts only what it is given: the private
//! CA's certificate (`ca.pem`), or a pinned SHA-256 fingerprint of that CA
//! (`sha256:<hex>`), which must then appear in the chain the server sends
//! and is used as the only root. No system trust store is consulted, so a
//! ramdisk without one still verifies its server. Requests carry the
//! agent's bearer token, time out (10 s to connect, 30 s in all), and are
//! retried with backoff on connection errors and 5xx answers; 4xx answers
//! are final.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{hex_lower, MailboxId, Transport};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout: mailbox files are small.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Delays between tries after a connection error or 5xx: 6 tries over
/// about 6 s, long enough for a manager restart behind a load balancer.
const BACKOFF_MS: [u64; 5] = [200, 400, 800, 1600, 3200];

/// What the client trusts.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// Certificates (PEM) of the CA(s) to trust.
    CaPem(Vec<u8>),
    /// The SHA-256 of the CA certificate's DER.
    Fingerprint([u8; 32]),
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::CaPem(p) => write!(f, "CaPem({} bytes)", p.len()),
            Trust::Fingerprint(d) => write!(f, "Fingerprint(sha256:{})", hex_lower(d)),
        }
    }
}

impl Trust {
    /// `sha256:<64 hex>` pins a fingerprint; text starting with
    /// `-----BEGIN` is PEM; anything else is a path to a PEM file.
    pub fn parse(spec: &str) -> io::Result<Trust> {
        if let Some(hex) = spec.strip_prefix("sha256:") {
            let clean: String = hex.chars().filter(|c| *c != ':').collect();
            let bytes = (0..clean.len())
                .step_by(2)
                .map(|i| {
                    clean
                        .get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect::<Option<Vec<u8>>>();
            return match bytes.map(<[u8; 32]>::try_from) {
                Some(Ok(d)) if clean.len() == 64 => Ok(Trust::Fingerprint(d)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{spec:?} is not sha256:<64 hex digits>"),
                )),
            };
        }
        if spec.trim_start().starts_with("-----BEGIN") {
            return Ok(Trust::CaPem(spec.as_bytes().to_vec()));
        }
        std::fs::read(spec)
            .map(Trust::CaPem)
            .map_err(|e| io::Error::new(e.kind(), format!("reading CA certificate {spec}: {e}")))
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Verifies the server's chain against the one CA certificate in it whose
/// SHA-256 matches the pin.
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256(c.as_ref()) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "no certificate in the server's chain has the pinned fingerprint sha256:{}",
                    hex_lower(&self.pin)
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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

/// A rustls client configuration trusting only `trust`.
pub fn tls_config(trust: &Trust) -> io::Result<rustls::ClientConfig> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let cfg = match trust {
        Trust::CaPem(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| bad(format!("CA certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad("the CA file holds no certificate".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa {
                pin: *pin,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    Ok(cfg)
}

/// A blocking HTTP client trusting only `trust`, with ferry's timeouts.
pub fn client(trust: &Trust) -> io::Result<Client> {
    Client::builder()
        .tls_backend_preconfigured(tls_config(trust)?)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| io::Error::other(format!("building the HTTPS client: {e}")))
}

/// Sends a request, retrying connection errors and 5xx with backoff.
/// `make` builds the request afresh for each try.
pub fn send_with_retry(
    url: &str,
    make: &dyn Fn() -> reqwest::blocking::RequestBuilder,
) -> io::Result<reqwest::blocking::Response> {
    let mut tries = 0;
    loop {
        let last = tries == BACKOFF_MS.len();
        match make().send() {
            Ok(r) if r.status().is_server_error() && !last => {
                tracing::debug!(url, status = %r.status(), "retrying");
            }
            Ok(r) => return Ok(r),
            Err(e) if last || !(e.is_connect() || e.is_timeout() || e.is_request()) => {
                let kind = if e.is_timeout() {
                    io::ErrorKind::TimedOut
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(kind, format!("{url}: {}", error_chain(&e))));
            }
            Err(e) => tracing::debug!(url, "retrying: {}", error_chain(&e)),
        }
        std::thread::sleep(Duration::from_millis(BACKOFF_MS[tries]));
        tries += 1;
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turns an unexpected answer into an error naming the URL and the
/// server's message.
pub fn status_error(url: &str, r: reqwest::blocking::Response) -> io::Error {
    let status = r.status();
    let body = r.text().unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(body);
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => io::ErrorKind::PermissionDenied,
        StatusCode::NOT_FOUND => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{url}: {status}: {}", msg.trim()))
}

/// The mailbox `id` on the server at `base` (`https://host:port`).
pub struct HttpsTransport {
    client: Client,
    base: String,
    id: MailboxId,
    token: String,
}

impl HttpsTransport {
    /// A transport for mailbox `id` at `base`, authenticating with `token`.
    pub fn new(
        base: &str,
        id: MailboxId,
        token: &str,
        trust: &Trust,
    ) -> io::Result<HttpsTransport> {
        Ok(HttpsTransport {
            client: client(trust)?,
            base: base.trim_end_matches('/').to_string(),
            id,
            token: token.to_string(),
        })
    }

    fn url(&self, name: &str) -> String {
        format!("{}/v1/mailboxes/{}/{name}", self.base, self.id)
    }

    fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&[u8]>,
        create_only: bool,
    ) -> io::Result<reqwest::blocking::Response> {
        send_with_retry(url, &|| {
            let mut r = self
                .client
                .request(method.clone(), url)
                .bearer_auth(&self.token);
            if let Some(b) = body {
                r = r.body(b.to_vec());
            }
            if create_only {
                r = r.header(reqwest::header::IF_NONE_MATCH, "*");
            }
            r
        })
    }
}

impl Transport for HttpsTransport {
    fn describe(&self) -> String {
        format!("{}/v1/mailboxes/{}", self.base, self.id)
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let url = self.url(name);
        let r = self.send(reqwest::Method::GET, &url, None, false)?;
        match r.status() {
            StatusCode::OK => r
                .bytes()
                .map(|b| Some(b.to_vec()))
                .map_err(|e| io::Error::other(format!("{url}: {}", error_chain(&e)))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&url, r)),
        }
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let url = self.url(name);
        let r = self.send(reqwest::Method::PUT, &url, Some(data), false)?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&url, r))
        }
    }

    fn create(&self, name: &str, data: &[u8]) -> io::Result<bool> {
        let url = self.url(name);
        let r = self.send(reqwest::Method::PUT, &url, Some(data), true)?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::PRECONDITION_FAILED => Ok(false),
            _ => Err(status_error(&url, r)),
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let url = self.url("");
        let r = self.send(reqwest::Method::GET, &url, None, false)?;
        match r.status() {
            StatusCode::OK => {
                let mut names: Vec<String> = r
                    .json()
                    .map_err(|e| io::Error::other(format!("{url}: {}", error_chain(&e))))?;
                names.sort();
                Ok(names)
            }
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            _ => Err(status_error(&url, r)),
        }
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        let url = self.url(name);
        let r = self.send(reqwest::Method::DELETE, &url, None, false)?;
        if r.status().is_success() || r.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(&url, r))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_specs() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            Trust::parse(&pin).expect("pin"),
            Trust::Fingerprint([0xab; 32])
        );
        assert!(Trust::parse("sha256:abcd").is_err());
        assert!(Trust::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
        assert!(Trust::parse("/nonexistent/ca.pem").is_err());
        assert!(tls_config(&Trust::CaPem(b"not a certificate".to_vec())).is_err());
    }
}
