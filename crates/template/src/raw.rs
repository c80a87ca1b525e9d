//! The alert read from its JSON text in place.
//!
//! The forwarder receives each alert as text (the Get Alert body, about 5.5 KiB) and a
//! template typically reads three of its fields. Parsing the text into a `serde_json::Value`
//! tree and dropping it again was a third of the forwarder's CPU per message (BENCHMARKS.md).
//! [`RawAlert`] instead checks the text once without building anything, then indexes one
//! level at a time, only where a template (or a filter) looks: an object's index is its keys
//! and the byte ranges of their values, and a value is parsed only when it is read.
//!
//! Templates see exactly what they would see from the parsed tree: same values, same key
//! order, and a repeated key keeps its first position with its last value, as
//! `serde_json::Map` does (a test renders the same templates both ways).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use serde_json::value::RawValue;

/// Deepest nesting of objects and arrays in an alert [`RawAlert::parse`] accepts (serde_json's
/// own parsing limit). Templates and filters walk the alert recursively, and a document nested
/// a few thousand levels deep overflowed the stack (`tojson`) or took memory and time
/// quadratic in its depth (`jsonpath('$..x')`); Sekoia's alerts are a few levels deep.
pub const MAX_DEPTH: usize = 128;

/// A JSON document (a Get Alert body) that templates and filters read in place.
#[derive(Clone)]
pub struct RawAlert {
    doc: Arc<str>,
    /// The top-level value, indexed one level deep.
    root: Node,
}

impl fmt::Debug for RawAlert {
    // The alert can be large and is hostile input; its content does not belong in a dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAlert")
            .field("bytes", &self.doc.len())
            .finish_non_exhaustive()
    }
}

impl RawAlert {
    /// Checks that `text` is one JSON value (allocating nothing for it) nested at most
    /// [`MAX_DEPTH`] levels deep, and indexes its top level. The error is serde_json's, with
    /// line and column, or says the document is too deep.
    pub fn parse(text: impl Into<Arc<str>>) -> Result<RawAlert, serde_json::Error> {
        let doc: Arc<str> = text.into();
        if nested_deeper_than(doc.as_bytes(), MAX_DEPTH) {
            return Err(de::Error::custom(format!(
                "the document is nested more than {MAX_DEPTH} levels deep, deeper than \
                 alertsync reads"
            )));
        }
        // Indexing an object or array checks every value's syntax on the way (a raw value is
        // scanned in full); anything else is checked by a scan that builds nothing.
        let root = match Node::try_index(&doc, 0..doc.len())? {
            Node::Scalar => {
                serde_json::from_str::<IgnoredAny>(&doc)?;
                Node::Scalar
            }
            root => root,
        };
        Ok(RawAlert { doc, root })
    }

    /// A parsed alert, written back to text to be read the same way (for the CLI and tests;
    /// the forwarder has the text already).
    pub fn from_json(alert: &Json) -> RawAlert {
        // serde_json writes valid JSON for any value, so indexing it cannot fail.
        let doc: Arc<str> = alert.to_string().into();
        let root = Node::index(&doc, 0..doc.len());
        RawAlert { doc, root }
    }

    /// The range of the top-level field `key`, if the document is an object that has it.
    fn top(&self, key: &str) -> Option<Range<usize>> {
        match &self.root {
            Node::Object(entries) => entries.get(&self.doc, key),
            _ => None,
        }
    }

    /// The top-level fields named in `keys` that exist, parsed, as one JSON object (any other
    /// field left out). What [`crate::trigger_output`] and the forwarder's filters read, at
    /// the cost of parsing only those fields. A document that is not an object gives `{}`.
    pub fn fields(&self, keys: &[&str]) -> Json {
        let out = keys
            .iter()
            .filter_map(|key| Some((key.to_string(), parse_json(&self.doc, self.top(key)?))))
            .collect();
        Json::Object(out)
    }

