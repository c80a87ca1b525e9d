//! Keys of the delivery-records bucket (`<PREFIX>_DELIVERED`), in one place: the forwarder
//! writes most of them, the ingest's sync endpoint and the write-back stage read or add some.
//!
//! - `<destination>.<alert uuid>`: how the alert's creation ended there (JSON: `outcome`,
//!   `remote_id`, `state`…);
//! - `<destination>.<alert uuid>.comment.<comment uuid>`: a comment delivered there;
//! - `<destination>.remote.<digest of the tool's id>`: the alert the tool's id stands for;
//! - `<destination>.<alert uuid>.echo.status` and `….echo.comment.<digest of the text>`: what
//!   a write-back for that destination changed in Sekoia, so the change is not sent back to
//!   it (written before the change is made);
//! - `<destination>.<alert uuid>.wb.<id>`: the steps of a write-back already done;
//! - `<destination>.<alert uuid>.waits.<stream sequence>`: how many deliveries of a later
//!   event were spent waiting for the creation (they are not attempts of its own request);
//! - `<destination>.<alert uuid>.turn`: the lease of the replica sending one of the alert's
//!   updates there (until when, in Unix milliseconds).
//!
//! Destination names and uuids are valid key tokens (checked by the config and the decoders);
//! free text only ever enters a key as a digest.

use sha2::Digest as _;

/// Hex of the first 16 bytes of SHA-256 of `text`: a key token naming it.
pub fn digest(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How the alert's creation ended at `destination`.
pub fn delivery(destination: &str, alert_uuid: &str) -> String {
    format!("{destination}.{alert_uuid}")
}

/// A comment delivered to `destination`.
pub fn comment(destination: &str, alert_uuid: &str, comment_uuid: &str) -> String {
    format!("{destination}.{alert_uuid}.comment.{comment_uuid}")
}

/// The alert `destination`'s id `remote_id` stands for.
pub fn remote(destination: &str, remote_id: &str) -> String {
    format!("{destination}.remote.{}", digest(remote_id))
}

/// The status a write-back for `destination` set on the alert.
pub fn echo_status(destination: &str, alert_uuid: &str) -> String {
    format!("{destination}.{alert_uuid}.echo.status")
}

/// A comment a write-back for `destination` added to the alert.
pub fn echo_comment(destination: &str, alert_uuid: &str, content: &str) -> String {
    format!(
        "{destination}.{alert_uuid}.echo.comment.{}",
        digest(content)
    )
}

/// The steps done of write-back `id`.
pub fn writeback(destination: &str, alert_uuid: &str, id: &str) -> String {
    format!("{destination}.{alert_uuid}.wb.{id}")
}

/// The deliveries of the later event at enriched-stream sequence `sequence` spent waiting
/// for the alert's creation at `destination`.
pub fn waits(destination: &str, alert_uuid: &str, sequence: u64) -> String {
    format!("{destination}.{alert_uuid}.waits.{sequence}")
}

/// The lease of the replica sending one of the alert's updates to `destination`.
pub fn turn(destination: &str, alert_uuid: &str) -> String {
    format!("{destination}.{alert_uuid}.turn")
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_text_enters_keys_only_as_a_digest() {
        let k = super::remote("soar", "T 1/../x.>*");
        assert!(k.starts_with("soar.remote."));
        assert!(
            k["soar.remote.".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        assert_eq!(super::digest("a"), super::digest("a"));
        assert_ne!(super::digest("a"), super::digest("b"));
    }
}
