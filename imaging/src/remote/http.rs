//! [`HttpStore`]: a library served over HTTPS by `ferry serve` (routes of
//! `manager::library_http`, nested at `/v1/library`):
//!
//! ```text
//! GET    /o/{key}            whole object; with Range: bytes=a-b, 206 + Content-Range
//! HEAD   /o/{key}            Content-Length = size
//! PUT    /o/{key}            atomic put; If-None-Match: * makes it create-only (412)
//! DELETE /o/{key}
//! GET    /list?prefix=P      [{"key": …, "size": …}] in key order
//! ```
//!
//! TLS trusts only the CA given in [`RemoteOptions::trust`], never the
//! system's roots; requests carry `Authorization: Bearer <token>`.
//! Connection errors, timeouts, 5xx and 429 are retried with exponential
//! backoff and full jitter, up to [`RemoteOptions::attempts`] tries; every
//! error names the URL. Sizes are never taken on trust: a range answer must
//! be a 206 whose `Content-Range` and body length are exactly the range
//! asked for, else the read fails (and is retried) rather than handing
//! wrong bytes up. Chunks are verified by BLAKE3 above this layer anyway.

use std::io::{self, Read};
use std::thread;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde::Deserialize;

use super::{backoff, key_ok, network_lock, RemoteError, RemoteOptions};
use crate::store::{LockGuard, LockMode, ObjectInfo, Store};

/// A library behind `ferry serve`'s library routes.
pub struct HttpStore {
    base: String,
    client: Client,
    token: Option<String>,
    opts: RemoteOptions,
}

/// What one attempt at a request ended with.
enum Attempt {
    /// Worth another try (connection error, timeout, 5xx, 429, a short or
    /// malformed answer).
    Retry(io::Error),
    /// Final (4xx, a refused put).
    Fatal(io::Error),
}

#[derive(Deserialize)]
struct ListEntry {
    key: String,
    size: u64,
}

impl HttpStore {
    /// A store at `url` (`https://host:port/v1/library`). `https` needs a
    /// CA in `opts`; plain `http` is accepted for tests behind a proxy.
    pub fn new(url: &str, opts: &RemoteOptions) -> Result<HttpStore, RemoteError> {
        let parsed = url::Url::parse(url).map_err(|e| RemoteError::BadUrl {
            url: url.into(),
            reason: e.to_string(),
        })?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(RemoteError::BadUrl {
                url: url.into(),
                reason: "a library URL has no query or fragment".into(),
            });
        }
        let mut builder = Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(128);
        if parsed.scheme() == "https" {
            let Some(trust) = &opts.trust else {
                return Err(RemoteError::Config {
                    url: url.into(),
                    reason: "no CA to trust: set FERRY_CA to the server's CA PEM file or sha256:<fingerprint>"
                        .into(),
                });
            };
            let tls = super::tls::tls_config(trust).map_err(|e| RemoteError::Config {
                url: url.into(),
                reason: format!("the CA: {e}"),
            })?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let client = builder.build().map_err(|e| RemoteError::Config {
            url: url.into(),
            reason: format!("HTTP client: {e}"),
        })?;
        Ok(HttpStore {
            base: url.trim_end_matches('/').to_string(),
            client,
            token: opts.token.clone(),
            opts: opts.clone(),
        })
    }

    fn object_url(&self, key: &str) -> String {
        format!("{}/o/{key}", self.base)
    }

