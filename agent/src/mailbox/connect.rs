//! Enrollment and connecting: from a URL, a token and a trust anchor to a
//! [`Transport`].
//!
//! - `https://host:port[/v1/mailboxes/<id>]`: `ferry serve`; the mailbox id
//!   is taken from the agent token (`ferry-agent.<id>.<mac>`) when the URL
//!   does not name it.
//! - `s3://bucket[/prefix]/mailboxes/<id>[?endpoint=..]`: a bucket directly
//!   (credentials from `AWS_*`; the token is unused).
//! - `file:///dir/mailboxes/<id>`: a local or mounted directory.

use std::io;

use super::https::{self, Trust};
use super::{LocalTransport, MailboxId, Transport};

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Creates a mailbox on the server at `server_url` with an enrollment
/// token; returns its id and the agent's token. `id` asks for a
/// particular id (one the agent kept from an earlier boot); the server
/// answers 409 if it exists.
pub fn enroll_with_id(
    server_url: &str,
    enrollment_token: &str,
    trust: &Trust,
    id: Option<&MailboxId>,
) -> io::Result<(MailboxId, String)> {
    let client = https::client(trust)?;
    let url = format!("{}/v1/enroll", server_url.trim_end_matches('/'));
    let body = match id {
        Some(id) => serde_json::json!({ "id": id }),
        None => serde_json::json!({}),
    };
    let r = https::send_with_retry(&url, &|| {
        client
            .post(&url)
            .bearer_auth(enrollment_token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
    })?;
    if !r.status().is_success() {
        return Err(https::status_error(&url, r));
    }
    #[derive(serde::Deserialize)]
    struct Enrolled {
        id: MailboxId,
        token: String,
    }
    let e: Enrolled = r
        .json()
        .map_err(|e| io::Error::other(format!("{url}: {}", https::error_chain(&e))))?;
    Ok((e.id, e.token))
}

/// Creates a fresh mailbox; see [`enroll_with_id`].
pub fn enroll(
    server_url: &str,
    enrollment_token: &str,
    trust: &Trust,
) -> io::Result<(MailboxId, String)> {
    enroll_with_id(server_url, enrollment_token, trust, None)
}

/// The mailbox id in an agent token.
pub fn token_mailbox(token: &str) -> Option<MailboxId> {
    let rest = token.strip_prefix("ferry-agent.")?;
    let (id, _) = rest.split_once('.')?;
    MailboxId::parse(id).ok()
}

/// The transport for `url` (see the module docs). `trust` is needed for
/// `https://` only.
pub fn connect(url: &str, token: &str, trust: Option<&Trust>) -> io::Result<Box<dyn Transport>> {
    if url.starts_with("https://") {
        let trust = trust.ok_or_else(|| {
            invalid(format!(
                "{url}: an https:// mailbox needs a CA (ca.pem or sha256:...)"
            ))
        })?;
        let (base, id) = match url.split_once("/v1/mailboxes/") {
            Some((base, id)) => (
                base,
                MailboxId::parse(id.trim_end_matches('/'))
                    .map_err(|e| invalid(format!("{url}: {e}")))?,
            ),
            None => (
                url.trim_end_matches('/'),
                token_mailbox(token)
                    .ok_or_else(|| invalid(format!("{url}: the token names no mailbox")))?,
            ),
        };
        return Ok(Box::new(https::HttpsTransport::new(
            base, id, token, trust,
        )?));
    }
    if url.starts_with("s3://") {
        let (loc, query) = url.split_once('?').unwrap_or((url, ""));
        let (store, id) = loc
            .trim_end_matches('/')
            .rsplit_once("/mailboxes/")
            .ok_or_else(|| invalid(format!("{url}: expected s3://bucket/prefix/mailboxes/<id>")))?;
        let id = MailboxId::parse(id).map_err(|e| invalid(format!("{url}: {e}")))?;
        let store_url = if query.is_empty() {
            store.to_string()
        } else {
            format!("{store}?{query}")
        };
        return Ok(Box::new(super::s3::S3Transport::open(&store_url, &id)?));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Box::new(LocalTransport::new(path)));
    }
    Err(invalid(format!(
        "{url}: a mailbox URL is https://, s3:// or file://"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_transports() {
        let id = MailboxId::generate().expect("id");
        let token = format!("ferry-agent.{id}.00");
        assert_eq!(token_mailbox(&token), Some(id.clone()));
        assert_eq!(token_mailbox("ferry-op.00"), None);
        let d = tempfile::tempdir().expect("tempdir");
        let t = connect(&format!("file://{}", d.path().display()), "", None).expect("file");
        assert_eq!(t.describe(), d.path().display().to_string());
        assert!(connect("https://h:1", &token, None).is_err(), "no CA");
        let t = connect("https://h:1", &token, Some(&Trust::Fingerprint([0; 32]))).expect("https");
        assert_eq!(t.describe(), format!("https://h:1/v1/mailboxes/{id}"));
        assert!(
            connect("s3://bucket/x", "", None).is_err(),
            "no mailbox in URL"
        );
        assert!(connect("gopher://x", "", None).is_err());
    }
}
