//! What can go wrong talking to vlmcd.

use std::time::Duration;

/// Why a client call failed. Every variant has an errno ([`ClientError::errno`]) so a
/// frontend can complete its own request with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// vlmcd answered the request with an error, e.g.
    /// `snapshot vol1: Device or resource busy (os error 16)`.
    #[error("{}: {}", subject(.op, .target), std::io::Error::from_raw_os_error(*.errno))]
    Failed {
        /// The client call, lowercase (`read`, `snapshot`, ...).
        op: &'static str,
        /// The volume (or other name) it was about; empty for `list`.
        target: String,
        errno: i32,
    },
    /// The segment refused: joining it, binding a port, no free request or buffer, vlmcd's
    /// port not bound, its ring full, a name longer than a request's target field, ...
    #[error(transparent)]
    Segment(#[from] xseg::Error),
    /// vlmcd did not answer within the client's timeout. The request stays in flight; its
    /// reply, if it comes, is returned to the pool by a later call.
    #[error("{}: no reply from vlmcd within {timeout:?}", subject(.op, .target))]
    TimedOut { op: &'static str, target: String, timeout: Duration },
    /// vlmcd's answer does not make sense (short IO, malformed JSON, ...).
    #[error("{}: bad reply: {reason}", subject(.op, .target))]
    BadReply { op: &'static str, target: String, reason: String },
}

fn subject(op: &str, target: &str) -> String {
    if target.is_empty() {
        op.to_string()
    } else {
        format!("{op} {target}")
    }
}

impl ClientError {
    /// The errno this error stands for: the one vlmcd answered with, the segment error's,
    /// ETIMEDOUT for a timeout, EPROTO for a reply that makes no sense.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Failed { errno, .. } => *errno,
            ClientError::Segment(e) => e.errno(),
            ClientError::TimedOut { .. } => libc::ETIMEDOUT,
            ClientError::BadReply { .. } => libc::EPROTO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_call_and_the_errno() {
        let e = ClientError::Failed { op: "snapshot", target: "vol1".into(), errno: libc::EBUSY };
        assert_eq!(e.to_string(), "snapshot vol1: Device or resource busy (os error 16)");
        assert_eq!(e.errno(), libc::EBUSY);
        let e = ClientError::Failed { op: "list", target: String::new(), errno: libc::EIO };
        assert_eq!(e.to_string(), "list: Input/output error (os error 5)");
        let e = ClientError::TimedOut { op: "read", target: "v".into(), timeout: Duration::from_secs(3) };
        assert_eq!(e.to_string(), "read v: no reply from vlmcd within 3s");
        assert_eq!(e.errno(), libc::ETIMEDOUT);
        let e = ClientError::BadReply { op: "info", target: "v".into(), reason: "x".into() };
        assert_eq!(e.errno(), libc::EPROTO);
        let e = ClientError::from(xseg::Error::QueueFull { port: 1 });
        assert_eq!(e.errno(), libc::EAGAIN);
        assert_eq!(e.to_string(), "the request ring of port 1 is full");
    }
}
