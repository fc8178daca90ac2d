//! The CLI's errors and the exit codes they map to.

use miette::Diagnostic;
use thiserror::Error;

/// Exit code of a run that failed for a reason outside the user's input.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of invalid input: a spec with problems, an unknown environment, bad arguments.
pub const EXIT_INVALID: u8 = 2;

#[derive(Debug, Error, Diagnostic)]
pub enum Error {
    /// Specs with problems; the problems themselves were already printed.
    #[error("{summary}")]
    #[diagnostic(help("fix the problems above; nothing was sent to AWS"))]
    InvalidSpec { summary: String },

    #[error("there is no environment `{name}`")]
    UnknownEnvironment {
        name: String,
        #[help]
        help: String,
    },

    #[error("`{name}` cannot name an environment")]
    #[diagnostic(help(
        "environment names take 1 to 12 lower case letters, digits and `-`, starting with a letter"
    ))]
    BadEnvironmentName { name: String },

    #[error("no environment selected")]
    #[diagnostic(help("pass `--env NAME` or `--all`"))]
    NoEnvironment,

    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{message}")]
    Local { message: String },

    /// The API or the server could not be reached, or failed.
    #[error("{message}")]
    Client { message: String },

    /// The input was refused: a rejected batch, an unknown dataset.
    #[error("{message}")]
    Rejected { message: String },

    #[error("rendering {what} failed: {message}")]
    #[diagnostic(help("this is a bug in pipeline's templates; please report it"))]
    Render { what: String, message: String },
}

impl Error {
    /// A stable name of the error for `--output json`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::UnknownEnvironment { .. } => "unknown_environment",
            Error::BadEnvironmentName { .. } => "bad_environment_name",
            Error::NoEnvironment => "no_environment",
            Error::Read { .. } => "read",
            Error::Write { .. } => "write",
            Error::Render { .. } => "render",
            Error::Local { .. } => "local",
            Error::Client { .. } => "client",
            Error::Rejected { .. } => "rejected",
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidSpec { .. }
            | Error::UnknownEnvironment { .. }
            | Error::BadEnvironmentName { .. }
            | Error::NoEnvironment
            | Error::Rejected { .. } => EXIT_INVALID,
            Error::Read { .. }
            | Error::Write { .. }
            | Error::Render { .. }
            | Error::Local { .. }
            | Error::Client { .. } => EXIT_FAILURE,
        }
    }
}
