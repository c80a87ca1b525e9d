//! Sekoia's custom Jinja filters, reimplemented.
//!
//! Sekoia's implementations are closed source; only their names, arguments and a few uses
//! appear in Sekoia's docs and playbook templates. The semantics below follow the Python
//! standard library calls they most plausibly wrap. Bad input is a render error, never a
//! panic, and errors name the filter and the kind of value but never quote the value.
//!
//! | filter | input | result |
//! |---|---|---|
//! | `timestamp_to_iso8601` | epoch seconds (int, float, or a numeric string) | `datetime.fromtimestamp(ts, timezone.utc).isoformat()`, e.g. `2026-01-01T10:22:05+00:00`; microseconds only when not zero, rounded half to even like CPython |
//! | `iso8601_to_timestamp` | ISO-8601 string | `int(datetime.fromisoformat(s).timestamp())`: whole seconds truncated toward zero; a time without offset is UTC (Sekoia's workers run in UTC); a bare date is midnight UTC |
//! | `jsonpath(expr, return_first=False)` | any value | the list of matches of the RFC 9535 JSONPath `expr`, or the first match (`none` when nothing matches) when `return_first` is true; bounded (see [`JSONPATH_MAX_DEPTH`], [`JSONPATH_MAX_WORK`], [`JSONPATH_MAX_RESULT_BYTES`]) |
//! | `time_with_delta` | seconds (int, float, numeric string) | `(datetime.now(timezone.utc) + timedelta(seconds=delta)).isoformat()` |
//! | `regex_match(pattern, ignore_case=False)` | string | `re.match(pattern, s)` as a bool: a match must start at the beginning of the string, not span all of it; the pattern uses Rust `regex` syntax (no look-around or back-references) and is size-limited |
//! | `fromjson` | JSON string | the parsed value |
//! | `jsonstr` (alertsync's own) | any | the value's text escaped as JSON string content, without quotes; structured rendering wraps templated strings in it |

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

use crate::structured::{JSONSTR_FILTER, escape_json_str};

