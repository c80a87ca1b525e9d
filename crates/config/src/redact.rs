//! [`Redactor`]: scrubs every known secret out of text before it reaches a log, an error
//! message or a dead-letter entry.

use std::fmt::Write as _;
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
    /// Builds a redactor from secret values (short and duplicate values are dropped). Each
    /// secret is also known as it reads escaped in a JSON string, once and twice (a rendered
    /// body, JSON embedded in a string of one), so a secret holding a quote, a backslash or a
    /// line break is scrubbed from those too.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .flat_map(|s| {
                let once = json_escaped(&s);
                let twice = json_escaped(&once);
                [s, once, twice]
            })
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

/// `s` as the content of a JSON string, escaped as serde_json writes it.
fn json_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
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
    fn scrubs_a_secret_written_escaped_in_json() {
        let secret = "to\"ken\\1\n";
        let r = Redactor::new([secret.to_string()]);
        let once = serde_json::to_string(secret).unwrap();
        let twice = serde_json::to_string(&once).unwrap();
        assert_eq!(r.redact(&once), "\"[REDACTED]\"");
        assert_eq!(r.redact(&twice), "\"\\\"[REDACTED]\\\"\"");
        assert_eq!(json_escaped("\u{1}"), "\\u0001");
    }

    #[test]
    fn ignores_values_too_short_to_be_secrets() {
        let r = Redactor::new(["abc".to_string()]);
        assert_eq!(r.redact("abc"), "abc");
    }
}
