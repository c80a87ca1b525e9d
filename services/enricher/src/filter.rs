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
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The few fields of a Get Alert body the enricher routes on. The Sekoia client reads them in
/// the same pass that checks the body, with a typed parse that skips everything else without
/// building it: the body itself travels on as bytes, so the enricher never builds the alert, or
/// any part of it, as a JSON tree (BENCHMARKS.md: the whole tree cost twice as much CPU, and
/// the `rule` object alone 2 % of the enricher's). A body that is a JSON object but does not fit
/// (a repeated top-level field) gives an empty head, as before: the alert still goes on.
#[derive(Debug, Default, Deserialize)]
pub struct AlertHead {
    /// Values are kept loose: a field of an unexpected type must not fail the whole parse.
    #[serde(default)]
    short_id: Loose,
    #[serde(default)]
    community_uuid: Loose,
    #[serde(default)]
    rule: RuleHead,
    #[serde(default)]
    created_at: Seconds,
    #[serde(default)]
    first_seen_at: Loose,
    #[serde(default)]
    last_seen_at: Loose,
}

impl AlertHead {
    /// `short_id`, when it is a string.
    pub fn short_id(&self) -> Option<&str> {
        self.short_id.0.as_deref()
    }

    /// `community_uuid`, when it is a string.
    pub fn community_uuid(&self) -> Option<&str> {
        self.community_uuid.0.as_deref()
    }

    /// `created_at` (epoch seconds, as Sekoia writes it), when it is a whole number.
    pub fn created_at(&self) -> Option<u64> {
        self.created_at.0
    }

    /// `first_seen_at` (an ISO-8601 string), when it is a string.
    pub fn first_seen_at(&self) -> Option<&str> {
        self.first_seen_at.0.as_deref()
    }

    /// `last_seen_at` (an ISO-8601 string), when it is a string.
    pub fn last_seen_at(&self) -> Option<&str> {
        self.last_seen_at.0.as_deref()
    }

    fn rule(&self, field: RuleField) -> Option<&str> {
        match field {
            RuleField::Name => self.rule.name.0.as_deref(),
            RuleField::Uuid => self.rule.uuid.0.as_deref(),
            RuleField::Other => None,
        }
    }
}

/// A head field read loosely: it keeps what it wants of one JSON type (a string, an object)
/// and takes any other value as its default, skipped without building it and without error.
trait Lenient<'de>: Default + Sized {
    /// The value when the JSON value is a string.
    fn from_str(_: &str) -> Self {
        Self::default()
    }

    /// The value when the JSON value is a non-negative whole number.
    fn from_u64(_: u64) -> Self {
        Self::default()
    }

    /// The value when the JSON value is an object (default: skipped).
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
}

/// The one visitor of every [`Lenient`] type: whatever the JSON type, never an error.
struct LenientVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::from_str(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from_u64(v))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
}

/// A string when the JSON value is one; any other value is skipped, and is no error.
#[derive(Debug, Default)]
struct Loose(Option<String>);

impl Lenient<'_> for Loose {
    fn from_str(v: &str) -> Self {
        Loose(Some(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(std::marker::PhantomData))
    }
}

/// A non-negative whole number when the JSON value is one; any other value is skipped.
#[derive(Debug, Default)]
struct Seconds(Option<u64>);

impl Lenient<'_> for Seconds {
    fn from_u64(v: u64) -> Self {
        Seconds(Some(v))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(std::marker::PhantomData))
    }
}

/// `rule.name` and `rule.uuid` when `rule` is an object (the last of a repeated key, as a JSON
/// tree would keep it); `rule` of any other type, like any other field of it, is skipped.
#[derive(Debug, Default)]
struct RuleHead {
    name: Loose,
    uuid: Loose,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum RuleField {
    Name,
    Uuid,
    #[serde(other)]
    Other,
}

impl<'de> Lenient<'de> for RuleHead {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut rule = RuleHead::default();
        while let Some(key) = map.next_key::<RuleField>()? {
            match key {
                RuleField::Name => rule.name = map.next_value()?,
                RuleField::Uuid => rule.uuid = map.next_value()?,
                RuleField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(rule)
    }
}

impl<'de> Deserialize<'de> for RuleHead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(std::marker::PhantomData))
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
        let name = alert.rule(RuleField::Name);
        let uuid = alert.rule(RuleField::Uuid);
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
        assert_eq!(h.rule(RuleField::Name), Some("R"));
        assert_eq!(h.rule(RuleField::Uuid), None);
        assert_eq!(h.created_at(), None);
        let h: AlertHead = serde_json::from_slice(br#"{"created_at":1767262925}"#).unwrap();
        assert_eq!(h.created_at(), Some(1767262925));
        for odd in [r#""1767262925""#, "-5", "1.5e9", "null", "[1]"] {
            let h: AlertHead = serde_json::from_str(&format!(r#"{{"created_at":{odd}}}"#)).unwrap();
            assert_eq!(h.created_at(), None, "{odd}");
        }
    }

    #[test]
    fn odd_types_anywhere_in_the_head_are_skipped_not_fatal() {
        let odd = [
            r#"{"rule":"R","short_id":null,"community_uuid":{"a":[1]}}"#,
            r#"{"rule":[{"name":"R"}],"short_id":1.5,"community_uuid":[]}"#,
            r#"{"rule":null,"short_id":true,"community_uuid":-3}"#,
            r#"{"rule":{"name":7,"uuid":{"x":"y"},"pattern":{"a":[1,2]}}}"#,
        ];
        for body in odd {
            let h: AlertHead = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(
                (
                    h.short_id(),
                    h.community_uuid(),
                    h.rule(RuleField::Name),
                    h.rule(RuleField::Uuid)
                ),
                (None, None, None, None),
                "{body}"
            );
        }
        // Inside `rule`, as in a JSON tree, the last of a repeated key wins.
        let h: AlertHead = serde_json::from_str(
            r#"{"rule":{"name":"first","uuid":"u","severity":{"v":[65]},"name":"last"}}"#,
        )
        .unwrap();
        assert_eq!(h.rule(RuleField::Name), Some("last"));
        assert_eq!(h.rule(RuleField::Uuid), Some("u"));
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
