//! The template engine and the compiled templates it hands out.
//!
//! One minijinja environment is configured like Sekoia's Jinja2 as far as it can be known:
//! - undefined values print as nothing (`Lenient`, Jinja2's default `Undefined`);
//! - Python string and dict methods (`.items()`, `.get()`, `.split()`…) work, through
//!   minijinja-contrib's pycompat callback;
//! - no auto-escaping, whatever the template is called;
//! - floats print like Python's `repr` (`1e+16`, `1.5e-07`), booleans and none as `True`,
//!   `False`, `None`;
//! - every render gets a fuel budget, so a runaway template fails fast instead of spinning;
//! - a filter or test that does not exist is refused when the template is compiled (minijinja,
//!   like Jinja2, would only fail when a render reaches it: every alert would be
//!   dead-lettered by a template that passed the startup checks).
//!
//! Each compiled template owns a copy of the environment holding just that template, which
//! makes it `'static`, `Send + Sync` and cheap to clone.

use std::fmt;
use std::sync::Arc;

use minijinja::machinery::Instruction;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

use crate::context::Context;
use crate::error::{CompileError, RenderError};
use crate::{filters, structured};

/// Fuel budget of [`Engine::new`]: Sekoia's body template needs about 30, a 10⁴×10⁴ loop is
/// stopped within milliseconds.
pub const DEFAULT_FUEL: u64 = 100_000;

/// The name of the single template in each compiled template's environment.
const TEMPLATE_NAME: &str = "template";

/// Compiles templates with one environment configured like Sekoia's.
#[derive(Clone)]
pub struct Engine {
    env: Environment<'static>,
    fuel: u64,
}

impl Engine {
    /// An engine with the default fuel budget ([`DEFAULT_FUEL`]).
    pub fn new() -> Self {
        Self::with_fuel(DEFAULT_FUEL)
    }

    /// An engine whose renders each get `fuel` units of fuel.
    pub fn with_fuel(fuel: u64) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // The default picks JSON escaping for names ending in .json; nothing is escaped in
        // Jinja2's default environment.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_formatter(python_formatter);
        env.set_fuel(Some(fuel));
        // Debug info would keep the template source and context values in errors, and the
        // source may hold secrets.
        env.set_debug(false);
        filters::register(&mut env);
        Engine { env, fuel }
    }

    /// This engine, with `values` readable by every template it compiles as
    /// `{{ name['KEY'] }}`. For values that must stay data, never template source: the
    /// config's `${VAR}` values in destination templates (`alertsync_config::TemplateValues`).
    pub fn with_values(
        mut self,
        name: &'static str,
        values: std::collections::BTreeMap<String, String>,
    ) -> Self {
        self.env.add_global(name, Value::from(values));
        self
    }

    /// This engine, with an attribute of a missing value reading as missing too (Jinja2's
    /// `ChainableUndefined`): for templates that read optional parts of an outside payload
    /// (a tool's notification), where "absent" must mean "empty", not an error.
    pub fn with_chainable_undefined(mut self) -> Self {
        self.env
            .set_undefined_behavior(UndefinedBehavior::Chainable);
        self
    }

    /// Compiles a body template.
    ///
    /// The text must be a valid Jinja template. If it is also valid JSON, it is rendered
    /// structurally (see [`crate::structured`]): each templated string, keys
    /// included, is rendered on its own and JSON-escaped, and JSON embedded in such a string
    /// (optionally in `'…'`) is handled one level down. Otherwise, or when a templated string
    /// does not compile on its own, it is rendered plainly and its output must parse as JSON.
    pub fn compile_json_body(&self, text: &str) -> Result<BodyTemplate, CompileError> {
        // Checked as written, so that templates Jinja2 rejects (such as `\"` inside a
        // `{{ }}`) are rejected here too, with the line numbers of the text as written.
        self.env.template_from_str(text)?;
        if let Some(source) = structured::rewrite(&self.env, text)
            && let Ok(compiled) = self.compile(source)
        {
            return Ok(BodyTemplate {
                compiled,
                structured: true,
            });
        }
        Ok(BodyTemplate {
            compiled: self.compile(text.to_owned())?,
            structured: false,
        })
    }

    /// Compiles a text template (a header value, a URL, a query parameter value), rendered
    /// plainly to a string.
    pub fn compile_text(&self, text: &str) -> Result<TextTemplate, CompileError> {
        Ok(TextTemplate {
            compiled: self.compile(text.to_owned())?,
            is_static: !structured::has_template_syntax(text),
        })
    }

    /// Compiles a URL template: every value a `{{ … }}` prints is percent-encoded as a URL
    /// component (`/`, `?`, `#`, `%`, `&`, spaces, control characters… all encoded), so alert
    /// text rendered into a URL can never change its path, add query parameters or point
    /// elsewhere. The template's own text is kept as written.
    pub fn compile_url(&self, text: &str) -> Result<TextTemplate, CompileError> {
        let mut env = self.env.clone();
        env.set_formatter(url_formatter);
        let engine = Engine {
            env,
            fuel: self.fuel,
        };
        Ok(TextTemplate {
            compiled: engine.compile(text.to_owned())?,
            is_static: !structured::has_template_syntax(text),
        })
    }

    fn compile(&self, source: String) -> Result<Compiled, CompileError> {
        let mut env = self.env.clone();
        env.add_template_owned(TEMPLATE_NAME, source)?;
        check_filters_and_tests(&env)?;
        Ok(Compiled {
            env: Arc::new(env),
            fuel: self.fuel,
        })
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("fuel", &self.fuel)
            .finish_non_exhaustive()
    }
}