    fn authed(&self, rb: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Runs `f` until it succeeds, fails for good, or the attempts run out.
    fn retry<T>(&self, what: &str, url: &str, mut f: impl FnMut() -> Attempt2<T>) -> io::Result<T> {
        let attempts = self.opts.attempts.max(1);
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                let d = backoff(self.opts.backoff, attempt - 1);
                tracing::debug!("retrying {what} {url} in {d:?}");
                thread::sleep(d);
            }
            match f() {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    tracing::debug!("{what} {url}: {e}");
                    last = Some(e);
                }
            }
        }
        let e = last.expect("at least one attempt ran");
        Err(io::Error::new(
            e.kind(),
            format!("{what} {url}: {e} (gave up after {attempts} attempts)"),
        ))
    }

    /// Sends a request; maps transport errors and bad statuses.
    fn send(&self, rb: RequestBuilder, url: &str) -> Attempt2<Response> {
        let resp = self.authed(rb).send().map_err(|e| transport(url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: String = resp.text().unwrap_or_default().chars().take(300).collect();
        Err(status_error(url, status, body.trim()))
    }
}

type Attempt2<T> = Result<T, Attempt>;

fn transport(url: &str, e: reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::ConnectionAborted
    };
    // Every transport failure (connect, TLS, reset, timeout, cut body) may
    // pass; a request that cannot even be built is not one of them.
    let msg = format!("{url}: {}", error_chain(&e));
    if e.is_builder() {
        Attempt::Fatal(io::Error::new(io::ErrorKind::InvalidInput, msg))
    } else {
        Attempt::Retry(io::Error::new(kind, msg))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn status_error(url: &str, status: StatusCode, body: &str) -> Attempt {
    let msg = if body.is_empty() {
        format!("{url}: HTTP {status}")
    } else {
        format!("{url}: HTTP {status}: {body}")
    };
    let kind = match status {
        StatusCode::NOT_FOUND => io::ErrorKind::NotFound,
        StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => io::ErrorKind::AlreadyExists,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => io::ErrorKind::PermissionDenied,
        StatusCode::BAD_REQUEST => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    let e = io::Error::new(kind, msg);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Attempt::Retry(e)
    } else {
        Attempt::Fatal(e)
    }
}

fn bad_answer(url: &str, reason: String) -> Attempt {
    Attempt::Retry(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{url}: {reason}"),
    ))
}

/// Reads exactly `buf.len()` bytes and checks that the body ends there.
/// Reads a body into `buf[*got..]`, advancing `*got` as bytes arrive (so
/// that a retry can ask for the rest), and checks that it ends there.
fn read_body_exact(
    resp: &mut Response,
    buf: &mut [u8],
    got: &mut usize,
    url: &str,
) -> Attempt2<()> {
    while *got < buf.len() {
        match resp.read(&mut buf[*got..]) {
            Ok(0) => {
                return Err(bad_answer(
                    url,
                    format!("body ended after {got} of {} bytes", buf.len()),
                ))
            }
            Ok(n) => *got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Attempt::Retry(io::Error::new(
                    e.kind(),
                    format!("{url}: reading the body at byte {got}: {e}"),
                )))
            }
        }
    }
    let mut extra = [0u8; 1];
    match resp.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(bad_answer(
            url,
            format!("body longer than the {} bytes asked for", buf.len()),
        )),
        Err(e) => Err(Attempt::Retry(io::Error::new(
            e.kind(),
            format!("{url}: reading the end of the body: {e}"),
        ))),
    }
}

/// Parses `bytes a-b/total` (total may be `*`).
fn content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

impl Store for HttpStore {
    fn location(&self) -> String {
        self.base.clone()
    }

