//! [`HumanDuration`]: a duration written with a unit (`"500ms"`, `"10s"`, `"5m"`, `"7d"`).
//!
//! Named so it does not shadow [`std::time::Duration`] where both are in scope.

use serde::Deserialize;

/// A duration written as `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"7d"` (or `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    /// The std duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// A duration of `s` seconds.
    pub const fn secs(s: u64) -> Self {
        HumanDuration(std::time::Duration::from_secs(s))
    }
}

/// `N` seconds, as a serde default (`#[serde(default = "seconds::<10>")]`): a field's default
/// is then written once, where the field is declared.
pub(crate) const fn seconds<const N: u64>() -> HumanDuration {
    HumanDuration::secs(N)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Int(0) => Ok(HumanDuration(std::time::Duration::ZERO)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "durations need a unit: write \"{n}s\""
            ))),
            Raw::Text(s) => humantime::parse_duration(s.trim())
                .map(HumanDuration)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}"))),
        }
    }
}

/// Whether a raw TOML value is a zero duration (`0` or `"0s"`), read before deserializing.
pub(crate) fn is_zero(value: &toml::Value) -> bool {
    match value {
        toml::Value::Integer(0) => true,
        toml::Value::String(s) => humantime::parse_duration(s.trim()).is_ok_and(|d| d.is_zero()),
        _ => false,
    }
}
