//! TLS trust for ferry's HTTPS clients (a network library, a mailbox).
//!
//! rustls with aws-lc-rs, trusting only what it is given: the private CA's
//! certificate (`ca.pem`), or a pinned SHA-256 fingerprint of that CA
//! (`sha256:<hex>`), which must then appear in the chain the server sends
//! and is used as the only root. No system trust store is consulted, so a
//! ramdisk without one still verifies its server, and a boot medium that
//! carries only the fingerprint on its kernel command line reaches both
//! the mailbox and the library.

use std::fmt;
use std::io;

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
            Trust::Fingerprint(d) => write!(f, "Fingerprint(sha256:{})", hex::encode(d)),
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

#[cfg(feature = "net")]
pub use verify::{pem_fingerprint, tls_config};

/// The rustls side: only with the network stores.
#[cfg(feature = "net")]
mod verify {
    use super::Trust;
    use std::io;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

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
                        hex::encode(self.pin)
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

    /// `sha256:<hex>` of the first certificate in `pem`: the pin a boot
    /// medium's command line carries (`ferry.ca=`), or `None` if `pem` holds
    /// no certificate.
    pub fn pem_fingerprint(pem: &[u8]) -> Option<String> {
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
        Some(format!("sha256:{}", hex::encode(sha256(cert.as_ref()))))
    }
}
#[cfg(all(test, feature = "net"))]
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
