//! [`CallOutcome`]: what one call to an outside HTTP service (Sekoia, a destination, later a
//! token endpoint) came to, in the terms the call path acts on. [`CallOutcome::of_status`] is
//! the one place where an HTTP status becomes an outcome; every client maps its answers
//! through it, so a 401 or a 429 means the same thing whichever stage made the call.

use std::time::Duration;

use crate::{Class, classify};

/// What one outside call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome<T> {
    /// 2xx, with what the caller read from the answer.
    Done(T),
    /// Worth another try later: 408, 5xx except 501, a timeout, a transport error, a garbled
    /// success. Counts toward the circuit.
    Transient {
        /// HTTP status, if a response came.
        status: Option<u16>,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// What happened (redacted, bounded).
        reason: String,
    },
    /// 429: every call waits, no attempt is burnt.
    Throttled {
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// What happened.
        reason: String,
    },
    /// 401/403: our credentials are rejected; every call waits until they work again.
    CredentialsRejected {
        /// 401 or 403.
        status: u16,
        /// What happened.
        reason: String,
    },
    /// The service answered that what we asked for is not there yet (Get Alert's 404 right
    /// after the notification): retried a bounded number of times; the service is up.
    NotYet {
        /// HTTP status.
        status: u16,
        /// What happened.
        reason: String,
    },
    /// Too large: the service answered 413, or its answer was over our read cap.
    TooLarge {
        /// HTTP status, if the service answered one.
        status: Option<u16>,
        /// What happened, with the sizes.
        reason: String,
    },
    /// Will fail the same way again: other 4xx, 501, an unexpected 1xx/3xx.
    Permanent {
        /// HTTP status, if any.
        status: Option<u16>,
        /// What happened.
        reason: String,
    },
}

impl<T> CallOutcome<T> {
    /// The outcome of an answer with a status that is not 2xx. `reason` says what happened
    /// (already redacted and bounded by the caller).
    pub fn of_status(status: u16, retry_after: Option<Duration>, reason: String) -> Self {
        match status {
            401 | 403 => CallOutcome::CredentialsRejected { status, reason },
            429 => CallOutcome::Throttled {
                retry_after,
                reason,
            },
            413 => CallOutcome::TooLarge {
                status: Some(status),
                reason,
            },
            _ => match classify(status) {
                Class::Transient => CallOutcome::Transient {
                    status: Some(status),
                    retry_after,
                    reason,
                },
                // A 2xx reaching here was not what the caller could use: it says why.
                Class::Permanent | Class::Success => CallOutcome::Permanent {
                    status: Some(status),
                    reason,
                },
            },
        }
    }

    /// No answer: a timeout, a refused connection, a broken transfer.
    pub fn transport(reason: String) -> Self {
        CallOutcome::Transient {
            status: None,
            retry_after: None,
            reason,
        }
    }

    /// The HTTP status the outcome came with (200 for [`CallOutcome::Done`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            CallOutcome::Done(_) => Some(200),
            CallOutcome::Transient { status, .. }
            | CallOutcome::TooLarge { status, .. }
            | CallOutcome::Permanent { status, .. } => *status,
            CallOutcome::Throttled { .. } => Some(429),
            CallOutcome::CredentialsRejected { status, .. }
            | CallOutcome::NotYet { status, .. } => Some(*status),
        }
    }

    /// What went wrong (`None` for [`CallOutcome::Done`]).
    pub fn reason(&self) -> Option<&str> {
        match self {
            CallOutcome::Done(_) => None,
            CallOutcome::Transient { reason, .. }
            | CallOutcome::Throttled { reason, .. }
            | CallOutcome::CredentialsRejected { reason, .. }
            | CallOutcome::NotYet { reason, .. }
            | CallOutcome::TooLarge { reason, .. }
            | CallOutcome::Permanent { reason, .. } => Some(reason),
        }
    }

    /// The same outcome with the success value mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> CallOutcome<U> {
        match self {
            CallOutcome::Done(v) => CallOutcome::Done(f(v)),
            CallOutcome::Transient {
                status,
                retry_after,
                reason,
            } => CallOutcome::Transient {
                status,
                retry_after,
                reason,
            },
            CallOutcome::Throttled {
                retry_after,
                reason,
            } => CallOutcome::Throttled {
                retry_after,
                reason,
            },
            CallOutcome::CredentialsRejected { status, reason } => {
                CallOutcome::CredentialsRejected { status, reason }
            }
            CallOutcome::NotYet { status, reason } => CallOutcome::NotYet { status, reason },
            CallOutcome::TooLarge { status, reason } => CallOutcome::TooLarge { status, reason },
            CallOutcome::Permanent { status, reason } => CallOutcome::Permanent { status, reason },
        }
    }

    /// A short label of the outcome for metrics and logs ("done", "transient", …).
    pub fn kind(&self) -> &'static str {
        match self {
            CallOutcome::Done(_) => "done",
            CallOutcome::Transient { .. } => "transient",
            CallOutcome::Throttled { .. } => "throttled",
            CallOutcome::CredentialsRejected { .. } => "credentials_rejected",
            CallOutcome::NotYet { .. } => "not_yet",
            CallOutcome::TooLarge { .. } => "too_large",
            CallOutcome::Permanent { .. } => "permanent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_the_outcomes_the_call_path_acts_on() {
        let o = |s: u16| CallOutcome::<()>::of_status(s, None, format!("{s}")).kind();
        assert_eq!(o(401), "credentials_rejected");
        assert_eq!(o(403), "credentials_rejected");
        assert_eq!(o(429), "throttled");
        assert_eq!(o(413), "too_large");
        for s in [408, 500, 502, 503, 504] {
            assert_eq!(o(s), "transient", "{s}");
        }
        for s in [400, 404, 409, 422, 501, 302] {
            assert_eq!(o(s), "permanent", "{s}");
        }
        let ra = Some(Duration::from_secs(7));
        assert_eq!(
            CallOutcome::<()>::of_status(503, ra, "x".into()),
            CallOutcome::Transient {
                status: Some(503),
                retry_after: ra,
                reason: "x".into()
            }
        );
        assert_eq!(CallOutcome::<()>::transport("t".into()).status(), None);
    }
}
