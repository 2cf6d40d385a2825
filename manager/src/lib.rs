//! manager: the mailbox and library server, and the operator's side.
//!
//! It will own (issue 7): the mailbox protocol (status, heartbeat, and
//! write-once numbered command, request and response files per agent) over
//! HTTPS with rustls and over S3-compatible storage; serving the image
//! library to agents with ranged, parallel reads; tokens and capability
//! URIs; and job sequencing for operator commands. Managers keep no state
//! of their own, so several can serve one store.
//!
//! Nothing is implemented yet: this crate is a documented placeholder in the
//! workspace layout.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod library_http;
