//! Tokens and capability URIs, with no server-side state beyond one secret.
//!
//! Every credential is an HMAC-SHA256 under the 32-byte secret that
//! `ferry serve --init` writes: the operator token of `"operator"`, the
//! enrollment token of `"enroll"`, an agent's token of `"agent:" + id`, and
//! a capability's signature of `"cap:" + path + ":" + expiry`. Checking one
//! recomputes the MAC and compares it in constant time
//! (`aws_lc_rs::hmac::verify`). Replacing the secret revokes everything.
//! The formats are specified in `manager/MAILBOX.md`, section 4.

use std::fmt;
use std::io;
use std::path::Path;

use agent::mailbox::{fill_random, hex_lower, MailboxId};
use aws_lc_rs::hmac;

/// Prefix of the operator token.
pub const OPERATOR_PREFIX: &str = "ferry-op.";
/// Prefix of the enrollment token.
pub const ENROLL_PREFIX: &str = "ferry-enroll.";
/// Prefix of an agent's token.
pub const AGENT_PREFIX: &str = "ferry-agent.";

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The secret file could not be read.
    #[error("reading the server secret {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The secret file holds something else.
    #[error("{path} is not a server secret (64 hex digits)")]
    Malformed {
        /// The file.
        path: String,
    },
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The operator: everything.
    Operator,
    /// An enrollment token: may create one mailbox.
    Enroll,
    /// An agent: its own mailbox.
    Agent(MailboxId),
    /// A capability URI: read the one path it was made for.
    Capability(String),
}

/// The server's secret.
pub struct Secret {
    key: hmac::Key,
    raw: [u8; 32],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh secret from the kernel's CSPRNG.
    pub fn generate() -> io::Result<Secret> {
        let mut raw = [0u8; 32];
        fill_random(&mut raw)?;
        Ok(Secret::from_bytes(raw))
    }

    /// The secret with these bytes.
    pub fn from_bytes(raw: [u8; 32]) -> Secret {
        Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
            raw,
        }
    }

    /// Its hex form, as stored in `DIR/secret`.
    pub fn to_hex(&self) -> String {
        hex_lower(&self.raw)
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Option<Secret> {
        let bytes = hex::decode(s.trim()).ok()?;
        let raw: [u8; 32] = bytes.try_into().ok()?;
        Some(Secret::from_bytes(raw))
    }

    /// Reads `DIR/secret`.
    pub fn load(path: &Path) -> Result<Secret, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Secret::from_hex(&text).ok_or_else(|| AuthError::Malformed {
            path: path.display().to_string(),
        })
    }

    fn mac(&self, msg: &str) -> String {
        hex_lower(hmac::sign(&self.key, msg.as_bytes()).as_ref())
    }

    fn verify(&self, msg: &str, tag_hex: &str) -> bool {
        match hex::decode(tag_hex) {
            Ok(tag) => hmac::verify(&self.key, msg.as_bytes(), &tag).is_ok(),
            Err(_) => false,
        }
    }

    /// The operator token.
    pub fn operator_token(&self) -> String {
        format!("{OPERATOR_PREFIX}{}", self.mac("operator"))
    }

    /// The enrollment token.
    pub fn enroll_token(&self) -> String {
        format!("{ENROLL_PREFIX}{}", self.mac("enroll"))
    }

    /// The token of mailbox `id`'s agent.
    pub fn agent_token(&self, id: &MailboxId) -> String {
        format!("{AGENT_PREFIX}{id}.{}", self.mac(&format!("agent:{id}")))
    }

    /// Who holds `token`, if anyone.
    pub fn check_token(&self, token: &str) -> Option<Principal> {
        if let Some(tag) = token.strip_prefix(OPERATOR_PREFIX) {
            return self.verify("operator", tag).then_some(Principal::Operator);
        }
        if let Some(tag) = token.strip_prefix(ENROLL_PREFIX) {
            return self.verify("enroll", tag).then_some(Principal::Enroll);
        }
        let rest = token.strip_prefix(AGENT_PREFIX)?;
        let (id, tag) = rest.split_once('.')?;
        let id = MailboxId::parse(id).ok()?;
        self.verify(&format!("agent:{id}"), tag)
            .then_some(Principal::Agent(id))
    }

    /// The query (`exp=..&sig=..`) that lets its holder read `path` (a URL
    /// path such as `/v1/mailboxes/<id>/status.json`) until `exp` (Unix
    /// seconds).
    pub fn capability_query(&self, path: &str, exp: u64) -> String {
        format!("exp={exp}&sig={}", self.mac(&format!("cap:{path}:{exp}")))
    }

    /// Whether `query` (a request's query string) is a capability for
    /// `path` that has not expired at `now_s`.
    pub fn check_capability(&self, path: &str, query: &str, now_s: u64) -> bool {
        let (mut exp, mut sig) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) if exp.is_none() => exp = Some(v),
                Some(("sig", v)) if sig.is_none() => sig = Some(v),
                _ => {}
            }
        }
        let (Some(exp_text), Some(sig)) = (exp, sig) else {
            return false;
        };
        let Ok(exp) = exp_text.parse::<u64>() else {
            return false;
        };
        // The MAC is over the canonical number, so "0100" is not "100".
        exp.to_string() == exp_text
            && now_s <= exp
            && self.verify(&format!("cap:{path}:{exp}"), sig)
    }
}

