//! [`S3Store`]: a library in an S3-compatible bucket, through
//! `object_store`'s `AmazonS3`.
//!
//! URL: `s3://BUCKET[/PREFIX][?endpoint=URL&region=R]`. Path-style requests
//! (MinIO, Ceph, moto and most non-AWS servers need them); `allow_http`
//! when the endpoint is `http://` (a test server on loopback). Credentials
//! come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, and the rest that `AmazonS3Builder::from_env` reads);
//! `AWS_ENDPOINT_URL` and `AWS_REGION` are used when the URL does not say.
//!
//! S3 PUTs are atomic (an object appears whole or not at all), which is the
//! [`Store`] contract; [`Store::put_new`] is a `PutMode::Create` put
//! (`If-None-Match: *`). The trait is synchronous: each call is driven on a
//! private multi-threaded tokio runtime, so the restore pipeline's fetch
//! threads run their requests side by side. `object_store` retries
//! transient failures itself (its `RetryConfig`: backoff with jitter).

use std::io;
use std::ops::Range;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{key_ok, network_lock, RemoteError};
use crate::store::{LockGuard, LockMode, ObjectInfo, Store};

/// A library in an S3 bucket, under a prefix.
pub struct S3Store {
    rt: tokio::runtime::Runtime,
    s3: Arc<AmazonS3>,
    bucket: String,
    /// Empty, or ending in `/`.
    prefix: String,
}

impl S3Store {
    /// Opens `s3://bucket/prefix?endpoint=…&region=…` (see the module docs).
    pub fn from_url(url: &str) -> Result<S3Store, RemoteError> {
        let bad = |reason: String| RemoteError::BadUrl {
            url: url.into(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("no bucket (s3://BUCKET/PREFIX)".into()))?
            .to_string();
        let prefix = parsed.path().trim_matches('/').to_string();
        if !prefix.is_empty() {
            super::check_key(&prefix).map_err(|r| bad(format!("prefix: {r}")))?;
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false);
        let mut endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "endpoint" => endpoint = Some(v.into_owned()),
                "region" => b = b.with_region(v.into_owned()),
                other => return Err(bad(format!("unknown parameter {other:?}"))),
            }
        }
        if let Some(ep) = endpoint {
            b = b
                .with_allow_http(ep.starts_with("http://"))
                .with_endpoint(ep);
        }
        let s3 = b.build().map_err(|e| RemoteError::Config {
            url: url.into(),
            reason: e.to_string(),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-s3")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Config {
                url: url.into(),
                reason: format!("starting the I/O runtime: {e}"),
            })?;
        Ok(S3Store {
            rt,
            s3: Arc::new(s3),
            bucket,
            prefix: if prefix.is_empty() {
                prefix
            } else {
                format!("{prefix}/")
            },
        })
    }

    fn path(&self, key: &str) -> io::Result<ObjPath> {
        key_ok(key)?;
        Ok(ObjPath::from(format!("{}{key}", self.prefix)))
    }

    fn err(&self, op: &str, key: &str, e: object_store::Error) -> io::Error {
        let kind = match &e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => io::ErrorKind::AlreadyExists,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{op} {}: {e}", self.describe(key)))
    }
}

impl Store for S3Store {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }

    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        let p = self.path(key)?;
        self.rt.block_on(async {
            let r = self.s3.get(&p).await.map_err(|e| self.err("GET", key, e))?;
            let size = r.meta.size;
            let bytes = r.bytes().await.map_err(|e| self.err("GET", key, e))?;
            if bytes.len() as u64 != size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "GET {}: {} bytes for an object of {size}",
                        self.describe(key),
                        bytes.len()
                    ),
                ));
            }
            Ok(bytes.to_vec())
        })
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let p = self.path(key)?;
        if buf.is_empty() {
            return Ok(());
        }
        let range: Range<u64> = offset..offset + buf.len() as u64;
        let bytes = self
            .rt
            .block_on(self.s3.get_range(&p, range.clone()))
            .map_err(|e| self.err("GET", key, e))?;
        if bytes.len() != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "GET {} bytes {range:?}: {} bytes came",
                    self.describe(key),
                    bytes.len()
                ),
            ));
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let p = self.path(key)?;
        self.rt
            .block_on(self.s3.put(&p, PutPayload::from(data.to_vec())))
            .map(drop)
            .map_err(|e| self.err("PUT", key, e))
    }

    fn put_new(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let p = self.path(key)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.rt
            .block_on(self.s3.put_opts(&p, PutPayload::from(data.to_vec()), opts))
            .map(drop)
            .map_err(|e| self.err("PUT (create-only)", key, e))
    }

    fn size(&self, key: &str) -> io::Result<u64> {
        let p = self.path(key)?;
        self.rt
            .block_on(self.s3.head(&p))
            .map(|m| m.size)
            .map_err(|e| self.err("HEAD", key, e))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        super::check_prefix(prefix).map_err(|r| io::Error::new(io::ErrorKind::InvalidInput, r))?;
        // object_store lists by whole path components: list the directory
        // part and filter on the full prefix.
        let dir = match prefix.rfind('/') {
            Some(i) => format!("{}{}", self.prefix, &prefix[..i]),
            None => self.prefix.trim_end_matches('/').to_string(),
        };
        let dir_path = (!dir.is_empty()).then(|| ObjPath::from(dir));
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.s3.list(dir_path.as_ref()).try_collect())
            .map_err(|e| self.err("LIST", prefix, e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(&self.prefix)?.to_string();
                key.starts_with(prefix)
                    .then_some(ObjectInfo { key, size: m.size })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let p = self.path(key)?;
        match self.rt.block_on(self.s3.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", key, e)),
        }
    }

    fn lock(&self, mode: LockMode, _wait: bool) -> io::Result<LockGuard> {
        network_lock(&self.location(), mode)
    }

    fn clean_temp(&self) -> io::Result<u64> {
        // S3 puts leave no temp objects (no multipart uploads are used).
        Ok(0)
    }

    fn parallel_reads(&self) -> bool {
        true
    }
}
