//! Bounded reads of response bodies, and redacted excerpts of error bodies.
//!
//! An upstream decides how much it sends; we decide how much we read. [`read_capped`] keeps a
//! body only up to a cap (refusing at once when `Content-Length` is over it), [`excerpt`]
//! quotes the start of an error body read just far enough to redact it, and [`drain`] reads a
//! small body to its end so that its connection can be reused.
//!
//! Redact first, then cut: cutting first can leave the start of a secret in the quote, which
//! no redactor then recognises.

use bytes::{Bytes, BytesMut};

/// A body was over the cap: nothing of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversize {
    /// Bytes read before giving up (0 when `Content-Length` already said too much).
    pub read: usize,
    /// The cap.
    pub cap: usize,
    /// The body's `Content-Length`, if it declared one.
    pub declared: Option<u64>,
}

impl std::fmt::Display for Oversize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.declared {
            Some(n) if n > self.cap as u64 => {
                write!(f, "a body of {n} bytes, over the cap of {} bytes", self.cap)
            }
            _ => write!(
                f,
                "a body of more than {} bytes (the cap; stopped reading after {})",
                self.cap, self.read
            ),
        }
    }
}

/// Why [`read_capped`] returned no body.
#[derive(Debug)]
pub enum ReadError {
    /// The body is larger than the cap.
    Oversize(Oversize),
    /// Reading failed (connection closed, timeout…).
    Transport(reqwest::Error),
}

/// Reads `resp`'s body, at most `cap` bytes: a larger body is refused as soon as that is known
/// (from `Content-Length` before reading anything, else once more than `cap` bytes arrived),
/// so memory stays bounded by `cap` plus one network chunk whatever the server sends.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Bytes, ReadError> {
    let declared = resp.content_length();
    if let Some(n) = declared
        && n > cap as u64
    {
        return Err(ReadError::Oversize(Oversize {
            read: 0,
            cap,
            declared,
        }));
    }
    // One chunk (most bodies) is returned as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut read = 0usize;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(ReadError::Transport(e)),
        };
        read += chunk.len();
        if read > cap {
            return Err(ReadError::Oversize(Oversize {
                read,
                cap,
                declared,
            }));
        }
        match (&mut first, &mut more) {
            (None, _) => first = Some(chunk),
            (Some(f), None) => {
                let capacity = declared.map_or(2 * read, |n| n as usize).min(cap);
                let mut buf = BytesMut::with_capacity(capacity.max(read));
                buf.extend_from_slice(f);
                buf.extend_from_slice(&chunk);
                more = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, more) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// Bytes read beyond the quoted length, whatever the secrets: room for a secret that starts
/// inside the quote to be read whole, and so redacted.
const EXCERPT_SLACK: usize = 1024;

/// The start of `resp`'s body, at most `quoted_len` characters, redacted by `redact`, on one
/// line (line breaks become spaces), trimmed; empty when there is no readable body.
///
/// Reads at most `4 * quoted_len + 2 * longest_secret + 1 KiB` bytes (a character is up to 4
/// bytes), never the whole of a large body. `longest_secret` is the length in bytes of the
/// longest secret `redact` replaces: the read goes that far past the quote, so a secret that
/// starts inside the quote is read whole and redacted before the text is cut.
pub async fn excerpt(
    mut resp: reqwest::Response,
    quoted_len: usize,
    redact: &(dyn Fn(&str) -> String + Sync),
    longest_secret: usize,
) -> String {
    let budget = 4 * quoted_len + 2 * longest_secret + EXCERPT_SLACK;
    let mut read = Vec::with_capacity(budget.min(16 * 1024));
    let mut complete = false;
    while read.len() < budget {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = budget - read.len();
                read.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => {
                complete = true;
                break;
            }
            // What arrived is still worth quoting; it is treated as cut off.
            Err(_) => break,
        }
    }
    excerpt_of(&read, complete, quoted_len, redact, longest_secret)
}

/// [`excerpt`] of the bytes already read: `read` is the whole body when `complete`, else only
/// its start.
pub fn excerpt_of(
    read: &[u8],
    complete: bool,
    quoted_len: usize,
    redact: &(dyn Fn(&str) -> String + Sync),
    longest_secret: usize,
) -> String {
    let text = String::from_utf8_lossy(read);
    let mut redacted = redact(&text);
    if !complete {
        // The read may end inside a secret, whose start no redactor recognises. It can only
        // be in the last `longest_secret - 1` bytes read, and what is left of them after
        // redaction (the redactor's replacements are at most a few times longer than the
        // secrets they replace, which are at least a few bytes long) is within the last
        // `2 * longest_secret` bytes of the redacted text: drop those.
        let keep = redacted.len().saturating_sub(2 * longest_secret);
        let keep = floor_char_boundary(&redacted, keep);
        redacted.truncate(keep);
    }
    let flat: String = redacted
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    flat.trim().chars().take(quoted_len).collect::<String>()
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Reads a response's body to its end, when it is at most `limit` bytes, and drops it. hyper
/// reuses a connection only when the last response was read entirely, so a small body not
/// read costs a new TCP and TLS handshake on the next call; a larger one costs only that
/// connection.
pub async fn drain(mut resp: reqwest::Response, limit: usize) {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return;
    }
    let mut read = 0;
    while read <= limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-live-0123456789abcdefghij";

    fn redact(t: &str) -> String {
        t.replace(KEY, "[REDACTED]")
    }

    #[test]
    fn a_secret_cut_by_the_read_leaves_no_prefix_in_the_excerpt() {
        // A body of nothing but the key, repeated, read up to every possible cut: redaction
        // shrinks the text, pulling the cut-off key towards the quote.
        let body = format!("{KEY} ").repeat(200);
        for cut in 0..body.len().min(2000) {
            let got = excerpt_of(&body.as_bytes()[..cut], false, 300, &redact, KEY.len());
            for n in 4..=KEY.len() {
                assert!(!got.contains(&KEY[..n]), "cut {cut}: {got}");
            }
        }
    }

    #[test]
    fn a_complete_body_is_redacted_then_cut_and_flattened() {
        let body = format!("error\r\nkey={KEY}\nend");
        assert_eq!(
            excerpt_of(body.as_bytes(), true, 300, &redact, KEY.len()),
            "error  key=[REDACTED] end"
        );
        let long = "é".repeat(400);
        assert_eq!(
            excerpt_of(long.as_bytes(), true, 300, &redact, 0)
                .chars()
                .count(),
            300
        );
    }

    #[test]
    fn oversize_says_the_size_and_the_cap() {
        let declared = Oversize {
            read: 0,
            cap: 100,
            declared: Some(5000),
        };
        assert_eq!(
            declared.to_string(),
            "a body of 5000 bytes, over the cap of 100 bytes"
        );
        let streamed = Oversize {
            read: 4096,
            cap: 100,
            declared: None,
        };
        assert_eq!(
            streamed.to_string(),
            "a body of more than 100 bytes (the cap; stopped reading after 4096)"
        );
    }
}