/// Longest regular expression `regex_match` accepts, in bytes.
pub const REGEX_MAX_PATTERN_LEN: usize = 16 * 1024;
/// Memory cap for one compiled regular expression (and for its lazy DFA).
pub const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Deepest nesting of the value `jsonpath` queries (serde_json's own parsing limit). A deeper
/// value is a render error: a query such as `$..x` over a value nested thousands of levels
/// deep took memory and time quadratic in the depth (issue 24).
pub const JSONPATH_MAX_DEPTH: usize = 128;
/// Most work a `jsonpath` query may need, estimated before it runs as the number of values in
/// the input times its depth for each descendant (`..`) segment of the expression (each one
/// can visit every value below every value the previous one selected). A larger estimate is a
/// render error. A Sekoia alert (a few hundred values, a few levels deep) needs a few
/// thousand.
pub const JSONPATH_MAX_WORK: u64 = 10_000_000;
/// Largest `jsonpath` result, as JSON text: every match counts whole, so `$..x` over nested
/// `x` objects repeats each inner one in every outer one. The result becomes template values
/// of about ten times that size.
pub const JSONPATH_MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Adds the filters of this module to `env`.
pub(crate) fn register(env: &mut Environment<'_>) {
    env.add_filter("timestamp_to_iso8601", timestamp_to_iso8601);
    env.add_filter("iso8601_to_timestamp", iso8601_to_timestamp);
    env.add_filter("jsonpath", jsonpath);
    env.add_filter("time_with_delta", time_with_delta);
    env.add_filter("regex_match", regex_match);
    env.add_filter("fromjson", fromjson);
    env.add_filter(JSONSTR_FILTER, jsonstr);
}

fn invalid(filter: &str, message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{filter}: {message}"))
}

/// Epoch seconds to ISO-8601 UTC, like Python's
/// `datetime.fromtimestamp(ts, timezone.utc).isoformat()`.
pub fn timestamp_to_iso8601(value: &Value) -> Result<String, Error> {
    const NAME: &str = "timestamp_to_iso8601";
    let micros = seconds_to_micros(NAME, value)?;
    isoformat(NAME, micros)
}

/// ISO-8601 text to epoch seconds, like Python's `int(datetime.fromisoformat(s).timestamp())`.
pub fn iso8601_to_timestamp(value: &Value) -> Result<i64, Error> {
    const NAME: &str = "iso8601_to_timestamp";
    let text = value
        .as_str()
        .ok_or_else(|| invalid(NAME, format!("expected a string, got {}", value.kind())))?;
    let parsed = parse_iso8601(text.trim())
        .ok_or_else(|| invalid(NAME, "the string is not an ISO-8601 date and time"))?;
    let mut seconds = parsed.timestamp();
    // `timestamp()` floors; Python's int() truncates toward zero.
    if seconds < 0 && parsed.timestamp_subsec_nanos() > 0 {
        seconds += 1;
    }
    Ok(seconds)
}

/// Now plus `delta` seconds as ISO-8601 UTC, like Python's
/// `(datetime.now(timezone.utc) + timedelta(seconds=delta)).isoformat()`.
pub fn time_with_delta(value: &Value) -> Result<String, Error> {
    time_with_delta_at(Utc::now(), value)
}

fn time_with_delta_at(now: DateTime<Utc>, value: &Value) -> Result<String, Error> {
    const NAME: &str = "time_with_delta";
    let delta = seconds_to_micros(NAME, value)?;
    let micros = now
        .timestamp_micros()
        .checked_add(delta)
        .ok_or_else(|| invalid(NAME, "the result is out of range"))?;
    isoformat(NAME, micros)
}

/// JSONPath query over the value: every match, or the first one (or none).
pub fn jsonpath(
    value: &Value,
    expr: &str,
    return_first: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    const NAME: &str = "jsonpath";
    let keyword: Option<bool> = kwargs.get("return_first")?;
    kwargs.assert_all_used()?;
    let return_first = match (return_first, keyword) {
        (Some(_), Some(_)) => return Err(invalid(NAME, "return_first given twice")),
        (positional, keyword) => positional.or(keyword).unwrap_or(false),
    };
    let path = serde_json_path::JsonPath::parse(expr)
        .map_err(|err| invalid(NAME, format!("invalid JSONPath expression: {err}")))?;
    let json = jsonpath_input(value, 0)?;
    let (values, depth) = measure(&json);
    // Descendant segments, nested queries in filters included, as the normalised expression
    // writes them. A `..` inside a quoted name counts too, which only makes the estimate
    // larger.
    let descendants = path.to_string().matches("..").count();
    let work = (0..descendants).fold(values, |w, _| w.saturating_mul(depth.max(1)));
    if work > JSONPATH_MAX_WORK {
        return Err(invalid(
            NAME,
            format!(
                "the query could take too much work: {values} values nested {depth} deep with \
                 {descendants} `..` segments (the limit is {JSONPATH_MAX_WORK} values visited)"
            ),
        ));
    }
    let nodes = path.query(&json);
    let results = if return_first {
        nodes.first().into_iter().collect()
    } else {
        nodes.all()
    };
    // Measured as JSON text, stopping at the limit: what converting them to template values
    // costs.
    let mut room = Room(JSONPATH_MAX_RESULT_BYTES);
    if results
        .iter()
        .any(|node| serde_json::to_writer(&mut room, node).is_err())
    {
        return Err(invalid(
            NAME,
            format!("the result is larger than {JSONPATH_MAX_RESULT_BYTES} bytes of JSON"),
        ));
    }
    Ok(if return_first {
        results
            .first()
            .map_or(Value::from(()), |node| Value::from(Serde(node)))
    } else {
        Value::from(Serde(results))
    })
}

/// `value` as JSON for `jsonpath`, refusing nesting deeper than [`JSONPATH_MAX_DEPTH`] (`depth`
/// levels are above it).
fn jsonpath_input(value: &Value, depth: usize) -> Result<serde_json::Value, Error> {
    const NAME: &str = "jsonpath";
    let too_deep = || {
        invalid(
            NAME,
            format!("the value is nested deeper than {JSONPATH_MAX_DEPTH} levels"),
        )
    };
    if depth > JSONPATH_MAX_DEPTH {
        return Err(too_deep());
    }
    // Part of an alert: its text, parsed at once (with serde_json's depth limit). Walking it as
    // a template value reads each level's text again, quadratic in the depth.
    if let Some((doc, range)) = crate::raw::json_text(value) {
        return serde_json::from_str(&doc[range]).map_err(|err| {
            if err.to_string().starts_with("recursion limit exceeded") {
                too_deep()
            } else {
                invalid(NAME, format!("cannot read the value as JSON: {err}"))
            }
        });
    }
    match value.kind() {
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = match key.as_str() {
                    Some(k) => k.to_string(),
                    None => key.to_string(),
                };
                map.insert(key, jsonpath_input(&item, depth + 1)?);
            }
            Ok(serde_json::Value::Object(map))
        }
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()?
            .map(|item| jsonpath_input(&item, depth + 1))
            .collect::<Result<_, _>>()
            .map(serde_json::Value::Array),
        _ => serde_json::to_value(value)
            .map_err(|err| invalid(NAME, format!("cannot convert the value to JSON: {err}"))),
    }
}

