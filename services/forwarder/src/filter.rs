//! Per-destination filters (`[destinations.filter]`): which alerts a destination gets. Every
//! condition that is set must pass; an alert filtered out is acknowledged and counted, never
//! sent.

use alertsync_config::DestinationFilter;
use serde_json::Value;

/// A destination's filter, ready to apply to Get Alert bodies.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    cfg: DestinationFilter,
}

impl Filter {
    /// The filter of one destination.
    pub fn new(cfg: &DestinationFilter) -> Self {
        let mut cfg = cfg.clone();
        for c in &mut cfg.communities {
            c.make_ascii_lowercase();
        }
        Self { cfg }
    }

    /// The top-level alert fields the conditions read (see [`alertsync_template::RawAlert::fields`]).
    pub const READS: &'static [&'static str] =
        &["urgency", "entity", "alert_type", "rule", "community_uuid"];

    /// Whether no condition is set (every alert passes, nothing needs reading).
    pub fn passes_all(&self) -> bool {
        let c = &self.cfg;
        c.min_urgency.is_none()
            && c.entities.is_empty()
            && c.alert_types.is_empty()
            && c.rule_names.is_empty()
            && c.exclude_rule_names.is_empty()
            && c.communities.is_empty()
    }

    /// `None` when `alert` passes, else the name of the condition that stopped it. `alert`
    /// needs only the fields in [`Filter::READS`].
    pub fn rejects(&self, alert: &Value) -> Option<&'static str> {
        let c = &self.cfg;
        let str_at = |p: &str| alert.pointer(p).and_then(Value::as_str);
        if let Some(min) = c.min_urgency {
            let urgency = alert
                .pointer("/urgency/current_value")
                .and_then(Value::as_f64);
            if !urgency.is_some_and(|u| u >= f64::from(min)) {
                return Some("min_urgency");
            }
        }
        if !c.entities.is_empty() {
            let (name, uuid) = (str_at("/entity/name"), str_at("/entity/uuid"));
            if !c
                .entities
                .iter()
                .any(|e| Some(e.as_str()) == name || Some(e.as_str()) == uuid)
            {
                return Some("entities");
            }
        }
        if !c.alert_types.is_empty() {
            let category = str_at("/alert_type/category").unwrap_or_default();
            let value = str_at("/alert_type/value").unwrap_or_default();
            let full = format!("{category}/{value}");
            if !c.alert_types.iter().any(|t| *t == full || t == category) {
                return Some("alert_types");
            }
        }
        let rule = str_at("/rule/name");
        if !c.rule_names.is_empty() && !rule.is_some_and(|r| c.rule_names.iter().any(|n| n == r)) {
            return Some("rule_names");
        }
        if rule.is_some_and(|r| c.exclude_rule_names.iter().any(|n| n == r)) {
            return Some("exclude_rule_names");
        }
        if !c.communities.is_empty() {
            let community = str_at("/community_uuid").map(str::to_ascii_lowercase);
            if !community.is_some_and(|x| c.communities.contains(&x)) {
                return Some("communities");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert() -> Value {
        json!({
            "urgency": {"current_value": 65},
            "entity": {"uuid": "e-uuid", "name": "Lyon datacenter"},
            "alert_type": {"category": "intrusion-attempts", "value": "brute-force"},
            "rule": {"name": "Brute force on SSH service"},
            "community_uuid": "d24e5c90-1a7b-4e63-b8f2-0c9a4e7f3b15",
        })
    }

    fn f(cfg: DestinationFilter) -> Option<&'static str> {
        Filter::new(&cfg).rejects(&alert())
    }

    #[test]
    fn an_empty_filter_passes_everything() {
        assert_eq!(f(DestinationFilter::default()), None);
    }

    #[test]
    fn each_condition_filters_on_its_field() {
        let d = DestinationFilter::default;
        assert_eq!(
            f(DestinationFilter {
                min_urgency: Some(65),
                ..d()
            }),
            None
        );
        assert_eq!(
            f(DestinationFilter {
                min_urgency: Some(66),
                ..d()
            }),
            Some("min_urgency")
        );
        assert_eq!(
            f(DestinationFilter {
                entities: vec!["Lyon datacenter".into()],
                ..d()
            }),
            None
        );
        assert_eq!(
            f(DestinationFilter {
                entities: vec!["e-uuid".into()],
                ..d()
            }),
            None
        );
        assert_eq!(
            f(DestinationFilter {
                entities: vec!["Paris".into()],
                ..d()
            }),
            Some("entities")
        );
        assert_eq!(
            f(DestinationFilter {
                alert_types: vec!["intrusion-attempts".into()],
                ..d()
            }),
            None
        );
        assert_eq!(
            f(DestinationFilter {
                alert_types: vec!["intrusion-attempts/brute-force".into()],
                ..d()
            }),
            None
        );
        assert_eq!(
            f(DestinationFilter {
                alert_types: vec!["malicious-code/malware".into()],
                ..d()
            }),
            Some("alert_types")
        );
        assert_eq!(
            f(DestinationFilter {
                rule_names: vec!["Other".into()],
                ..d()
            }),
            Some("rule_names")
        );
        assert_eq!(
            f(DestinationFilter {
                exclude_rule_names: vec!["Brute force on SSH service".into()],
                ..d()
            }),
            Some("exclude_rule_names")
        );
        assert_eq!(
            f(DestinationFilter {
                communities: vec!["D24E5C90-1A7B-4E63-B8F2-0C9A4E7F3B15".into()],
                ..d()
            }),
            None
        );
        assert_eq!(
            f(DestinationFilter {
                communities: vec!["00000000-0000-0000-0000-000000000000".into()],
                ..d()
            }),
            Some("communities")
        );
    }
}
