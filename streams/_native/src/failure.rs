//! Encoding failures: the message plus the field path, built only when something is wrong.
//!
//! Paths are collected innermost first as the error travels out and rendered once when raised.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

pub enum Seg {
    Field(String),
    Index(usize),
    Key(String),
}

/// An encoding or decoding failure on its way out; `path` is innermost first.
pub struct Failure {
    type_error: bool,
    message: String,
    path: Vec<Seg>,
    cause: Option<PyErr>,
    /// Raise `cause` itself (MemoryError, KeyboardInterrupt): not a fault of the value or the data.
    passthrough: bool,
}

pub type Res<T> = Result<T, Box<Failure>>;

impl Failure {
    pub(crate) fn value(message: impl Into<String>) -> Box<Failure> {
        Box::new(Failure {
            type_error: false,
            message: message.into(),
            path: Vec::new(),
            cause: None,
            passthrough: false,
        })
    }

    pub(crate) fn type_(message: impl Into<String>) -> Box<Failure> {
        Box::new(Failure {
            type_error: true,
            message: message.into(),
            path: Vec::new(),
            cause: None,
            passthrough: false,
        })
    }

    pub(crate) fn python(err: PyErr, py: Python<'_>) -> Box<Failure> {
        let type_error = err.is_instance_of::<PyTypeError>(py);
        let name = err
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".into());
        let message = format!("{name}: {}", err.value(py));
        Box::new(Failure {
            type_error,
            message,
            path: Vec::new(),
            cause: Some(err),
            passthrough: false,
        })
    }

    /// A Python exception raised as it is when the failure reaches Python (its path is dropped).
    pub(crate) fn passthrough(err: PyErr) -> Box<Failure> {
        Box::new(Failure {
            type_error: false,
            message: String::new(),
            path: Vec::new(),
            cause: Some(err),
            passthrough: true,
        })
    }

    pub(crate) fn at(mut self: Box<Self>, seg: Seg) -> Box<Self> {
        self.path.push(seg);
        self
    }

    pub(crate) fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Field(name) if out.is_empty() => out.push_str(name),
                Seg::Field(name) => {
                    out.push('.');
                    out.push_str(name);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
                Seg::Key(k) => out.push_str(&format!("{{{k}}}")),
            }
        }
        out
    }

    /// "field 'lines[2].quantity': expected a Decimal, got str '1.5'".
    pub(crate) fn render(&self) -> String {
        let path = self.path();
        if path.is_empty() {
            self.message.clone()
        } else {
            format!("field '{path}': {}", self.message)
        }
    }

    pub(crate) fn into_pyerr(self, py: Python<'_>) -> PyErr {
        if self.passthrough
            && let Some(cause) = self.cause
        {
            return cause;
        }
        let message = self.render();
        let err = if self.type_error {
            PyTypeError::new_err(message)
        } else {
            PyValueError::new_err(message)
        };
        if let Some(cause) = self.cause {
            err.set_cause(py, Some(cause));
        }
        err
    }

    pub(crate) fn with_cause(mut self: Box<Self>, cause: PyErr) -> Box<Self> {
        self.cause = Some(cause);
        self
    }
}

/// "str '1.5'": the type and a bounded repr of a value, for messages.
pub(crate) fn describe(v: &Bound<'_, PyAny>) -> String {
    let type_name = v
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into());
    format!("{type_name} {}", short_repr(v))
}

pub(crate) fn short_repr(v: &Bound<'_, PyAny>) -> String {
    let text = v
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".into());
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// ['a', 'b']: names listed the way Python prints them.
pub(crate) fn py_list<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{}'", n.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

pub(crate) fn show(v: &Bound<'_, PyAny>) -> String {
    v.str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| short_repr(v))
}
