//! Libraries over the network: the [`Store`] backends for a library served
//! over HTTPS by `ferry serve` ([`http::HttpStore`]) and for one kept in
//! S3-compatible object storage ([`s3::S3Store`]), and [`open_store`], which
//! turns a library URL into a store.
//!
//! Library URLs:
//!
//! ```text
//! /var/lib/ferry/library                     a local directory (LocalStore)
//! file:///var/lib/ferry/library              the same
//! https://host:8443/v1/library               ferry serve (HttpStore; bearer token, CA PEM)
//! s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1
//!                                            S3 (S3Store; AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
//! ```
//!
//! **Locking.** The library lock ([`Store::lock`]) is a `flock` on a local
//! store. Over the network there is no lock to share: network stores grant
//! shared locks at once (captures and restores are safe side by side by the
//! library's design: objects are content-addressed and written packs →
//! index → lists → manifest) and refuse exclusive ones with
//! `ErrorKind::Unsupported`: `gc` and `rm` must run where the library's
//! directory is (on the server) or against the bucket with no capture in
//! flight. A lease object would need clocks that agree and a reaper for
//! leases of crashed clients; refusing is honest and cheap.
//!
//! **Keys** crossing the network are checked by [`check_key`] on both ends.

pub(crate) mod adaptive;
#[cfg(feature = "net")]
pub mod http;
#[cfg(feature = "net")]
pub mod s3;
pub mod tls;

use std::io;
use std::time::Duration;

use crate::store::{LocalStore, LockGuard, LockMode, Store};

/// How to reach a network library.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Bearer token for `https://` libraries (`$FERRY_TOKEN`).
    pub token: Option<String>,
    /// The only CA trusted for `https://` libraries (`$FERRY_CA`: a PEM
    /// file, or `sha256:<fingerprint>`); the system's roots are never used.
    pub trust: Option<tls::Trust>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest time one request may take, body included (a range read is
    /// at most 4 MiB: minutes of margin on any link ferry targets).
    pub request_timeout: Duration,
    /// Attempts per request (first try included) on connection errors,
    /// timeouts, 5xx and 429.
    pub attempts: u32,
    /// First retry delay; doubled per attempt (with full jitter), capped at
    /// [`MAX_BACKOFF`].
    pub backoff: Duration,
}

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            token: None,
            trust: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            attempts: 6,
            backoff: Duration::from_millis(200),
        }
    }
}

impl RemoteOptions {
    /// Options from the environment: `FERRY_TOKEN`, and `FERRY_CA` (a PEM
    /// file's path, or `sha256:<fingerprint>`). An unreadable `FERRY_CA`
    /// is an error naming it.
    pub fn from_env() -> Result<RemoteOptions, RemoteError> {
        let mut o = RemoteOptions {
            token: std::env::var("FERRY_TOKEN").ok().filter(|t| !t.is_empty()),
            ..Default::default()
        };
        if let Some(ca) = std::env::var("FERRY_CA").ok().filter(|c| !c.is_empty()) {
            o.trust = Some(tls::Trust::parse(&ca).map_err(|e| RemoteError::Config {
                url: format!("FERRY_CA={ca}"),
                reason: format!("cannot load the CA certificate: {e}"),
            })?);
        }
        Ok(o)
    }
}

/// Why a library URL could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL is malformed or names an unknown scheme.
    #[error("library URL {url}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The client could not be set up (CA, credentials, runtime).
    #[error("library {url}: {reason}")]
    Config {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// True if `library` is a URL ferry opens as a network store
/// (`https://`, `http://`, `s3://`), not a local path.
pub fn is_remote(library: &str) -> bool {
    ["https://", "http://", "s3://"]
        .iter()
        .any(|s| library.starts_with(s))
}

/// The store a library URL or path names (see the module docs).
pub fn open_store(library: &str, opts: &RemoteOptions) -> Result<Box<dyn Store>, RemoteError> {
    if let Some(path) = library.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(RemoteError::BadUrl {
                url: library.into(),
                reason: "a file:// URL takes an absolute path (file:///dir)".into(),
            });
        }
        return Ok(Box::new(LocalStore::new(path)));
    }
    #[cfg(feature = "net")]
    {
        if library.starts_with("https://") || library.starts_with("http://") {
            return Ok(Box::new(http::HttpStore::new(library, opts)?));
        }
        if library.starts_with("s3://") {
            return Ok(Box::new(s3::S3Store::from_url(library)?));
        }
    }
    #[cfg(not(feature = "net"))]
    if is_remote(library) {
        let _ = opts;
        return Err(RemoteError::Config {
            url: library.into(),
            reason: "this build of imaging has no network stores (the `net` feature is off)".into(),
        });
    }
    if library.contains("://") {
        return Err(RemoteError::BadUrl {
            url: library.into(),
            reason: "unknown scheme (file://, https://, s3:// or a path)".into(),
        });
    }
    Ok(Box::new(LocalStore::new(library)))
}

