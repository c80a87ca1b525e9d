//! The Alert Created trigger's filters, with Sekoia's semantics, plus `sekoia.communities`.
//!
//! - `rule_filter`: passes when `rule.name` or `rule.uuid` equals it;
//! - `rule_names_filter`: passes when `rule.name` is in the list (exact, case-sensitive);
//! - both set: both must pass;
//! - `sekoia.communities`: passes when `community_uuid` is in the list.
//!
//! Applied after Get Alert, as Sekoia does: the alert's own fields decide.

use alertsync_config::EnricherConfig;
use serde::Deserialize;
use serde_json::Value;

/// The few fields of a Get Alert body the enricher routes on. The Sekoia client reads them in
/// the same pass that checks the body, with a typed parse that skips everything else without
/// building it: the body itself travels on as bytes, so the enricher never builds the whole
/// alert as a JSON tree (twice as much CPU, BENCHMARKS.md). A body that is a JSON object but
/// does not fit (a repeated field) gives an empty head, as before: the alert still goes on.
#[derive(Debug, Default, Deserialize)]
pub struct AlertHead {
    /// Values are kept loose: a field of an unexpected type must not fail the whole parse.
    #[serde(default)]
    short_id: Option<Value>,
    #[serde(default)]
    community_uuid: Option<Value>,
    #[serde(default)]
    rule: Option<Value>,
}

impl AlertHead {
    /// `short_id`, when it is a string.
    pub fn short_id(&self) -> Option<&str> {
        self.short_id.as_ref().and_then(Value::as_str)
    }

    /// `community_uuid`, when it is a string.
    pub fn community_uuid(&self) -> Option<&str> {
        self.community_uuid.as_ref().and_then(Value::as_str)
    }

    fn rule(&self, field: &str) -> Option<&str> {
        self.rule.as_ref()?.get(field)?.as_str()
    }
}

/// The filters of one enricher.
#[derive(Debug, Clone, Default)]
pub struct TriggerFilter {
    rule_filter: Option<String>,
    rule_names: Vec<String>,
    communities: Vec<String>,
}

impl TriggerFilter {
    /// Filters from `[enricher]` and `sekoia.communities`.
    pub fn new(cfg: &EnricherConfig, communities: &[String]) -> Self {
        Self {
            rule_filter: cfg.rule_filter.clone().filter(|f| !f.is_empty()),
            rule_names: cfg.rule_names_filter.clone(),
            communities: communities.iter().map(|c| c.to_ascii_lowercase()).collect(),
        }
    }

    /// `None` when `alert` passes, else the name of the filter that stopped it.
    pub fn rejects(&self, alert: &AlertHead) -> Option<&'static str> {
        let name = alert.rule("name");
        let uuid = alert.rule("uuid");
        if let Some(f) = &self.rule_filter
            && name != Some(f.as_str())
            && uuid != Some(f.as_str())
        {
            return Some("rule_filter");
        }
        if !self.rule_names.is_empty()
            && !name.is_some_and(|n| self.rule_names.iter().any(|r| r == n))
        {
            return Some("rule_names_filter");
        }
        if !self.communities.is_empty() {
            let community = alert.community_uuid().map(str::to_ascii_lowercase);
            if !community.is_some_and(|c| self.communities.contains(&c)) {
                return Some("community");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(rule_filter: Option<&str>, names: &[&str], communities: &[&str]) -> TriggerFilter {
        let cfg = EnricherConfig {
            rule_filter: rule_filter.map(str::to_string),
            rule_names_filter: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let c: Vec<String> = communities.iter().map(|s| s.to_string()).collect();
        TriggerFilter::new(&cfg, &c)
    }

    fn alert(name: &str, uuid: &str, community: &str) -> AlertHead {
        let v = json!({"rule": {"name": name, "uuid": uuid}, "community_uuid": community});
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_head_reads_its_fields_and_tolerates_odd_types() {
        let h: AlertHead = serde_json::from_slice(
            br#"{"short_id":"ALx","community_uuid":7,"rule":{"name":"R"},"big":[1,{"a":2}]}"#,
        )
        .unwrap();
        assert_eq!(h.short_id(), Some("ALx"));
        assert_eq!(h.community_uuid(), None);
        assert_eq!(h.rule("name"), Some("R"));
        assert_eq!(h.rule("uuid"), None);
    }

    #[test]
    fn rule_filter_matches_the_rule_name_or_uuid() {
        let f = filter(Some("SSH"), &[], &[]);
        assert_eq!(f.rejects(&alert("SSH", "u1", "c")), None);
        assert_eq!(f.rejects(&alert("Other", "SSH", "c")), None);
        assert_eq!(f.rejects(&alert("ssh", "u1", "c")), Some("rule_filter"));
    }

    #[test]
    fn rule_names_filter_is_an_exact_list_and_both_filters_must_pass() {
        let f = filter(None, &["A", "B"], &[]);
        assert_eq!(f.rejects(&alert("B", "u", "c")), None);
        assert_eq!(f.rejects(&alert("C", "u", "c")), Some("rule_names_filter"));
        let both = filter(Some("u1"), &["A"], &[]);
        assert_eq!(both.rejects(&alert("A", "u1", "c")), None);
        assert_eq!(both.rejects(&alert("A", "u2", "c")), Some("rule_filter"));
        assert_eq!(
            both.rejects(&alert("B", "u1", "c")),
            Some("rule_names_filter")
        );
    }

    #[test]
    fn communities_limit_what_passes() {
        let f = filter(None, &[], &["D24E5C90-1A7B-4E63-B8F2-0C9A4E7F3B15"]);
        assert_eq!(
            f.rejects(&alert("A", "u", "d24e5c90-1a7b-4e63-b8f2-0c9a4e7f3b15")),
            None
        );
        assert_eq!(f.rejects(&alert("A", "u", "other")), Some("community"));
        assert_eq!(filter(None, &[], &[]).rejects(&AlertHead::default()), None);
    }
}
