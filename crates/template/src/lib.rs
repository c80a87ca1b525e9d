//! Sekoia-compatible Jinja templates for alertsync.
//!
//! Sekoia's "Request URL" playbook action renders a Jinja2 template into the JSON body it
//! POSTs, with the trigger output as `node.0` and the fetched alert as `node.1`. This crate
//! renders the same templates, byte for byte for ordinary values, but without letting alert
//! text break or inject into the JSON.
//!
//! Modules:
//! - [`engine`]: [`Engine`], the one configured minijinja environment (lenient undefined
//!   values, Python-style methods and float printing, a fuel budget), and the compiled
//!   [`BodyTemplate`] and [`TextTemplate`] it hands out.
//! - [`structured`]: structured rendering of body templates that are themselves JSON: every
//!   templated string is rendered on its own and JSON-escaped, one level deeper for JSON
//!   embedded in a string (Sekoia's HTTP intake template).
//! - [`filters`]: Sekoia's custom filters (`timestamp_to_iso8601`, `iso8601_to_timestamp`,
//!   `jsonpath`, `time_with_delta`, `regex_match`, `fromjson`) plus `jsonstr`.
//! - [`context`]: the render [`Context`] and [`trigger_output`], the exact payload Sekoia's
//!   "Alert Created" trigger emits.
//! - [`raw`]: [`RawAlert`], the alert read from its JSON text in place, one level at a
//!   time, where templates and filters look.
//! - [`error`]: [`CompileError`] and [`RenderError`].

pub mod context;
pub mod engine;
pub mod error;
pub mod filters;
pub mod raw;
pub mod structured;

pub use context::{Context, trigger_output};
pub use engine::{BodyTemplate, DEFAULT_FUEL, Engine, TextTemplate};
pub use error::{CompileError, RenderError};
pub use raw::RawAlert;