/// A compiled body template. Cloning shares the compiled template.
#[derive(Clone)]
pub struct BodyTemplate {
    compiled: Compiled,
    structured: bool,
}

impl BodyTemplate {
    /// Whether the template is rendered structurally (its text is JSON), so values can
    /// never change the JSON structure. `false` means plain Jinja rendering.
    pub fn is_structured(&self) -> bool {
        self.structured
    }

    /// Renders the body for one alert. The result always parses as JSON.
    pub fn render(&self, ctx: &Context) -> Result<String, RenderError> {
        let body = self.compiled.render(ctx)?;
        // Structured output is valid by construction; checking it too keeps the guarantee in
        // one place. A syntax check, without building the body as a JSON tree (which was 2 %
        // of the forwarder's CPU in the benchmark's profile).
        serde_json::from_str::<serde::de::IgnoredAny>(&body)
            .map_err(|err| RenderError::InvalidJson(err.to_string()))?;
        Ok(body)
    }
}

impl fmt::Debug for BodyTemplate {
    // The source may hold secrets (an intake key); never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyTemplate")
            .field("structured", &self.structured)
            .finish_non_exhaustive()
    }
}

/// A compiled text template. Cloning shares the compiled template.
#[derive(Clone)]
pub struct TextTemplate {
    compiled: Compiled,
    is_static: bool,
}

impl TextTemplate {
    /// Renders the text for one alert.
    pub fn render(&self, ctx: &Context) -> Result<String, RenderError> {
        self.compiled.render(ctx)
    }

    /// Whether the text has no template syntax, so every render gives the same result.
    pub fn is_static(&self) -> bool {
        self.is_static
    }
}

