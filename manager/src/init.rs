//! `ferry serve --init`: the private CA, the server's certificate, the
//! secret and the two tokens, written into the server's directory.
//!
//! Every file is written 0600 through a temp file, fsync and rename, so a
//! crash leaves either no file or the whole one. The CA key is kept (0600)
//! so the server certificate can be reissued with more names later. Keys
//! are ECDSA P-256 from rcgen over aws-lc-rs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::auth::Secret;

/// The secret's file name in the server directory.
pub const SECRET_FILE: &str = "secret";
/// The CA certificate (PEM) agents and operators trust.
pub const CA_FILE: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// The server certificate (PEM).
pub const CERT_FILE: &str = "server.pem";
/// The server's private key.
pub const KEY_FILE: &str = "server.key";
/// The operator token, for the operator's convenience.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";
/// The enrollment token, for building boot media.
pub const ENROLL_TOKEN_FILE: &str = "enroll.token";

/// Names the server certificate always carries: the loopback names, and
/// 10.0.2.2, the host as QEMU's user networking shows it to a guest.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "10.0.2.2"];

/// Why initialisation failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The directory is initialised already.
    #[error("{0} is already initialised (it has a secret); remove it to start over")]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Certificate generation failed.
    #[error("generating the {what}: {source}")]
    Cert {
        /// Which certificate or key.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
}

/// What `--init` made.
#[derive(Debug)]
pub struct Initialised {
    /// The directory.
    pub dir: PathBuf,
    /// SHA-256 of the CA certificate's DER, lowercase hex.
    pub ca_fingerprint: String,
    /// The operator token.
    pub operator_token: String,
    /// The enrollment token.
    pub enroll_token: String,
    /// The server certificate's names.
    pub sans: Vec<String>,
}

/// Writes `data` to `dir/name`, mode 0600, atomically and durably.
pub fn write_private(dir: &Path, name: &str, data: &[u8]) -> Result<(), InitError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |source| InitError::Write {
        path: path.clone(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    drop(f);
    fs::rename(&tmp, &path).map_err(err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

/// SHA-256 of DER bytes, lowercase hex: what `ferry.ca=sha256:` pins.
pub fn fingerprint(der: &[u8]) -> String {
    agent::mailbox::hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// Creates the CA, the server certificate (with [`DEFAULT_SANS`] and
/// `extra_sans`), the secret and the tokens in `dir`.
pub fn init(dir: &Path, extra_sans: &[String]) -> Result<Initialised, InitError> {
    if dir.join(SECRET_FILE).exists() {
        return Err(InitError::Exists(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(|source| InitError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let cert_err = |what| move |source| InitError::Cert { what, source };
    let now = time::OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate().map_err(cert_err("CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "ferry private CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_err("CA"))?;

    let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    for s in extra_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let server_key = KeyPair::generate().map_err(cert_err("server key"))?;
    let mut sp = CertificateParams::new(sans.clone()).map_err(cert_err("server certificate"))?;
    sp.distinguished_name
        .push(DnType::CommonName, "ferry serve");
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.not_before = ca.not_before;
    sp.not_after = now + time::Duration::days(3650);
    let issuer = Issuer::new(ca, &ca_key);
    let server_cert = sp
        .signed_by(&server_key, &issuer)
        .map_err(cert_err("server certificate"))?;

    let secret = Secret::generate().map_err(|source| InitError::Write {
        path: dir.join(SECRET_FILE),
        source,
    })?;
    let operator_token = secret.operator_token();
    let enroll_token = secret.enroll_token();
    write_private(dir, CA_KEY_FILE, ca_key.serialize_pem().as_bytes())?;
    write_private(dir, CA_FILE, ca_cert.pem().as_bytes())?;
    write_private(dir, KEY_FILE, server_key.serialize_pem().as_bytes())?;
    write_private(dir, CERT_FILE, server_cert.pem().as_bytes())?;
    write_private(
        dir,
        OPERATOR_TOKEN_FILE,
        format!("{operator_token}\n").as_bytes(),
    )?;
    write_private(
        dir,
        ENROLL_TOKEN_FILE,
        format!("{enroll_token}\n").as_bytes(),
    )?;
    // The secret last: its presence means the directory is complete.
    write_private(
        dir,
        SECRET_FILE,
        format!("{}\n", secret.to_hex()).as_bytes(),
    )?;
    Ok(Initialised {
        dir: dir.to_path_buf(),
        ca_fingerprint: fingerprint(ca_cert.der()),
        operator_token,
        enroll_token,
        sans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_private_files_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let out = init(d.path(), &["mgr.example".into(), "192.0.2.7".into()]).expect("init");
        assert_eq!(out.ca_fingerprint.len(), 64);
        for f in [
            SECRET_FILE,
            CA_FILE,
            CA_KEY_FILE,
            CERT_FILE,
            KEY_FILE,
            OPERATOR_TOKEN_FILE,
            ENROLL_TOKEN_FILE,
        ] {
            let mode = fs::metadata(d.path().join(f))
                .expect(f)
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let secret = Secret::load(&d.path().join(SECRET_FILE)).expect("secret");
        assert_eq!(secret.operator_token(), out.operator_token);
        assert!(out.sans.contains(&"10.0.2.2".to_string()));
        assert!(out.sans.contains(&"mgr.example".to_string()));
        assert!(matches!(init(d.path(), &[]), Err(InitError::Exists(_))));
    }
}