/// The longest key accepted.
pub const MAX_KEY: usize = 512;

/// Checks a library key: 1–[`MAX_KEY`] bytes of `[A-Za-z0-9._-]` in
/// `/`-separated components, none empty or starting with `.` (so no `..`,
/// no absolute keys, no hidden files).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("key of {} bytes (1..={MAX_KEY})", key.len()));
    }
    for part in key.split('/') {
        if part.is_empty() || part.starts_with('.') {
            return Err(format!(
                "key {:?}: empty component, or one starting with '.'",
                key.chars().take(100).collect::<String>()
            ));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!(
                "key {:?}: only A-Z a-z 0-9 . _ - and /",
                key.chars().take(100).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// `check_key` as an `InvalidInput` error.
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub(crate) fn key_ok(key: &str) -> io::Result<()> {
    check_key(key).map_err(|r| io::Error::new(io::ErrorKind::InvalidInput, r))
}

/// A prefix for listing: like a key, but may be empty or end in `/`.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return if prefix.is_empty() {
            Ok(())
        } else {
            Err("prefix \"/\"".into())
        };
    }
    // A partial last component ("images/we") is allowed: it is a key prefix.
    check_key(trimmed)
}

/// The lock of a network store: shared is granted, exclusive refused (see
/// the module docs).
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub(crate) fn network_lock(location: &str, mode: LockMode) -> io::Result<LockGuard> {
    match mode {
        LockMode::Shared => Ok(Box::new(())),
        LockMode::Exclusive => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{location} is a network library: gc and rm need direct access to the store \
                 (run them where the library's directory is, with no capture in flight)"
            ),
        )),
    }
}

/// A random delay in `[0, min(cap, base * 2^attempt))` (full jitter).
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    let mut r = [0u8; 8];
    let frac = match getrandom::fill(&mut r) {
        Ok(()) => (u64::from_le_bytes(r) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    ceiling.mul_f64(frac.max(0.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in [
            "ferry-library.json",
            "packs/ab/ab12.pack",
            "images/web-01_2.json",
        ] {
            check_key(ok).expect(ok);
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            ".hidden",
            "a b",
            "a\\b",
            "é",
            "a%2fb",
            &"x".repeat(513),
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        for ok in ["", "images/", "packs/ab/", "images/we"] {
            check_prefix(ok).expect(ok);
        }
        for bad in ["/", "../", "a//"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        let o = RemoteOptions::default();
        assert_eq!(open_store("/tmp/x", &o).expect("path").location(), "/tmp/x");
        assert_eq!(
            open_store("file:///tmp/x", &o).expect("file").location(),
            "/tmp/x"
        );
        assert!(open_store("file://tmp/x", &o).is_err());
        assert!(open_store("ftp://h/x", &o).is_err());
        let err = open_store("https://127.0.0.1:1/v1/library", &o)
            .err()
            .expect("https needs a CA");
        assert!(err.to_string().contains("FERRY_CA"), "{err}");
        assert!(is_remote("s3://b/p") && !is_remote("/x"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for a in 0..30 {
            let d = backoff(base, a);
            assert!(d <= MAX_BACKOFF, "{a}: {d:?}");
            assert!(d <= base * (1 << a.min(10)), "{a}: {d:?}");
        }
    }
}
