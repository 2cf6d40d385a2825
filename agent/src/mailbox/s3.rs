//! A mailbox in S3-compatible storage (or a directory) through
//! `object_store`, for fleets whose agents use a bucket directly.
//!
//! Write-once files use `PutMode::Create`, which object_store sends to S3
//! as `If-None-Match: *`; status and heartbeat use plain (atomic) puts.
//! Credentials come from the usual `AWS_*` environment variables; the URL
//! may add `endpoint=` and `region=`. The transport is synchronous like
//! [`Transport`]: it drives a private current-thread tokio runtime, so it
//! must not be called from inside another runtime.

use std::io;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{MailboxId, Transport};

/// Opens the store a URL names: `file:///dir` (created if absent) or
/// `s3://bucket[/prefix][?endpoint=URL&region=R]`. Returns the store and
/// the key prefix inside it (no leading or trailing `/`).
pub fn open_object_store(url: &str) -> io::Result<(Arc<dyn ObjectStore>, String)> {
    let bad = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("store URL {url:?}: {reason}"),
        )
    };
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad("a file:// URL needs an absolute path".into()));
        }
        std::fs::create_dir_all(path).map_err(|e| bad(format!("creating {path}: {e}")))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| bad(e.to_string()))?
            .with_fsync(true);
        return Ok((Arc::new(fs), String::new()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = loc.split_once('/').unwrap_or((loc, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket".into()));
        }
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("endpoint", v)) => {
                    b = b
                        .with_endpoint(v)
                        .with_allow_http(v.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                Some(("region", v)) => b = b.with_region(v),
                _ => return Err(bad(format!("unknown parameter {pair:?}"))),
            }
        }
        let s3 = b.build().map_err(|e| bad(e.to_string()))?;
        return Ok((Arc::new(s3), prefix.trim_matches('/').to_string()));
    }
    Err(bad("expected file:///path or s3://bucket/prefix".into()))
}

/// Mailbox `<prefix>/mailboxes/<id>/` in an object store.
pub struct S3Transport {
    os: Arc<dyn ObjectStore>,
    dir: String,
    describe: String,
    rt: tokio::runtime::Runtime,
}

impl S3Transport {
    /// The mailbox `id` in the store at `url` (see [`open_object_store`]).
    pub fn open(url: &str, id: &MailboxId) -> io::Result<S3Transport> {
        let (os, prefix) = open_object_store(url)?;
        let dir = if prefix.is_empty() {
            format!("mailboxes/{id}")
        } else {
            format!("{prefix}/mailboxes/{id}")
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let base = url.split('?').next().unwrap_or(url).trim_end_matches('/');
        Ok(S3Transport {
            os,
            describe: format!("{base}/mailboxes/{id}"),
            dir,
            rt,
        })
    }

    fn key(&self, name: &str) -> io::Result<ObjPath> {
        super::check_file_name(name)?;
        Ok(ObjPath::from(format!("{}/{name}", self.dir)))
    }

    fn err(&self, name: &str, e: object_store::Error) -> io::Error {
        io::Error::other(format!("{}/{name}: {e}", self.describe))
    }
}

impl Transport for S3Transport {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let key = self.key(name)?;
        self.rt.block_on(async {
            match self.os.get(&key).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.err(name, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(name, e)),
            }
        })
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let key = self.key(name)?;
        let payload = PutPayload::from(data.to_vec());
        self.rt
            .block_on(self.os.put(&key, payload))
            .map(|_| ())
            .map_err(|e| self.err(name, e))
    }

    fn create(&self, name: &str, data: &[u8]) -> io::Result<bool> {
        let key = self.key(name)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let payload = PutPayload::from(data.to_vec());
        match self.rt.block_on(self.os.put_opts(&key, payload, opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(name, e)),
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let prefix = ObjPath::from(self.dir.as_str());
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.os.list(Some(&prefix)).try_collect())
            .map_err(|e| self.err("", e))?;
        let mut names: Vec<String> = metas
            .iter()
            .filter_map(|m| {
                let rest = m.location.as_ref().strip_prefix(self.dir.as_str())?;
                let name = rest.strip_prefix('/')?;
                (!name.contains('/') && !name.starts_with('.')).then(|| name.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        let key = self.key(name)?;
        match self.rt.block_on(self.os.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_through_object_store_is_write_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let id = MailboxId::generate().expect("id");
        let t = S3Transport::open(&format!("file://{}", d.path().display()), &id).expect("open");
        assert_eq!(t.read("status.json").expect("read"), None);
        assert!(t.create("cmd-1.json", b"a").expect("create"));
        assert!(!t.create("cmd-1.json", b"b").expect("create again"));
        t.replace("status.json", b"s").expect("replace");
        assert_eq!(t.list().expect("list"), ["cmd-1.json", "status.json"]);
        assert_eq!(
            t.read("cmd-1.json").expect("read").as_deref(),
            Some(&b"a"[..])
        );
        t.delete("cmd-1.json").expect("delete");
        t.delete("cmd-1.json").expect("delete absent");
        assert!(t.read("../x").is_err());
        assert!(d
            .path()
            .join(format!("mailboxes/{id}/status.json"))
            .exists());
        assert!(open_object_store("s3://").is_err());
        assert!(open_object_store("ftp://x").is_err());
    }
}
