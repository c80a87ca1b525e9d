//! What one run sent and what the destination received, by alert index.
//!
//! Every alert of a run gets the uuid `<tag><index as 12 hex digits>`, where the 24-character
//! tag (`rrrrrrrr-ssss-4000-8000-`) is unique to the run. The load generator stores when the
//! webhook accepted index `i`, the fake destination when it first received it and how many
//! times, so latency, loss and duplicates need no map and no lock on the hot path.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

/// Length of a run's uuid tag.
pub const TAG_LEN: usize = 24;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's benchmark epoch, plus one (0 means "never").
pub fn now_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// The tag of run `seq` of invocation `invocation`.
pub fn tag(invocation: u32, seq: u16) -> String {
    format!("{invocation:08x}-{seq:04x}-4000-8000-")
}

/// One run's record.
pub struct Tracker {
    tag: String,
    accepted_ns: Vec<AtomicU64>,
    received_ns: Vec<AtomicU64>,
    count: Vec<AtomicU32>,
    distinct: AtomicUsize,
    duplicates: AtomicU64,
    /// Signalled on every first receipt.
    progress: Notify,
}

impl Tracker {
    /// A record of `n` alerts whose uuids start with `tag`.
    pub fn new(tag: String, n: usize) -> Self {
        assert_eq!(tag.len(), TAG_LEN, "a run tag is 24 characters");
        Self {
            tag,
            accepted_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            received_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: (0..n).map(|_| AtomicU32::new(0)).collect(),
            distinct: AtomicUsize::new(0),
            duplicates: AtomicU64::new(0),
            progress: Notify::new(),
        }
    }

    /// The run's tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Alerts in the run.
    pub fn len(&self) -> usize {
        self.count.len()
    }

    /// Whether the run has no alert.
    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }

    /// The uuid of alert `i`.
    pub fn uuid(&self, i: usize) -> String {
        format!("{}{i:012x}", self.tag)
    }

    /// The index of `uuid` if it belongs to this run.
    pub fn index_of(&self, uuid: &str) -> Option<usize> {
        let rest = uuid.strip_prefix(self.tag.as_str())?;
        if rest.len() != 12 {
            return None;
        }
        let i = usize::from_str_radix(rest, 16).ok()?;
        (i < self.count.len()).then_some(i)
    }

    /// The webhook accepted alert `i` now.
    pub fn accepted(&self, i: usize) {
        self.accepted_ns[i].store(now_ns(), Ordering::Relaxed);
    }

    /// The destination received alert `i` now.
    pub fn received(&self, i: usize) {
        let at = now_ns();
        if self.count[i].fetch_add(1, Ordering::AcqRel) == 0 {
            self.received_ns[i].store(at, Ordering::Relaxed);
            self.distinct.fetch_add(1, Ordering::AcqRel);
            self.progress.notify_waiters();
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Distinct alerts received.
    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::Acquire)
    }

    /// Receipts beyond the first, over all alerts.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Waits until `n` distinct alerts were received, or nothing new arrived for `idle`, or
    /// `deadline` passed. Returns whether all arrived.
    pub async fn wait_all(
        &self,
        n: usize,
        idle: std::time::Duration,
        deadline: tokio::time::Instant,
    ) -> bool {
        let mut last = self.distinct();
        let mut last_change = tokio::time::Instant::now();
        loop {
            let notified = self.progress.notified();
            let now_count = self.distinct();
            if now_count >= n {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now_count != last {
                last = now_count;
                last_change = now;
            }
            if now >= deadline || now.duration_since(last_change) >= idle {
                return false;
            }
            // Wake on progress, and at least every 100 ms to re-check the idle clock.
            let wake = (now + std::time::Duration::from_millis(100)).min(deadline);
            let _ = tokio::time::timeout_at(wake, notified).await;
        }
    }

    /// Accept → first receipt latencies in nanoseconds (alerts with both), unsorted.
    pub fn latencies_ns(&self) -> Vec<u64> {
        self.accepted_ns
            .iter()
            .zip(&self.received_ns)
            .filter_map(|(a, r)| {
                let (a, r) = (a.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
                // The destination can, in theory, record a receipt before the client has
                // recorded the 202 it raced with: count that as zero.
                (a != 0 && r != 0).then(|| r.saturating_sub(a))
            })
            .collect()
    }

    /// Each alert's webhook 202 and first receipt, ns since the epoch (0: never), one line per
    /// alert in index order under a header, tab-separated.
    pub fn times_tsv(&self) -> String {
        let mut out = String::from("accepted_ns\treceived_ns\n");
        for (a, r) in self.accepted_ns.iter().zip(&self.received_ns) {
            let (a, r) = (a.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
            out.push_str(&format!("{a}\t{r}\n"));
        }
        out
    }

    /// The last first-receipt time (ns since the epoch), 0 when nothing arrived.
    pub fn last_receipt_ns(&self) -> u64 {
        self.received_ns
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_canonical_and_map_back_to_their_index() {
        let t = Tracker::new(tag(0xdead_beef, 3), 5000);
        let u = t.uuid(4095);
        assert_eq!(u, "deadbeef-0003-4000-8000-000000000fff");
        assert_eq!(u.len(), 36);
        assert_eq!(t.index_of(&u), Some(4095));
        assert_eq!(t.index_of("deadbeef-0004-4000-8000-000000000fff"), None);
        assert_eq!(t.index_of(&t.uuid(5000)), None, "out of range");
    }

    #[test]
    fn duplicates_and_distinct_receipts_are_counted_apart() {
        let t = Tracker::new(tag(1, 1), 3);
        t.accepted(0);
        t.received(0);
        t.received(0);
        t.received(2);
        assert_eq!(t.distinct(), 2);
        assert_eq!(t.duplicates(), 1);
        assert_eq!(t.latencies_ns().len(), 1);
    }

    #[test]
    fn alert_times_have_a_line_per_alert_with_zero_for_what_never_happened() {
        let t = Tracker::new(tag(1, 2), 3);
        t.accepted(0);
        t.received(0);
        t.accepted(1);
        let text = t.times_tsv();
        let lines: Vec<Vec<u64>> = text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').map(|v| v.parse().unwrap()).collect())
            .collect();
        assert_eq!(text.lines().next(), Some("accepted_ns\treceived_ns"));
        assert_eq!(lines.len(), 3);
        assert!(lines[0][0] > 0 && lines[0][1] >= lines[0][0], "{text}");
        assert!(
            lines[1][0] > 0 && lines[1][1] == 0,
            "accepted, never received: {text}"
        );
        assert_eq!(lines[2], vec![0, 0], "{text}");
    }
}
