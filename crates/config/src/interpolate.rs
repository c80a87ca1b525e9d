//! `${VAR}` interpolation of string values from the environment.
//!
//! Interpolation runs on the parsed TOML values, never on the raw text, so a secret holding a
//! quote or a newline cannot change the structure of the file. Every substituted value is
//! remembered as a secret for the [`crate::Redactor`].
//!
//! In a destination's templates (`json`, `headers`, `params`) a value from the environment is
//! data, never template code: one that could read as template syntax (or, in `json`, end the
//! JSON string it sits in) is not pasted into the template source but referenced there as
//! `{{ env['NAME'] }}`, and [`TemplateValues`] hands the values to the template engine. A
//! `${VAR}` inside a `{{ }}`, `{% %}` or `{# #}` block is refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What interpolating one string produced.
#[derive(Debug, Default)]
pub(crate) struct Interpolated {
    pub value: String,
    /// Values that came from the environment (treated as secrets).
    pub substituted: Vec<String>,
    /// Variables that were referenced but not set (and had no default).
    pub missing: Vec<String>,
    /// Variables referenced as [`TEMPLATE_VALUES`] instead of pasted (template fields only).
    pub referenced: Vec<(String, String)>,
}

/// Where a string is used, which decides how a value from the environment goes into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// Used as is (a URL, a key, a name).
    Plain,
    /// A text template (a header or query parameter value).
    Text,
    /// A body template, usually JSON with templates in its strings.
    Json,
}

/// The name under which templates read [`TemplateValues`]: `{{ env['NAME'] }}`.
pub const TEMPLATE_VALUES: &str = "env";

/// Values from the environment that destination templates read as
/// `{{ env['NAME'] }}` (see the module doc): give them to the template engine as the global
/// [`TEMPLATE_VALUES`]. They are secrets: `Debug` prints only the names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TemplateValues(BTreeMap<String, String>);

impl TemplateValues {
    /// Each variable's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The values by name, as the template engine takes them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.clone()
    }

    /// Whether no template reads any value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for TemplateValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Expands `${NAME}` and `${NAME:-default}` in a string used as `field`; `$$` is a literal
/// `$`. A `$` followed by anything else is kept as is, so templates and URLs that contain a
/// lone `$` need no escaping. A default (`${NAME:-text}`) is text of the file, written by
/// the operator: it is pasted as written in every field.
pub(crate) fn interpolate_field(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    field: Field,
) -> Result<Interpolated, String> {
    let mut out = Interpolated::default();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.value.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.value.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated `${` (write `$${` for a literal `${`)".to_string())?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if !is_var_name(name) {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            if field != Field::Plain && in_template_block(&out.value) {
                return Err(format!(
                    "`${{{name}}}` is inside a `{{{{ }}}}`, `{{% %}}` or `{{# #}}` block, where a \
                     value from the environment would be template code: put it outside the block"
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => {
                    if pastes_as_data(&v, field) {
                        out.value.push_str(&v);
                    } else {
                        let _ = write!(out.value, "{{{{ {TEMPLATE_VALUES}['{name}'] }}}}");
                        out.referenced.push((name.to_string(), v.clone()));
                    }
                    out.substituted.push(v);
                }
                (None, Some(d)) => out.value.push_str(d),
                (None, None) => {
                    // Keep a visible marker; the caller reports the missing variable.
                    let _ = write!(out.value, "${{{name}}}");
                    out.missing.push(name.to_string());
                }
            }
            rest = &body[end + 1..];
        } else {
            out.value.push('$');
            rest = after;
        }
    }
    out.value.push_str(rest);
    Ok(out)
}

/// Whether `value` pasted into a `field` reads as the same text: no brace, `%` or `#` that
/// could form template syntax (alone or with its neighbours), and in `json` nothing that
/// would end or escape the JSON string it sits in. Ordinary keys and tokens paste, so the
/// template source stays what the operator wrote, and a header made only of them stays
/// static.
fn pastes_as_data(value: &str, field: Field) -> bool {
    let template_safe = || !value.contains(['{', '}', '%', '#']);
    match field {
        Field::Plain => true,
        Field::Text => template_safe(),
        Field::Json => {
            template_safe() && !value.contains(['"', '\\']) && !value.contains(char::is_control)
        }
    }
}

