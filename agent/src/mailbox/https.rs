//! A mailbox on `ferry serve`, over HTTPS (MAILBOX.md, section 5).
//!
//! TLS trusts only what it is given ([`Trust`], from
//! `imaging::remote::tls`, shared with the network library). Requests carry the
//! agent's bearer token, time out (10 s to connect, 30 s in all), and are
//! retried with backoff on connection errors and 5xx answers; 4xx answers
//! are final.

use std::io;
use std::time::Duration;

pub use imaging::remote::tls::{tls_config, Trust};
use reqwest::blocking::Client;
use reqwest::StatusCode;

use super::{MailboxId, Transport};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout: mailbox files are small.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Delays between tries after a connection error or 5xx: 6 tries over
/// about 6 s, long enough for a manager restart behind a load balancer.
const BACKOFF_MS: [u64; 5] = [200, 400, 800, 1600, 3200];

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