/// The number of values in `json` and its depth (a scalar is 1 deep).
fn measure(json: &serde_json::Value) -> (u64, u64) {
    fn walk(json: &serde_json::Value, depth: u64, values: &mut u64, deepest: &mut u64) {
        *values += 1;
        *deepest = (*deepest).max(depth);
        match json {
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, depth + 1, values, deepest);
                }
            }
            serde_json::Value::Object(map) => {
                for item in map.values() {
                    walk(item, depth + 1, values, deepest);
                }
            }
            _ => {}
        }
    }
    let (mut values, mut deepest) = (0, 0);
    walk(json, 1, &mut values, &mut deepest);
    (values, deepest)
}

/// A writer that only counts, and fails once more than its room was written.
struct Room(usize);

impl std::io::Write for Room {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self
            .0
            .checked_sub(buf.len())
            .ok_or_else(|| std::io::Error::other("over the limit"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `pattern` matches at the start of the string, like Python's `re.match`.
pub fn regex_match(
    value: &Value,
    pattern: &str,
    ignore_case: Option<bool>,
    kwargs: Kwargs,
) -> Result<bool, Error> {
    const NAME: &str = "regex_match";
    let keyword: Option<bool> = kwargs.get("ignore_case")?;
    kwargs.assert_all_used()?;
    let ignore_case = match (ignore_case, keyword) {
        (Some(_), Some(_)) => return Err(invalid(NAME, "ignore_case given twice")),
        (positional, keyword) => positional.or(keyword).unwrap_or(false),
    };
    let text = value
        .as_str()
        .ok_or_else(|| invalid(NAME, format!("expected a string, got {}", value.kind())))?;
    if pattern.len() > REGEX_MAX_PATTERN_LEN {
        return Err(invalid(
            NAME,
            format!("the pattern is longer than {REGEX_MAX_PATTERN_LEN} bytes"),
        ));
    }
    let regex = regex::RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| match err {
            // regex's syntax errors quote the pattern, which may come from alert data.
            regex::Error::CompiledTooBig(_) => invalid(NAME, "the pattern is too large"),
            _ => invalid(
                NAME,
                "invalid regular expression (Rust regex syntax: no look-around or back-references)",
            ),
        })?;
    // The leftmost match starts at 0 exactly when some match starts at 0.
    Ok(regex.find(text).is_some_and(|m| m.start() == 0))
}

/// Parses a JSON string into a value.
pub fn fromjson(value: &Value) -> Result<Value, Error> {
    const NAME: &str = "fromjson";
    let text = value
        .as_str()
        .ok_or_else(|| invalid(NAME, format!("expected a string, got {}", value.kind())))?;
    let parsed: serde_json::Value =
        serde_json::from_str(text).map_err(|err| invalid(NAME, format!("invalid JSON: {err}")))?;
    Ok(Value::from(Serde(parsed)))
}

/// Escapes the value's text as JSON string content (no surrounding quotes).
pub fn jsonstr(value: &Value) -> String {
    match value.as_str() {
        Some(text) => escape_json_str(text),
        None => escape_json_str(&value.to_string()),
    }
}

/// Seconds (int, float or numeric string) to whole microseconds, rounding half to even the
/// way CPython converts float timestamps and timedeltas.
fn seconds_to_micros(filter: &str, value: &Value) -> Result<i64, Error> {
    let out_of_range = || invalid(filter, "the number of seconds is out of range");
    if value.kind() == ValueKind::Number {
        if value.is_integer() {
            let seconds = i64::try_from(value.clone()).map_err(|_| out_of_range())?;
            return seconds
                .checked_mul(MICROS_PER_SECOND)
                .ok_or_else(out_of_range);
        }
        let seconds = f64::try_from(value.clone()).map_err(|_| out_of_range())?;
        return float_seconds_to_micros(seconds).ok_or_else(out_of_range);
    }
    if let Some(text) = value.as_str() {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<i64>() {
            return seconds
                .checked_mul(MICROS_PER_SECOND)
                .ok_or_else(out_of_range);
        }
        if let Ok(seconds) = text.parse::<f64>() {
            return float_seconds_to_micros(seconds).ok_or_else(out_of_range);
        }
    }
    Err(invalid(
        filter,
        format!("expected a number of seconds, got {}", value.kind()),
    ))
}

fn float_seconds_to_micros(seconds: f64) -> Option<i64> {
    if !seconds.is_finite() {
        return None;
    }
    // As CPython's _PyTime_ObjectToTimeval: split, round the fraction, carry.
    let whole = seconds.trunc();
    let mut micros = (seconds.fract() * 1e6).round_ties_even();
    let mut whole = whole;
    if micros >= 1e6 {
        micros -= 1e6;
        whole += 1.0;
    } else if micros < 0.0 {
        micros += 1e6;
        whole -= 1.0;
    }
    // ±9.2e12 seconds is far outside any date Python accepts anyway.
    if whole.abs() >= 9.2e12 {
        return None;
    }
    (whole as i64)
        .checked_mul(MICROS_PER_SECOND)?
        .checked_add(micros as i64)
}

/// Python's `datetime.isoformat()` of an aware UTC datetime: microseconds only when not
/// zero, offset written `+00:00`. Python's datetime only covers years 1 to 9999.
fn isoformat(filter: &str, epoch_micros: i64) -> Result<String, Error> {
    let out_of_range = || invalid(filter, "the date is out of range (years 1 to 9999)");
    let date = DateTime::<Utc>::from_timestamp_micros(epoch_micros).ok_or_else(out_of_range)?;
    if !(1..=9999).contains(&chrono::Datelike::year(&date)) {
        return Err(out_of_range());
    }
    let mut out = date.format("%Y-%m-%dT%H:%M:%S").to_string();
    let micros = date.timestamp_subsec_micros();
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out.push_str("+00:00");
    Ok(out)
}

/// The ISO-8601 forms Python 3.11's `fromisoformat` accepts in practice: RFC 3339 (`T` or a
/// space, `Z` or an offset, with or without a colon), a date and time without offset (taken
/// as UTC), or a bare date (midnight UTC).
fn parse_iso8601(text: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed);
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(parsed) = DateTime::parse_from_str(text, format) {
            return Some(parsed);
        }
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .into_iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
    })?;
    Some(naive.and_utc().fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, ctx: Value) -> Result<String, Error> {
        let mut env = Environment::new();
        register(&mut env);
        env.render_str(template, ctx)
    }

    fn ok(template: &str) -> String {
        render(template, Value::from(())).unwrap()
    }

    fn err(template: &str) -> String {
        render(template, Value::from(()))
            .expect_err("expected a render error")
            .to_string()
    }

    #[test]
    fn timestamp_to_iso8601_prints_like_python_isoformat() {
        assert_eq!(
            ok("{{ 1767262925 | timestamp_to_iso8601 }}"),
            "2026-01-01T10:22:05+00:00"
        );
        assert_eq!(
            ok("{{ 1767262925.5 | timestamp_to_iso8601 }}"),
            "2026-01-01T10:22:05.500000+00:00"
        );
        assert_eq!(
            ok("{{ '1767262925' | timestamp_to_iso8601 }}"),
            "2026-01-01T10:22:05+00:00"
        );
        assert_eq!(
            ok("{{ 0 | timestamp_to_iso8601 }}"),
            "1970-01-01T00:00:00+00:00"
        );
        // Python: datetime.fromtimestamp(-1.5, timezone.utc) -> 1969-12-31 23:59:58.500000
        assert_eq!(
            ok("{{ -1.5 | timestamp_to_iso8601 }}"),
            "1969-12-31T23:59:58.500000+00:00"
        );
    }

    #[test]
    fn timestamp_to_iso8601_rejects_what_python_rejects() {
        assert!(err("{{ 'soon' | timestamp_to_iso8601 }}").contains("got string"));
        assert!(err("{{ none | timestamp_to_iso8601 }}").contains("got none"));
        assert!(err("{{ 1e20 | timestamp_to_iso8601 }}").contains("out of range"));
        assert!(err("{{ 253402300800 | timestamp_to_iso8601 }}").contains("out of range"));
    }

    #[test]
    fn iso8601_to_timestamp_accepts_the_forms_sekoia_emits() {
        for (text, expected) in [
            ("2026-01-01T10:22:05+00:00", 1767262925),
            ("2026-01-01T10:22:05Z", 1767262925),
            ("2026-01-01T10:21:48.512073+00:00", 1767262908),
            ("2026-01-01T12:22:05+02:00", 1767262925),
            ("2026-01-01T12:22:05+0200", 1767262925),
            ("2026-01-01 10:22:05", 1767262925),
            ("2026-01-01T10:22", 1767262920),
            ("2026-01-01", 1767225600),
            ("1969-12-31T23:59:59.5Z", 0),
        ] {
            let got = render(
                "{{ t | iso8601_to_timestamp }}",
                minijinja::context! { t => text },
            );
            assert_eq!(got.unwrap(), expected.to_string(), "for {text}");
        }
    }

    #[test]
    fn iso8601_to_timestamp_rejects_garbage_without_quoting_it() {
        let message = err("{{ 'secret-ish garbage' | iso8601_to_timestamp }}");
        assert!(message.contains("not an ISO-8601"), "{message}");
        assert!(!message.contains("secret-ish"), "{message}");
        assert!(err("{{ 5 | iso8601_to_timestamp }}").contains("got number"));
    }

    #[test]
    fn time_with_delta_adds_seconds_to_now() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T10:22:05.250000Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |v: Value| time_with_delta_at(now, &v).unwrap();
        // 366 days, as in Sekoia's docs.
        assert_eq!(
            at(Value::from(-31622400)),
            "2024-12-31T10:22:05.250000+00:00"
        );
        assert_eq!(at(Value::from(0.75)), "2026-01-01T10:22:06+00:00");
        assert_eq!(at(Value::from("60")), "2026-01-01T10:23:05.250000+00:00");
        assert!(time_with_delta_at(now, &Value::from(true)).is_err());
    }

    #[test]
    fn time_with_delta_uses_the_current_time() {
        let before = Utc::now();
        let got = ok("{{ 3600 | time_with_delta }}");
        let after = Utc::now();
        let parsed = DateTime::parse_from_rfc3339(&got).unwrap();
        assert!(got.ends_with("+00:00"), "{got}");
        let hour = chrono::TimeDelta::hours(1);
        let slack = chrono::TimeDelta::microseconds(1);
        assert!(parsed >= before + hour - slack && parsed <= after + hour + slack);
    }

    #[test]
    fn jsonpath_returns_all_matches_or_the_first() {
        let ctx = minijinja::context! {
            a => Value::from(Serde(serde_json::json!({"ttps": [{"name": "x"}, {"name": "y"}]})))
        };
        assert_eq!(
            render("{{ a | jsonpath('$.ttps[*].name') }}", ctx.clone()).unwrap(),
            "['x', 'y']"
        );
        assert_eq!(
            render("{{ a | jsonpath('$.ttps[*].name', True) }}", ctx.clone()).unwrap(),
            "x"
        );
        assert_eq!(
            render(
                "{{ a | jsonpath('$.ttps[*].name', return_first=True) }}",
                ctx.clone()
            )
            .unwrap(),
            "x"
        );
        assert_eq!(
            render("{{ a | jsonpath('$.nope', True) }}", ctx.clone()).unwrap(),
            "None"
        );
        assert_eq!(
            render("{{ a | jsonpath('$.nope') | length }}", ctx.clone()).unwrap(),
            "0"
        );
        let message = render("{{ a | jsonpath('$[') }}", ctx)
            .unwrap_err()
            .to_string();
        assert!(message.contains("invalid JSONPath"), "{message}");
    }

    #[test]
    fn regex_match_is_anchored_at_the_start_only() {
        assert_eq!(ok("{{ 'Brute force' | regex_match('Brute') }}"), "True");
        assert_eq!(ok("{{ 'Brute force' | regex_match('force') }}"), "False");
        assert_eq!(ok("{{ 'Brute force' | regex_match('.*force') }}"), "True");
        assert_eq!(ok("{{ 'Brute force' | regex_match('brute') }}"), "False");
        assert_eq!(
            ok("{{ 'Brute force' | regex_match('brute', True) }}"),
            "True"
        );
        assert_eq!(
            ok("{{ 'Brute force' | regex_match('brute', ignore_case=True) }}"),
            "True"
        );
        // The alternation must not escape the anchoring.
        assert_eq!(ok("{{ 'xb' | regex_match('a|b') }}"), "False");
    }

    #[test]
    fn regex_match_rejects_bad_and_huge_patterns() {
        assert!(err("{{ 'a' | regex_match('(') }}").contains("invalid regular expression"));
        assert!(err("{{ 'a' | regex_match('(?=a)') }}").contains("invalid regular expression"));
        assert!(err("{{ 'a' | regex_match('a{1000}{1000}') }}").contains("too large"));
        let long = format!("{{{{ 'a' | regex_match('{}') }}}}", "a".repeat(20_000));
        assert!(err(&long).contains("longer than"));
        assert!(err("{{ 5 | regex_match('5') }}").contains("got number"));
    }

    #[test]
    fn fromjson_parses_strings() {
        assert_eq!(ok(r#"{{ ('{"a": [1, 2]}' | fromjson).a[1] }}"#), "2");
        assert!(err("{{ '{nope' | fromjson }}").contains("invalid JSON"));
        assert!(err("{{ 5 | fromjson }}").contains("got number"));
    }

    #[test]
    fn jsonstr_escapes_without_quotes() {
        assert_eq!(ok(r#"{{ 'a"b\\c' | jsonstr }}"#), r#"a\"b\\c"#);
        assert_eq!(ok("{{ 5 | jsonstr }}"), "5");
    }
}