    /// The top-level field `key` as a template value (read lazily), if the document is an
    /// object that has it.
    pub(crate) fn field(&self, key: &str) -> Option<Value> {
        let range = self.top(key)?;
        let node = Node::index(&self.doc, range.clone());
        Some(RawNode::value_of(&self.doc, node, range))
    }

    /// `key.sub` as a template value (read lazily), as `alert.get(key).and_then(|p|
    /// p.get(sub))` reads the tree.
    pub(crate) fn sub_field(&self, key: &str, sub: &str) -> Option<Value> {
        let Node::Object(inner) = Node::index(&self.doc, self.top(key)?) else {
            return None;
        };
        let range = inner.get(&self.doc, sub)?;
        let node = Node::index(&self.doc, range.clone());
        Some(RawNode::value_of(&self.doc, node, range))
    }

    /// The whole document as a tree, for code that needs one (and for tests).
    pub fn to_json(&self) -> Json {
        parse_json(&self.doc, 0..self.doc.len())
    }

    /// The document as a template value: scalars directly, objects and arrays read lazily.
    pub(crate) fn value(&self) -> Value {
        RawNode::value_of(&self.doc, self.root.clone(), 0..self.doc.len())
    }
}

/// Whether objects and arrays in `doc` (JSON text; checked for syntax separately) nest more
/// than `limit` deep. One pass over the bytes, stopping at the first level too deep.
fn nested_deeper_than(doc: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in doc {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// One level of a document: what is known of a value without parsing its children.
#[derive(Clone)]
enum Node {
    /// Entries in document order, repeated keys included.
    Object(Arc<Entries>),
    /// Byte ranges of the elements.
    Array(Arc<Vec<Range<usize>>>),
    /// A string, number, boolean or null (parsed when read).
    Scalar,
}

/// An object's key: where it is in the document, or its unescaped text when it holds escapes.
enum Key {
    At(Range<usize>),
    Unescaped(Box<str>),
}

/// An object's entries, in document order, repeated keys included.
///
/// Objects are small and read a few keys each, so a lookup scans the entries rather than
/// hashing: building a map was most of the cost of reading an alert this way.
struct Entries(Vec<(Key, Range<usize>)>);

impl Entries {
    fn key<'a>(doc: &'a str, key: &'a Key) -> &'a str {
        match key {
            Key::At(r) => &doc[r.clone()],
            Key::Unescaped(k) => k,
        }
    }

    /// The value of `key`: its last occurrence, as serde_json's map keeps the last value.
    fn get(&self, doc: &str, key: &str) -> Option<Range<usize>> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| Entries::key(doc, k) == key)
            .map(|(_, v)| v.clone())
    }

    /// The distinct keys, each at its first occurrence, as serde_json's ordered map has them.
    fn keys<'a>(&'a self, doc: &'a str) -> Vec<&'a str> {
        let mut keys: Vec<&str> = Vec::with_capacity(self.0.len());
        // A set only for large objects, so that a hostile one with many keys stays linear.
        let mut seen = (self.0.len() > 32).then(std::collections::HashSet::new);
        for (k, _) in &self.0 {
            let k = Entries::key(doc, k);
            let new = match &mut seen {
                Some(seen) => seen.insert(k),
                None => !keys.contains(&k),
            };
            if new {
                keys.push(k);
            }
        }
        keys
    }
}

impl Node {
    /// Indexes the value at `range` of `doc`, which [`RawAlert::parse`] has checked. Should
    /// the parse fail anyway, the value reads as empty rather than panicking.
    fn index(doc: &str, range: Range<usize>) -> Node {
        Node::try_index(doc, range).unwrap_or(Node::Scalar)
    }

    fn try_index(doc: &str, range: Range<usize>) -> Result<Node, serde_json::Error> {
        let text = &doc[range];
        let base = doc.as_ptr() as usize;
        let mut de = serde_json::Deserializer::from_str(text);
        let node = match text.trim_start().as_bytes().first() {
            Some(b'{') => {
                Node::Object(Arc::new(Entries(de.deserialize_map(ObjectIndex { base })?)))
            }
            Some(b'[') => Node::Array(Arc::new(de.deserialize_seq(ArrayIndex { base })?)),
            _ => return Ok(Node::Scalar),
        };
        de.end()?;
        Ok(node)
    }
}

