//! Where the manager keeps mailboxes and job records: a directory
//! (`file:///srv/ferry/store`) or an S3 prefix
//! (`s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1`),
//! both through `object_store`.
//!
//! Write-once files use `PutMode::Create`: link(2) of a fsynced temp file on
//! a directory, `If-None-Match: *` on S3. Status and heartbeat use plain
//! puts, which are atomic on both. S3 credentials come from the usual
//! `AWS_*` environment variables.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// Why a store operation failed; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not usable.
    #[error("store URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An operation on a key failed.
    #[error("{store}: {action} {key}: {source}")]
    Op {
        /// The store.
        store: String,
        /// What was being done.
        action: &'static str,
        /// The key.
        key: String,
        /// The cause.
        #[source]
        source: Box<object_store::Error>,
    },
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A key/value store with conditional creates.
#[derive(Clone)]
pub struct MailStore {
    os: Arc<dyn ObjectStore>,
    url: String,
}

impl std::fmt::Debug for MailStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MailStore({})", self.url)
    }
}

/// Opens the object store a URL names: `file:///dir` or
/// `s3://bucket[/prefix][?endpoint=URL&region=R]` (the agent's parser, so
/// both sides read URLs the same way).
pub fn open_object_store(url: &str) -> Result<(Arc<dyn ObjectStore>, String)> {
    agent::mailbox::s3::open_object_store(url).map_err(|e| StoreError::Url {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl MailStore {
    /// Opens the store `url` names (see [`open_object_store`]).
    pub fn open(url: &str) -> Result<MailStore> {
        let (os, prefix) = open_object_store(url)?;
        Ok(MailStore::new(os, prefix, url))
    }

    /// A store over `os`, with keys under `prefix`.
    pub fn new(os: Arc<dyn ObjectStore>, prefix: String, url: &str) -> MailStore {
        let os: Arc<dyn ObjectStore> = if prefix.is_empty() {
            os
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(os, prefix.as_str()))
        };
        MailStore {
            os,
            url: url.to_string(),
        }
    }

    /// The store's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(
        &self,
        action: &'static str,
        key: &str,
    ) -> impl FnOnce(object_store::Error) -> StoreError {
        let store = self.url.clone();
        let key = key.to_string();
        move |source| StoreError::Op {
            store,
            action,
            key,
            source: Box::new(source),
        }
    }

    /// An object, or `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.os.get(&ObjPath::from(key)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(self.err("reading", key)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err("reading", key)(e)),
        }
    }

    /// Creates `key` if absent; `Ok(false)` if it exists (nothing written).
    pub async fn create(&self, key: &str, data: Bytes) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .os
            .put_opts(&ObjPath::from(key), PutPayload::from_bytes(data), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("creating", key)(e)),
        }
    }

    /// Replaces `key` atomically.
    pub async fn replace(&self, key: &str, data: Bytes) -> Result<()> {
        self.os
            .put(&ObjPath::from(key), PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(self.err("writing", key))
    }

    /// Deletes `key`; absent is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.os.delete(&ObjPath::from(key)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.err("deleting", key)(e)),
        }
    }

    /// One level of `dir`: its objects and its "directories"; `None` if it
    /// does not exist.
    async fn listing(&self, dir: &str) -> Result<Option<object_store::ListResult>> {
        let prefix = ObjPath::from(dir);
        match self.os.list_with_delimiter(Some(&prefix)).await {
            Ok(l) => Ok(Some(l)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err("listing", dir)(e)),
        }
    }

    /// The names of the objects directly under `dir` (no `/` in them),
    /// sorted.
    pub async fn list_files(&self, dir: &str) -> Result<Vec<String>> {
        let Some(listing) = self.listing(dir).await? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = listing
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The names of the "directories" directly under `dir`, sorted.
    pub async fn list_dirs(&self, dir: &str) -> Result<Vec<String>> {
        let Some(listing) = self.listing(dir).await? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes every object under `dir/`.
    pub async fn delete_dir(&self, dir: &str) -> Result<()> {
        let prefix = ObjPath::from(dir);
        let keys: Vec<ObjPath> = self
            .os
            .list(Some(&prefix))
            .map_ok(|o| o.location)
            .try_collect()
            .await
            .map_err(self.err("listing", dir))?;
        for k in keys {
            self.delete(k.as_ref()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn directory_store_creates_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", d.path().display());
        let s = MailStore::open(&url).expect("open");
        assert_eq!(s.get("mailboxes/a/x.json").await.expect("get"), None);
        assert!(s
            .create("mailboxes/a/x.json", Bytes::from_static(b"1"))
            .await
            .expect("create"));
        assert!(!s
            .create("mailboxes/a/x.json", Bytes::from_static(b"2"))
            .await
            .expect("create"));
        assert_eq!(
            s.get("mailboxes/a/x.json").await.expect("get").as_deref(),
            Some(&b"1"[..])
        );
        s.replace("mailboxes/a/s.json", Bytes::from_static(b"s"))
            .await
            .expect("replace");
        s.replace("mailboxes/b/s.json", Bytes::from_static(b"s"))
            .await
            .expect("replace");
        assert_eq!(
            s.list_files("mailboxes/a").await.expect("ls"),
            ["s.json", "x.json"]
        );
        assert_eq!(s.list_dirs("mailboxes").await.expect("ls"), ["a", "b"]);
        assert!(s.list_files("mailboxes/zz").await.expect("ls").is_empty());
        s.delete_dir("mailboxes/a").await.expect("rm");
        assert!(s.list_files("mailboxes/a").await.expect("ls").is_empty());
        s.delete("mailboxes/a/none").await.expect("delete absent");
    }
}
