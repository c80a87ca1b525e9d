//! [`Redactor`]: scrubs every known secret out of text before it reaches a log, an error
//! message or a dead-letter entry.

use std::sync::Arc;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not scrubbed: replacing every "abc" in a reason would only
/// mangle it, and such values are no secret anyway.
const MIN_SECRET_LEN: usize = 6;

/// A set of secret strings, cheap to clone, that can scrub them from any text.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Builds a redactor from secret values (short and duplicate values are dropped).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Self {
            secrets: Arc::new(v),
        }
    }

    /// A redactor that knows these secrets as well as its own.
    pub fn with(&self, more: impl IntoIterator<Item = String>) -> Self {
        Self::new(self.secrets.iter().cloned().chain(more))
    }

    /// `text` with every known secret replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// Length in bytes of the longest known secret (0 when none): how far past a quote a body
    /// must be read for a secret starting inside the quote to be redacted whole.
    pub fn longest_secret(&self) -> usize {
        self.secrets.first().map_or(0, String::len)
    }

    /// Whether `text` holds any known secret (used by tests and as a last-line check).
    pub fn leaks(&self, text: &str) -> bool {
        self.secrets.iter().any(|s| text.contains(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_secret_longest_first() {
        let r = Redactor::new(["token-123".to_string(), "token-123456".to_string()]);
        assert_eq!(
            r.redact("a token-123456 b token-123"),
            "a [REDACTED] b [REDACTED]"
        );
        assert!(!r.leaks(&r.redact("token-123456")));
    }

    #[test]
    fn ignores_values_too_short_to_be_secrets() {
        let r = Redactor::new(["abc".to_string()]);
        assert_eq!(r.redact("abc"), "abc");
    }
}