/// Byte range of `raw` within the document starting at `base`.
fn range_in(base: usize, raw: &RawValue) -> Range<usize> {
    str_range(base, raw.get())
}

/// Byte range of `text`, a slice of the document starting at `base`.
fn str_range(base: usize, text: &str) -> Range<usize> {
    let start = text.as_ptr() as usize - base;
    start..start + text.len()
}

/// The value at `range`, parsed (`null` if it somehow does not parse).
fn parse_json(doc: &str, range: Range<usize>) -> Json {
    serde_json::from_str(&doc[range]).unwrap_or(Json::Null)
}

struct ObjectIndex {
    base: usize,
}

impl<'de> Visitor<'de> for ObjectIndex {
    type Value = Vec<(Key, Range<usize>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(32));
        while let Some((KeyText(key), raw)) = map.next_entry::<KeyText<'de>, &'de RawValue>()? {
            let key = match key {
                Cow::Borrowed(k) => Key::At(str_range(self.base, k)),
                Cow::Owned(k) => Key::Unescaped(k.into_boxed_str()),
            };
            entries.push((key, range_in(self.base, raw)));
        }
        Ok(entries)
    }
}

struct ArrayIndex {
    base: usize,
}

impl<'de> Visitor<'de> for ArrayIndex {
    type Value = Vec<Range<usize>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ranges = Vec::with_capacity(seq.size_hint().unwrap_or(8));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            ranges.push(range_in(self.base, raw));
        }
        Ok(ranges)
    }
}

/// An object key, borrowed from the document unless it holds escapes.
struct KeyText<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// An object or array of a [`RawAlert`] as a template value.
struct RawNode {
    doc: Arc<str>,
    node: Node,
    /// Where its text is in `doc`.
    range: Range<usize>,
}

/// The JSON text of `value` when it is an object or array of an alert read in place (a filter
/// then parses the text once instead of walking the value one level at a time, which reads
/// each level's text again).
pub(crate) fn json_text(value: &Value) -> Option<(Arc<str>, Range<usize>)> {
    let node = value.downcast_object_ref::<RawNode>()?;
    Some((node.doc.clone(), node.range.clone()))
}

impl fmt::Debug for RawNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawNode").finish_non_exhaustive()
    }
}

impl RawNode {
    /// The value at `range`, already indexed as `node`.
    fn value_of(doc: &Arc<str>, node: Node, range: Range<usize>) -> Value {
        match node {
            Node::Scalar => scalar_at(&doc[range]),
            node => Value::from_object(RawNode {
                doc: doc.clone(),
                node,
                range,
            }),
        }
    }

    /// The child value at `range`, indexed now.
    fn child(&self, range: Range<usize>) -> Value {
        let node = Node::index(&self.doc, range.clone());
        RawNode::value_of(&self.doc, node, range)
    }
}

/// The scalar whose JSON text is `text` as a template value, as Python's `json` module reads
/// it (Sekoia's playbooks are Python): what serde_json cannot read is not silently `None`.
///
/// - An integer is exact up to 128 bits (serde_json reads one beyond 64 bits as a float,
///   Python keeps every digit); beyond, the value is an error when a template uses it.
/// - A number beyond a float's range (`1e400`) is infinity, as Python reads it (serde_json
///   refuses it); it prints `inf`.
/// - A string holding a lone UTF-16 surrogate escape (`"\ud800"`) cannot be text here, nor
///   be sent as UTF-8 by Python either: it is an error when a template uses it, saying so.
fn scalar_at(text: &str) -> Value {
    let text = text.trim();
    if let Some(b'-' | b'0'..=b'9') = text.as_bytes().first() {
        return number_at(text);
    }
    match serde_json::from_str::<Json>(text) {
        Ok(json) => scalar_value(&json),
        Err(_) if text.starts_with('"') => unreadable(
            "the alert holds a string with a lone UTF-16 surrogate escape (such as \\ud800), \
             which is not text and cannot be sent as UTF-8",
        ),
        Err(_) => unreadable("the alert holds a value that is not valid JSON"),
    }
}

