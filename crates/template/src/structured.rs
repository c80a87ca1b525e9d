//! Structured rendering: body templates that are themselves JSON.
//!
//! Sekoia's body templates put `{{ … }}` inside JSON string literals
//! (`{"rule_name":"{{ node.1['rule']['name'] }}"}`) and Jinja2 pastes values in unescaped, so
//! a rule name with a `"` breaks the JSON or adds keys. When the template text parses as
//! JSON we instead rewrite it into one template in which every string literal (key or
//! value) that holds template syntax becomes
//! `"{% filter jsonstr %}<decoded literal>{% endfilter %}"`: the literal is rendered on its
//! own and its output escaped as JSON string content. Every other byte is copied as it is,
//! so for values that need no escaping the output is byte-identical to Jinja2's.
//!
//! A decoded literal that is itself JSON, possibly wrapped in one layer of `'…'` (Sekoia's
//! HTTP intake template puts `'{\"k\":\"{{ v }}\"}'` in a string), is rewritten the same way
//! one level down; the nested filters escape those values twice, as the embedding needs.
//!
//! When a templated literal does not compile on its own (a `{% if %}` that spans two
//! strings), the rewrite is abandoned and the caller falls back to plain rendering.

use minijinja::Environment;
use serde_json::Value as Json;

/// Name of the filter that escapes its input as JSON string content.
pub const JSONSTR_FILTER: &str = "jsonstr";

/// How many levels of JSON-in-a-string are rewritten; deeper ones are escaped as text.
const MAX_DEPTH: usize = 4;

/// Rewrites a JSON template text into a structured template source, or `None` when the text
/// is not JSON or a templated string does not compile on its own.
pub(crate) fn rewrite(env: &Environment<'_>, text: &str) -> Option<String> {
    serde_json::from_str::<Json>(text).ok()?;
    rewrite_json(env, text, 0)
}

/// Whether a raw piece of template text holds template syntax.
pub(crate) fn has_template_syntax(raw: &str) -> bool {
    raw.contains("{{") || raw.contains("{%") || raw.contains("{#")
}

/// Escapes `s` as the content of a JSON string (without the quotes), by serde_json's rules.
pub fn escape_json_str(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("serializing a str cannot fail");
    quoted[1..quoted.len() - 1].to_owned()
}

/// `text` must be valid JSON.
fn rewrite_json(env: &Environment<'_>, text: &str, depth: usize) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 64);
    for piece in Pieces::new(text) {
        match piece {
            Piece::Other(raw) => out.push_str(raw),
            // Copied raw: it has no template syntax, and JSON structure between literals
            // cannot form `{{`, `{%` or `{#` with its neighbours.
            Piece::Literal(raw) if !has_template_syntax(raw) => out.push_str(raw),
            Piece::Literal(raw) => {
                let decoded: String = serde_json::from_str(raw).ok()?;
                env.template_from_str(&decoded).ok()?;
                let body = rewrite_nested(env, &decoded, depth).unwrap_or(decoded);
                out.push('"');
                out.push_str("{% filter ");
                out.push_str(JSONSTR_FILTER);
                out.push_str(" %}");
                out.push_str(&body);
                out.push_str("{% endfilter %}");
                out.push('"');
            }
        }
    }
    Some(out)
}

/// Rewrites a decoded literal that is a JSON object or array, optionally in one layer of
/// single quotes. Scalars are left alone: a literal like `"\"{{ title }}\""` is more likely
/// quoted text than a JSON document.
fn rewrite_nested(env: &Environment<'_>, decoded: &str, depth: usize) -> Option<String> {
    if depth + 1 >= MAX_DEPTH {
        return None;
    }
    let (quote, inner) = match decoded
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
    {
        Some(inner) => ("'", inner),
        None => ("", decoded),
    };
    let parsed: Json = serde_json::from_str(inner).ok()?;
    if !(parsed.is_object() || parsed.is_array()) {
        return None;
    }
    let rewritten = rewrite_json(env, inner, depth + 1)?;
    Some(format!("{quote}{rewritten}{quote}"))
}

/// A piece of JSON text: a string literal with its quotes, or anything between literals.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    Other(&'a str),
}

/// Splits valid JSON text into [`Piece`]s. Outside literals JSON has no `"`, and inside
/// them a `"` is either escaped or the end, so a byte scan is enough.
struct Pieces<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Pieces<'a> {
    fn new(text: &'a str) -> Self {
        Pieces { text, pos: 0 }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        if start >= bytes.len() {
            return None;
        }
        if bytes[start] != b'"' {
            let end = self.text[start..]
                .find('"')
                .map_or(bytes.len(), |i| start + i);
            self.pos = end;
            return Some(Piece::Other(&self.text[start..end]));
        }
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        // Valid JSON always closes its literals; clamp anyway so bad input cannot panic.
        let end = (i + 1).min(bytes.len());
        self.pos = end;
        Some(Piece::Literal(&self.text[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_literals_from_structure() {
        let pieces: Vec<_> = Pieces::new(r#"{"a\"b": [1, "c\\"], "d":"e"}"#).collect();
        assert_eq!(
            pieces,
            vec![
                Piece::Other("{"),
                Piece::Literal(r#""a\"b""#),
                Piece::Other(": [1, "),
                Piece::Literal(r#""c\\""#),
                Piece::Other("], "),
                Piece::Literal(r#""d""#),
                Piece::Other(":"),
                Piece::Literal(r#""e""#),
                Piece::Other("}"),
            ]
        );
    }

    #[test]
    fn templated_literals_are_wrapped_and_others_copied() {
        let env = Environment::new();
        let got = rewrite(&env, r#"{"a": "{{ x }}", "b": "plain\n", "{{ k }}": 1}"#).unwrap();
        assert_eq!(
            got,
            r#"{"a": "{% filter jsonstr %}{{ x }}{% endfilter %}", "b": "plain\n", "{% filter jsonstr %}{{ k }}{% endfilter %}": 1}"#
        );
    }

    #[test]
    fn json_in_single_quotes_inside_a_literal_is_rewritten_one_level_down() {
        let env = Environment::new();
        let got = rewrite(&env, r#"{"json":"'{\"k\":\"{{ v }}\"}'"}"#).unwrap();
        assert_eq!(
            got,
            r#"{"json":"{% filter jsonstr %}'{"k":"{% filter jsonstr %}{{ v }}{% endfilter %}"}'{% endfilter %}"}"#
        );
    }

    #[test]
    fn quoted_scalars_are_not_nested() {
        let env = Environment::new();
        let got = rewrite(&env, r#"{"a":"\"{{ v }}\""}"#).unwrap();
        assert_eq!(
            got,
            r#"{"a":"{% filter jsonstr %}"{{ v }}"{% endfilter %}"}"#
        );
    }

    #[test]
    fn a_block_spanning_two_literals_abandons_the_rewrite() {
        let env = Environment::new();
        assert_eq!(rewrite(&env, r#"["{% if x %}a", "b{% endif %}"]"#), None);
    }

    #[test]
    fn non_json_text_is_not_rewritten() {
        let env = Environment::new();
        assert_eq!(rewrite(&env, r#"{"sev": {{ x }}}"#), None);
    }

    #[test]
    fn escaping_follows_json_rules() {
        assert_eq!(
            escape_json_str("a\"b\\c\nd\te\u{1}f\u{2028}"),
            "a\\\"b\\\\c\\nd\\te\\u0001f\u{2028}"
        );
    }
}