/// Whether a request with this principal may do `method` on a mailbox
/// file `file` of mailbox `id` (see MAILBOX.md's table).
pub fn may_access_file(p: &Principal, method: &str, id: &MailboxId, file: &str) -> bool {
    match p {
        Principal::Operator => true,
        Principal::Enroll => false,
        Principal::Capability(_) => matches!(method, "GET" | "HEAD"),
        Principal::Agent(own) if own != id => false,
        Principal::Agent(_) => match method {
            "GET" | "HEAD" => true,
            "PUT" => {
                file == agent::mailbox::STATUS
                    || file == agent::mailbox::HEARTBEAT
                    || file.starts_with("resp-")
                    || file.starts_with("req-")
            }
            "DELETE" => file.starts_with("cmd-"),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_do_not_cross() {
        let s = Secret::generate().expect("secret");
        let other = Secret::generate().expect("secret");
        let id = MailboxId::generate().expect("id");
        assert_eq!(
            s.check_token(&s.operator_token()),
            Some(Principal::Operator)
        );
        assert_eq!(s.check_token(&s.enroll_token()), Some(Principal::Enroll));
        assert_eq!(
            s.check_token(&s.agent_token(&id)),
            Some(Principal::Agent(id.clone()))
        );
        assert_eq!(s.check_token(&other.operator_token()), None);
        // An agent's MAC with another id in front is worthless.
        let id2 = MailboxId::generate().expect("id");
        let forged = s.agent_token(&id).replace(id.as_str(), id2.as_str());
        assert_eq!(s.check_token(&forged), None);
        // The enrollment MAC under the operator prefix is not the operator.
        let swapped = s.enroll_token().replace(ENROLL_PREFIX, OPERATOR_PREFIX);
        assert_eq!(s.check_token(&swapped), None);
        for junk in [
            "",
            "ferry-op.",
            "ferry-op.zz",
            "Bearer x",
            "ferry-agent.x.y",
        ] {
            assert_eq!(s.check_token(junk), None, "{junk:?}");
        }
        let back = Secret::from_hex(&s.to_hex()).expect("hex");
        assert_eq!(back.operator_token(), s.operator_token());
    }

    #[test]
    fn capabilities_cover_one_path_until_expiry() {
        let s = Secret::generate().expect("secret");
        let path = "/v1/mailboxes/0123456789abcdef0123456789abcdef/status.json";
        let q = s.capability_query(path, 1000);
        assert!(s.check_capability(path, &q, 999));
        assert!(s.check_capability(path, &q, 1000));
        assert!(!s.check_capability(path, &q, 1001), "expired");
        assert!(
            !s.check_capability(&format!("{path}x"), &q, 10),
            "other path"
        );
        let later = q.replace("exp=1000", "exp=2000");
        assert!(!s.check_capability(path, &later, 10), "extended expiry");
        let padded = q.replace("exp=1000", "exp=01000");
        assert!(
            !s.check_capability(path, &padded, 10),
            "non-canonical expiry"
        );
        assert!(!s.check_capability(path, "exp=1000", 10));
        assert!(!s.check_capability(path, "", 10));
    }

    #[test]
    fn agents_write_only_their_side() {
        let id = MailboxId::generate().expect("id");
        let other = MailboxId::generate().expect("id");
        let a = Principal::Agent(id.clone());
        assert!(may_access_file(&a, "PUT", &id, "status.json"));
        assert!(may_access_file(
            &a,
            "PUT",
            &id,
            "resp-00000000000000000001.json"
        ));
        assert!(!may_access_file(
            &a,
            "PUT",
            &id,
            "cmd-00000000000000000001.json"
        ));
        // A deployed server's first-boot check holds the agent token: it
        // replaces the status and sends a request (MAILBOX.md section 10).
        assert!(may_access_file(
            &a,
            "PUT",
            &id,
            "req-00000000000000000001.json"
        ));
        assert!(may_access_file(
            &a,
            "DELETE",
            &id,
            "cmd-00000000000000000001.json"
        ));
        assert!(!may_access_file(&a, "DELETE", &id, "status.json"));
        assert!(!may_access_file(&a, "GET", &other, "status.json"));
        assert!(!may_access_file(
            &Principal::Enroll,
            "GET",
            &id,
            "status.json"
        ));
        assert!(may_access_file(&Principal::Operator, "PUT", &id, "cmd-1"));
    }
}
