//! manager: the mailbox server (`ferry serve`), its tokens and
//! certificates, job sequencing, and the operator's side.
//!
//! The protocol is specified in `manager/MAILBOX.md`; the types both sides
//! share live in `agent::mailbox`. Managers keep no state of their own:
//! mailboxes and job records live in a [`store::MailStore`] (a directory or
//! an S3 prefix), so several `ferry serve` processes can serve one store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod init;
pub mod jobs;
pub mod library_http;
pub mod server;
pub mod store;