/// A JSON number's text as a template value (see [`scalar_at`]).
fn number_at(text: &str) -> Value {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::from(u);
        }
        if let Ok(i) = text.parse::<i128>() {
            return Value::from(i);
        }
        if let Ok(u) = text.parse::<u128>() {
            return Value::from(u);
        }
        return unreadable(
            "the alert holds an integer larger than 128 bits, which alertsync cannot render \
             exactly",
        );
    }
    // Rust's parser, like Python's `float()`, rounds correctly and reads an overflow as
    // infinity (serde_json refuses it).
    match text.parse::<f64>() {
        Ok(f) => Value::from(f),
        Err(_) => unreadable("the alert holds a value that is not valid JSON"),
    }
}

/// A value that is an error, with `reason`, when a template uses it (prints it, compares it,
/// passes it to a filter…): the render fails and the alert is dead-lettered with the reason.
fn unreadable(reason: &str) -> Value {
    Value::from(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        reason.to_string(),
    ))
}

/// A JSON scalar as minijinja's serde conversion makes it, so templates see the same values
/// whichever way the alert is read.
fn scalar_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        // Not reached: objects and arrays are RawNodes.
        other => Value::from(minijinja::value::Serde(other)),
    }
}

impl Object for RawNode {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node {
            Node::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match &self.node {
            Node::Object(entries) => Some(self.child(entries.get(&self.doc, key.as_str()?)?)),
            Node::Array(ranges) => {
                let i = i64::try_from(key.clone()).ok()?;
                // Python-style negative indices, as minijinja's own lists have.
                let i = if i < 0 { i + ranges.len() as i64 } else { i };
                let i = usize::try_from(i).ok()?;
                Some(self.child(ranges.get(i)?.clone()))
            }
            Node::Scalar => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match &self.node {
            Node::Object(entries) => Enumerator::Values(
                entries
                    .keys(&self.doc)
                    .into_iter()
                    .map(Value::from)
                    .collect(),
            ),
            Node::Array(ranges) => Enumerator::Seq(ranges.len()),
            Node::Scalar => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match &self.node {
            Node::Object(entries) => Some(entries.keys(&self.doc).len()),
            Node::Array(ranges) => Some(ranges.len()),
            Node::Scalar => Some(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile nesting is refused with an error, never a stack overflow; nesting within the
    /// limit reads fine.
    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        for open in ["[", "{\"a\":"] {
            let deep = open.repeat(100_000);
            assert!(RawAlert::parse(deep).is_err());
        }
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let deep = format!(
                "{}1{}",
                open.repeat(MAX_DEPTH + 1),
                close.repeat(MAX_DEPTH + 1)
            );
            let err = RawAlert::parse(deep).unwrap_err().to_string();
            assert_eq!(
                err,
                "the document is nested more than 128 levels deep, deeper than alertsync reads"
            );
            let limit = format!("{}1{}", open.repeat(MAX_DEPTH), close.repeat(MAX_DEPTH));
            assert!(RawAlert::parse(limit).is_ok());
        }
        // Brackets inside strings, escaped quotes included, do not count.
        let text = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(RawAlert::parse(text).is_ok());
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        let alert = RawAlert::parse(ok.clone()).unwrap();
        assert_eq!(alert.to_json(), serde_json::from_str::<Json>(&ok).unwrap());
        let mut env = minijinja::Environment::new();
        env.set_recursion_limit(1000);
        let t = env
            .template_from_str("{{ a.a[0][0][0] | length }}")
            .unwrap();
        assert_eq!(
            t.render(minijinja::context! { a => alert.value() })
                .unwrap(),
            "1"
        );
    }
}