    fn describe(&self, key: &str) -> String {
        self.object_url(key)
    }

    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        key_ok(key)?;
        let url = self.object_url(key);
        self.retry("GET", &url, || {
            let mut resp = self.send(self.client.get(&url), &url)?;
            let declared = resp.content_length();
            let mut out = Vec::with_capacity(declared.unwrap_or(0).min(64 << 20) as usize);
            resp.read_to_end(&mut out).map_err(|e| {
                Attempt::Retry(io::Error::new(
                    e.kind(),
                    format!("{url}: reading the body: {e}"),
                ))
            })?;
            match declared {
                Some(n) if n != out.len() as u64 => Err(bad_answer(
                    &url,
                    format!("Content-Length {n} but {} bytes came", out.len()),
                )),
                _ => Ok(out),
            }
        })
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        key_ok(key)?;
        if buf.is_empty() {
            return Ok(());
        }
        let url = self.object_url(key);
        let last = offset + buf.len() as u64 - 1;
        // Bytes already received: a retry after a cut asks for the rest
        // only (objects never change, and chunks are verified later).
        let mut done = 0usize;
        self.retry("GET", &format!("{url} (bytes {offset}-{last})"), || {
            if done == buf.len() {
                // Whole, but its end was wrong (too long, or unreadable):
                // ask for all of it again.
                done = 0;
            }
            let from = offset + done as u64;
            let mut resp = self.send(
                self.client
                    .get(&url)
                    .header(reqwest::header::RANGE, format!("bytes={from}-{last}")),
                &url,
            )?;
            if resp.status() != StatusCode::PARTIAL_CONTENT {
                return Err(Attempt::Fatal(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{url}: asked for bytes {from}-{last}, got HTTP {} instead of 206",
                        resp.status()
                    ),
                )));
            }
            let cr = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(content_range);
            if cr != Some((from, last)) {
                return Err(bad_answer(
                    &url,
                    format!("asked for bytes {from}-{last}, the answer says {cr:?}"),
                ));
            }
            let want = buf.len() - done;
            if let Some(n) = resp.content_length() {
                if n != want as u64 {
                    return Err(bad_answer(
                        &url,
                        format!("asked for {want} bytes, Content-Length is {n}"),
                    ));
                }
            }
            read_body_exact(&mut resp, buf, &mut done, &url)
        })
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        key_ok(key)?;
        let url = self.object_url(key);
        self.retry("PUT", &url, || {
            self.send(self.client.put(&url).body(data.to_vec()), &url)
                .map(drop)
        })
    }

    fn put_new(&self, key: &str, data: &[u8]) -> io::Result<()> {
        key_ok(key)?;
        let url = self.object_url(key);
        let mut tried = false;
        self.retry("PUT", &url, || {
            let r = self.send(
                self.client
                    .put(&url)
                    .header(reqwest::header::IF_NONE_MATCH, "*")
                    .body(data.to_vec()),
                &url,
            );
            // A retried create-only put that finds the object may be
            // finding its own first attempt: same bytes means done.
            let r = match r {
                Err(Attempt::Fatal(e)) if tried && e.kind() == io::ErrorKind::AlreadyExists => {
                    match self.get(key) {
                        Ok(have) if have == data => Ok(()),
                        _ => Err(Attempt::Fatal(e)),
                    }
                }
                other => other.map(drop),
            };
            tried = true;
            r
        })
    }

    fn size(&self, key: &str) -> io::Result<u64> {
        key_ok(key)?;
        let url = self.object_url(key);
        self.retry("HEAD", &url, || {
            let resp = self.send(self.client.head(&url), &url)?;
            resp.headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad_answer(&url, "HEAD without a Content-Length".into()))
        })
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        super::check_prefix(prefix).map_err(|r| io::Error::new(io::ErrorKind::InvalidInput, r))?;
        let mut url = url::Url::parse(&format!("{}/list", self.base))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        url.query_pairs_mut().append_pair("prefix", prefix);
        let url = url.to_string();
        let entries: Vec<ListEntry> = self.retry("GET", &url, || {
            let resp = self.send(self.client.get(&url), &url)?;
            let body = resp.bytes().map_err(|e| transport(&url, e))?;
            serde_json::from_slice(&body)
                .map_err(|e| bad_answer(&url, format!("listing does not parse: {e}")))
        })?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if !e.key.starts_with(prefix) || super::check_key(&e.key).is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{url}: the listing holds key {:?}", e.key),
                ));
            }
            out.push(ObjectInfo {
                key: e.key,
                size: e.size,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        key_ok(key)?;
        let url = self.object_url(key);
        self.retry("DELETE", &url, || {
            match self.send(self.client.delete(&url), &url) {
                Ok(_) => Ok(()),
                Err(Attempt::Fatal(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn lock(&self, mode: LockMode, _wait: bool) -> io::Result<LockGuard> {
        network_lock(&self.base, mode)
    }

    fn clean_temp(&self) -> io::Result<u64> {
        // The server's own store cleans its temp files; none live here.
        Ok(0)
    }

    fn parallel_reads(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers the first range request with half its body
    /// and then drops the connection, and every later one in full; it
    /// records the `Range` headers it was sent.
    fn cutting_server(object: Vec<u8>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/library", listener.local_addr().expect("addr"));
        let ranges = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&ranges);
        thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = Some(v.trim().to_string());
                    }
                }
                let Some(r) = range else { return };
                seen.lock().expect("ranges").push(r.clone());
                let (a, b) = r.split_once('-').expect("a-b");
                let (a, b): (usize, usize) = (a.parse().expect("a"), b.parse().expect("b"));
                let body = &object[a..=b];
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {a}-{b}/{}\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    object.len(),
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let send = if n == 0 {
                    &body[..body.len() / 2]
                } else {
                    body
                };
                let _ = conn.write_all(send);
            }
        });
        (url, ranges)
    }

    #[test]
    fn a_cut_range_read_asks_for_the_rest_only() {
        let object: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (url, ranges) = cutting_server(object.clone());
        let opts = RemoteOptions {
            backoff: std::time::Duration::from_millis(1),
            ..RemoteOptions::default()
        };
        let store = HttpStore::new(&url, &opts).expect("store");
        let mut buf = vec![0u8; 600_000];
        store
            .read_at("packs/p1", 100_000, &mut buf)
            .expect("resumed read");
        assert!(buf == object[100_000..700_000]);
        let ranges = ranges.lock().expect("ranges").clone();
        assert_eq!(
            ranges,
            vec!["100000-699999".to_string(), "400000-699999".to_string()]
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 0-9/100"), Some((0, 9)));
        assert_eq!(content_range("bytes 5-5/*"), Some((5, 5)));
        assert_eq!(content_range("bytes */100"), None);
        assert_eq!(content_range("0-9/100"), None);
    }
}