impl fmt::Debug for TextTemplate {
    // The source may hold secrets (a token in a header); never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextTemplate")
            .field("is_static", &self.is_static)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Compiled {
    env: Arc<Environment<'static>>,
    fuel: u64,
}

impl Compiled {
    fn render(&self, ctx: &Context) -> Result<String, RenderError> {
        self.env
            .get_template(TEMPLATE_NAME)
            .and_then(|template| template.render(ctx.value().clone()))
            .map_err(|err| RenderError::from_minijinja(&err, self.fuel))
    }
}

/// Refuses a template that applies a filter, or performs a test, that `env` does not have.
///
/// minijinja looks filters and tests up by name when a render reaches them, so a typo would
/// only show as a failed render of every alert. The names are read from the compiled
/// instructions (exact, unlike scanning the text, where `|` may sit inside a string), and each
/// is looked up by rendering a one-line probe that applies it.
fn check_filters_and_tests(env: &Environment<'static>) -> Result<(), CompileError> {
    let template = env.get_template(TEMPLATE_NAME)?;
    let compiled = minijinja::machinery::get_compiled_template(&template);
    let mut checked = std::collections::HashSet::new();
    for instructions in std::iter::once(&compiled.instructions).chain(compiled.blocks.values()) {
        let mut idx = 0;
        while let Some(instruction) = instructions.get(idx) {
            let (what, name) = match instruction {
                Instruction::ApplyFilter(name, ..) => ("filter", *name),
                Instruction::PerformTest(name, ..) => ("test", *name),
                _ => {
                    idx += 1;
                    continue;
                }
            };
            if checked.insert((what, name)) && !exists(env, what, name) {
                return Err(CompileError::Unknown {
                    what,
                    name: name.to_string(),
                    line: instructions.get_line(idx),
                });
            }
            idx += 1;
        }
    }
    Ok(())
}

/// Whether `env` has the filter or test `name`: applying it to `none` fails with anything but
/// "unknown filter" / "unknown test" (a missing argument, a wrong type) when it exists.
fn exists(env: &Environment<'static>, what: &str, name: &str) -> bool {
    let probe = if what == "filter" {
        format!("{{{{ none|{name} }}}}")
    } else {
        format!("{{{{ none is {name} }}}}")
    };
    match env.render_str(&probe, ()) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::UnknownFilter | ErrorKind::UnknownTest),
    }
}

/// Prints floats the way Python's `repr` does and everything else as minijinja does.
fn python_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_number()
        && !value.is_integer()
        && let Ok(float) = f64::try_from(value.clone())
    {
        return write!(out, "{}", PythonFloat(float)).map_err(Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

/// Characters left as they are in a URL component: RFC 3986's unreserved set.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Prints a value as [`python_formatter`] does (floats like Python, undefined as nothing),
/// then percent-encoded: for URL templates ([`Engine::compile_url`]).
fn url_formatter(out: &mut Output, _state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        return Ok(());
    }
    let text = if value.is_number()
        && !value.is_integer()
        && let Ok(float) = f64::try_from(value.clone())
    {
        PythonFloat(float).to_string()
    } else {
        value.to_string()
    };
    // `.` and `..` alone would walk the path up a level once a client normalises it.
    if text == "." || text == ".." {
        return out
            .write_str(&text.replace('.', "%2E"))
            .map_err(Error::from);
    }
    write!(
        out,
        "{}",
        percent_encoding::utf8_percent_encode(&text, URL_COMPONENT)
    )
    .map_err(Error::from)
}

/// Python's `repr(float)`. Rust's `Debug` already picks the shortest round-trip digits and
/// switches to exponent notation at the same thresholds (below 1e-4, from 1e16); Python
/// then writes the exponent with a sign and at least two digits.
struct PythonFloat(f64);

impl fmt::Display for PythonFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value.is_nan() {
            return f.write_str("nan");
        }
        if value.is_infinite() {
            return f.write_str(if value > 0.0 { "inf" } else { "-inf" });
        }
        let repr = format!("{value:?}");
        let Some((mantissa, exponent)) = repr.split_once('e') else {
            return f.write_str(&repr);
        };
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        write!(f, "{mantissa}e{sign}{digits:0>2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        for (value, expected) in [
            (0.1, "0.1"),
            (50.0, "50.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-07"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (-2.5e300, "-2.5e+300"),
            (123456789.123, "123456789.123"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(PythonFloat(value).to_string(), expected, "for {value:?}");
        }
    }

    #[test]
    fn compiled_templates_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Engine>();
        assert_send_sync::<BodyTemplate>();
        assert_send_sync::<TextTemplate>();
        assert_send_sync::<Context>();
    }
}
