//! `${VAR}` interpolation of string values from the environment.
//!
//! Interpolation runs on the parsed TOML values, never on the raw text, so a secret holding a
//! quote or a newline cannot change the structure of the file. Every substituted value is
//! remembered as a secret for the [`crate::Redactor`].

use std::fmt::Write as _;

/// What interpolating one string produced.
#[derive(Debug, Default)]
pub(crate) struct Interpolated {
    pub value: String,
    /// Values that came from the environment (treated as secrets).
    pub substituted: Vec<String>,
    /// Variables that were referenced but not set (and had no default).
    pub missing: Vec<String>,
}

/// Expands `${NAME}` and `${NAME:-default}`; `$$` is a literal `$`. A `$` followed by anything
/// else is kept as is, so templates and URLs that contain a lone `$` need no escaping.
pub(crate) fn interpolate(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
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
            match (lookup(name), default) {
                (Some(v), _) => {
                    out.value.push_str(&v);
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

/// Interpolates every string below `value`; `path` names the field in errors. With `report`
/// false (a section the loaded stages do not read) unset variables are no problem.
pub(crate) fn expand(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    report: bool,
    problems: &mut Vec<String>,
    secrets: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) => match interpolate(s, env) {
            Ok(r) => {
                if report {
                    for var in &r.missing {
                        problems.push(format!(
                            "{path}: environment variable {var} is not set (referenced as ${{{var}}})"
                        ));
                    }
                }
                secrets.extend(r.substituted);
                *s = r.value;
            }
            Err(e) if report => problems.push(format!("{path}: {e}")),
            Err(_) => {}
        },
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                expand(v, &format!("{path}[{i}]"), env, report, problems, secrets);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand(v, &format!("{path}.{k}"), env, report, problems, secrets);
            }
        }
        _ => {}
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
}
