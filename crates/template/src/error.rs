//! Errors of compiling and rendering templates.
//!
//! Neither error ever quotes the template source or the rendered output: both can hold
//! secrets (an intake key in the body, a token in a header). They say what went wrong and
//! on which line.

use std::error::Error as _;
use std::fmt;

/// A template could not be compiled; the configuration that holds it is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The text is not a valid Jinja template.
    #[error("template syntax error{}: {message}", AtLine(*.line))]
    Syntax {
        /// What is wrong, in minijinja's words.
        message: String,
        /// 1-based line of the template text, when known.
        line: Option<usize>,
    },
    /// The template applies a filter or performs a test that does not exist.
    #[error("unknown {what} `{name}`{}", AtLine(*.line))]
    Unknown {
        /// `filter` or `test`.
        what: &'static str,
        /// The name as written.
        name: String,
        /// 1-based line of the template text, when known.
        line: Option<usize>,
    },
}

/// Rendering one template for one alert failed. Rendering is deterministic, so retrying the
/// same alert with the same template fails the same way (except for `time_with_delta`).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A plain (non-structured) body template produced text that is not JSON. The string is
    /// serde_json's description of the first problem and its position, never the text.
    #[error("template produced invalid JSON: {0}")]
    InvalidJson(String),
    /// The render used up its fuel budget (a runaway loop or a huge string).
    #[error("template ran out of fuel (budget {limit}){}", AtLine(*.line))]
    OutOfFuel {
        /// The fuel budget of the engine.
        limit: u64,
        /// Line of the template where the fuel ran out, when known.
        line: Option<usize>,
    },
    /// Any other failure while rendering: an operation on an undefined value, a filter given
    /// input it cannot handle, an unknown filter, and so on.
    #[error("template render error{}: {message}", AtLine(*.line))]
    Template {
        /// What went wrong, in minijinja's or the filter's words.
        message: String,
        /// Line of the template, when known. For structured body templates this counts the
        /// lines of the template after its templated strings were decoded, which differs
        /// only when such a string contains an escaped newline.
        line: Option<usize>,
    },
}

/// Formats " at line N" when the line is known.
struct AtLine(Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " at line {line}"),
            None => Ok(()),
        }
    }
}

/// "kind: detail" without minijinja's "(in name:line)" suffix: the name is internal and the
/// line is reported separately.
fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

impl From<minijinja::Error> for CompileError {
    fn from(err: minijinja::Error) -> Self {
        CompileError::Syntax {
            message: describe(&err),
            line: err.line(),
        }
    }
}

impl RenderError {
    pub(crate) fn from_minijinja(err: &minijinja::Error, fuel: u64) -> Self {
        if is_out_of_fuel(err) {
            return RenderError::OutOfFuel {
                limit: fuel,
                line: err.line(),
            };
        }
        let mut message = describe(err);
        // Errors raised inside a macro or a filter block can arrive wrapped; keep the cause.
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            match cause.downcast_ref::<minijinja::Error>() {
                Some(inner) => message.push_str(&describe(inner)),
                None => message.push_str(&cause.to_string()),
            }
            source = cause.source();
        }
        RenderError::Template {
            message,
            line: err.line(),
        }
    }
}

fn is_out_of_fuel(err: &minijinja::Error) -> bool {
    if err.kind() == minijinja::ErrorKind::OutOfFuel {
        return true;
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if cause
            .downcast_ref::<minijinja::Error>()
            .is_some_and(|e| e.kind() == minijinja::ErrorKind::OutOfFuel)
        {
            return true;
        }
        source = cause.source();
    }
    false
}
