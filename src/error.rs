//! The error type. Every error renders as one line that names the thing (device, subvolume, step)
//! and, where we know it, the fix.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line or configuration: exit status 2, nothing was touched.
    #[error("{0}")]
    Usage(String),
    /// A guard refused to act (live root, wrong filesystem, overlap…): nothing was touched.
    #[error("{0}")]
    Refused(String),
    /// A system call failed while doing `what`.
    #[error("{what}: {source}{}", hint_suffix(.hint))]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
        hint: Option<String>,
    },
    /// Anything else, already phrased for people.
    #[error("{0}")]
    Other(String),
}

fn hint_suffix(h: &Option<String>) -> String {
    match h {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
    pub fn sys(what: impl Into<String>, source: impl Into<std::io::Error>) -> Error {
        Error::Sys {
            what: what.into(),
            source: source.into(),
            hint: None,
        }
    }
    /// The same error with `p` (the step, the object) in front of what it says.
    pub fn prefixed(self, p: &str) -> Error {
        match self {
            Error::Sys { what, source, hint } => Error::Sys {
                what: format!("{p}: {what}"),
                source,
                hint,
            },
            Error::Refused(m) => Error::Refused(format!("{p}: {m}")),
            Error::Usage(m) => Error::Usage(format!("{p}: {m}")),
            Error::Other(m) => Error::Other(format!("{p}: {m}")),
        }
    }
    /// The raw errno of a failed system call, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach "what we were doing" to low-level errors.
pub trait Context<T> {
    fn ctx<F: FnOnce() -> S, S: fmt::Display>(self, what: F) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx<F: FnOnce() -> S, S: fmt::Display>(self, what: F) -> Result<T> {
        self.map_err(|e| Error::sys(what().to_string(), std::io::Error::from(e)))
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<F: FnOnce() -> S, S: fmt::Display>(self, what: F) -> Result<T> {
        self.map_err(|e| Error::sys(what().to_string(), e))
    }
}