/// Whether `text` ends inside a template block (`{{`, `{%` or `{#` opened and not closed).
fn in_template_block(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut closer = None;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (closer, bytes[i], bytes[i + 1]) {
            (None, b'{', b @ (b'{' | b'%' | b'#')) => {
                closer = Some(if b == b'{' { b'}' } else { b });
                i += 2;
            }
            (Some(c), b, b'}') if b == c => {
                closer = None;
                i += 2;
            }
            _ => i += 1,
        }
    }
    closer.is_some()
}

/// Interpolates every string below `value`; `path` names the field in errors. With `report`
/// false (a section the loaded stages do not read) unset variables are no problem.
pub(crate) fn expand(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    report: bool,
    out: &mut Expanded,
) {
    match value {
        toml::Value::String(s) => match interpolate_field(s, env, field_of(path)) {
            Ok(r) => {
                if report {
                    for var in &r.missing {
                        out.problems.push(format!(
                            "{path}: environment variable {var} is not set (referenced as ${{{var}}})"
                        ));
                    }
                }
                out.secrets.extend(r.substituted);
                out.template_values.0.extend(r.referenced);
                *s = r.value;
            }
            Err(e) if report => out.problems.push(format!("{path}: {e}")),
            Err(_) => {}
        },
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                expand(v, &format!("{path}[{i}]"), env, report, out);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand(v, &format!("{path}.{k}"), env, report, out);
            }
        }
        _ => {}
    }
}

/// What [`expand`] gathers over the whole file.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    pub problems: Vec<String>,
    pub secrets: Vec<String>,
    pub template_values: TemplateValues,
}

/// Which strings are templates: a destination's `json`, and its `headers` and `params`
/// values (`destinations[0].headers.Authorization`).
fn field_of(path: &str) -> Field {
    let Some((_, rest)) = path
        .strip_prefix("destinations[")
        .and_then(|p| p.split_once("]."))
    else {
        return Field::Plain;
    };
    if rest == "json" {
        Field::Json
    } else if rest.starts_with("headers.") || rest.starts_with("params.") {
        Field::Text
    } else {
        Field::Plain
    }
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interpolate(
        input: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Interpolated, String> {
        interpolate_field(input, lookup, Field::Plain)
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("s3cr\"et".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_remembers_the_secret() {
        let r = interpolate("Bearer ${KEY}", &env).unwrap();
        assert_eq!(r.value, "Bearer s3cr\"et");
        assert_eq!(r.substituted, vec!["s3cr\"et".to_string()]);
        assert!(r.missing.is_empty());
    }

    #[test]
    fn reports_missing_variables_and_uses_defaults() {
        let r = interpolate("${NOPE} ${ALSO:-fallback}", &env).unwrap();
        assert_eq!(r.missing, vec!["NOPE".to_string()]);
        assert!(r.value.ends_with(" fallback"));
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_are_literal() {
        let r = interpolate("$${KEY} costs $5", &env).unwrap();
        assert_eq!(r.value, "${KEY} costs $5");
        assert!(r.substituted.is_empty());
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(interpolate("${KEY", &env).is_err());
        assert!(interpolate("${1BAD}", &env).is_err());
    }

    #[test]
    fn template_fields_reference_values_that_could_read_as_code() {
        let lookup = |name: &str| match name {
            "KEY" => Some("plain-key".to_string()),
            "ODD" => Some("50%{x}".to_string()),
            "QUOTE" => Some("say \"hi\"".to_string()),
            _ => None,
        };
        let text = interpolate_field("k ${KEY} ${ODD}", &lookup, Field::Text).unwrap();
        assert_eq!(text.value, "k plain-key {{ env['ODD'] }}");
        assert_eq!(text.referenced, [("ODD".into(), "50%{x}".into())]);
        // A quote is text in a header, but would end the JSON string in a body.
        let header = interpolate_field("${QUOTE}", &lookup, Field::Text).unwrap();
        assert_eq!(header.value, "say \"hi\"");
        let body = interpolate_field(r#"{"a":"${QUOTE}"}"#, &lookup, Field::Json).unwrap();
        assert_eq!(body.value, r#"{"a":"{{ env['QUOTE'] }}"}"#);
        // Elsewhere every value is pasted as it is.
        let plain = interpolate_field("${ODD}", &lookup, Field::Plain).unwrap();
        assert_eq!(plain.value, "50%{x}");
        assert!(plain.referenced.is_empty());
    }

    #[test]
    fn template_blocks_are_tracked_across_their_kinds() {
        assert!(in_template_block("a {{ x"));
        assert!(in_template_block("{% if x %}{# note"));
        assert!(!in_template_block("{{ x }} {% y %} {# z #} }}"));
        assert!(!in_template_block("{ not a block"));
    }
}
