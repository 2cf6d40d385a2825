//! The operator's client of `ferry serve`: agents, jobs and capabilities
//! over HTTPS, blocking, with the agent crate's TLS (trust only the given
//! CA or fingerprint) and retries.

use std::io;

use agent::mailbox::https::{self, Trust};
use agent::mailbox::{Action, MailboxId};
use reqwest::blocking::Client as Http;

use crate::jobs::{AgentView, JobView};

/// A connection to one server with the operator token.
pub struct Client {
    http: Http,
    base: String,
    token: String,
}

impl Client {
    /// A client of the server at `base` (`https://host:port`).
    pub fn new(base: &str, token: &str, trust: &Trust) -> io::Result<Client> {
        Ok(Client {
            http: https::client(trust)?,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> io::Result<T> {
        let url = format!("{}{path}", self.base);
        let r = https::send_with_retry(&url, &|| {
            let mut r = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token);
            if let Some(b) = &body {
                r = r
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            r
        })?;
        if !r.status().is_success() {
            return Err(https::status_error(&url, r));
        }
        r.json()
            .map_err(|e| io::Error::other(format!("{url}: {}", https::error_chain(&e))))
    }

    /// Every agent, with online/offline judged with `offline_factor`.
    pub fn agents(&self, offline_factor: Option<u32>) -> io::Result<Vec<AgentView>> {
        let q = offline_factor.map_or(String::new(), |n| format!("?offline_factor={n}"));
        self.call(reqwest::Method::GET, &format!("/v1/agents{q}"), None)
    }

    /// Starts a job of `steps` on `agent`.
    pub fn create_job(&self, agent: &MailboxId, steps: Vec<Action>) -> io::Result<JobView> {
        let body = serde_json::json!({ "agent": agent, "steps": steps });
        self.call(reqwest::Method::POST, "/v1/jobs", Some(body))
    }

    /// Every job.
    pub fn jobs(&self) -> io::Result<Vec<JobView>> {
        self.call(reqwest::Method::GET, "/v1/jobs", None)
    }

    /// One job.
    pub fn job(&self, id: &str) -> io::Result<JobView> {
        self.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
    }

    /// A capability URL (absolute) to read `path` for `ttl_s` seconds.
    pub fn capability(&self, path: &str, ttl_s: u64) -> io::Result<String> {
        let body = serde_json::json!({ "path": path, "ttl_s": ttl_s });
        let v: serde_json::Value = self.call(reqwest::Method::POST, "/v1/caps", Some(body))?;
        let rel = v.get("url").and_then(|u| u.as_str()).ok_or_else(|| {
            io::Error::other(format!("{}/v1/caps: no url in the answer", self.base))
        })?;
        Ok(format!("{}{rel}", self.base))
    }
}
