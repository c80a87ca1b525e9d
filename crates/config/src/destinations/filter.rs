//! `[destinations.filter]`: which alerts one destination gets.

use serde::Deserialize;

use crate::fields::is_uuid;

/// `[destinations.filter]`: every set condition must pass.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationFilter {
    /// Minimum `urgency.current_value` (0–100).
    pub min_urgency: Option<u32>,
    /// Entity names or uuids.
    pub entities: Vec<String>,
    /// Alert types, as `category` or `category/value` (e.g. `intrusions/system-compromise`).
    pub alert_types: Vec<String>,
    /// Rule names to include (exact).
    pub rule_names: Vec<String>,
    /// Rule names to exclude (exact).
    pub exclude_rule_names: Vec<String>,
    /// Community uuids.
    pub communities: Vec<String>,
}

impl DestinationFilter {
    /// `at` names the destination in problems.
    pub(crate) fn check(&self, at: &str, problems: &mut Vec<String>) {
        if let Some(u) = self.min_urgency
            && u > 100
        {
            problems.push(format!(
                "{at}.filter.min_urgency: must be between 0 and 100"
            ));
        }
        for (j, c) in self.communities.iter().enumerate() {
            if !is_uuid(c) {
                problems.push(format!("{at}.filter.communities[{j}]: {c:?} is not a uuid"));
            }
        }
    }
}
