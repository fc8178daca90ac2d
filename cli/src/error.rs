//! The CLI's errors and the exit codes they map to.

use miette::Diagnostic;
use thiserror::Error;

/// Exit code of a run that failed for a reason outside the user's input.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of invalid input: a spec with problems, an unknown environment, bad arguments.
pub const EXIT_INVALID: u8 = 2;
/// Exit code of a rollout that an alarm sent back to the previous versions.
pub const EXIT_ROLLED_BACK: u8 = 3;

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

    /// An AWS call failed.
    #[error("{message}")]
    Aws { message: String },

    #[error(
        "the AWS credentials are for account {actual}, but the environment belongs to account {expected}"
    )]
    #[diagnostic(help(
        "use the profile of account {expected} (`--profile`, AWS_PROFILE), or fix `account` in the spec; nothing was changed"
    ))]
    WrongAccount { expected: String, actual: String },

    #[error("environment `{env}` is not bootstrapped: there is no stack {stack}")]
    #[diagnostic(help("run `pipeline bootstrap --env {env}` once, then deploy again"))]
    NotBootstrapped { env: String, stack: String },

    #[error(
        "API Gateway does not accept {role} as the account's CloudWatch logging role yet, after {attempts} tries: {reason}"
    )]
    #[diagnostic(help(
        "a new role takes a while to reach every AWS service; run `pipeline bootstrap --env {env}` again in a minute"
    ))]
    LoggingRole {
        env: String,
        role: String,
        attempts: u32,
        reason: String,
    },

    /// Building or packaging the functions failed.
    #[error("{message}")]
    Build {
        message: String,
        #[help]
        help: Option<String>,
    },

    /// A stack failed to deploy, roll back or delete.
    #[error("{message}")]
    Deploy {
        message: String,
        #[help]
        help: Option<String>,
    },

    /// Refused before anything was changed: a busy stack, a stateful
    /// replacement, no confirmation.
    #[error("{message}")]
    Refused {
        message: String,
        #[help]
        help: Option<String>,
    },

    /// A gate alarm fired during a rollout; traffic is back on the previous versions.
    #[error("{message}")]
    #[diagnostic(help("all traffic is on the previous versions; fix the cause and deploy again"))]
    RolledBack { message: String },

    /// Building, pulling or pushing a container image failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] crate::image::ImageError),

    #[error("rendering {what} failed: {message}")]
    #[diagnostic(help("this is a bug in pipeline's templates; please report it"))]
    Render { what: String, message: String },
}

impl From<crate::synth::Error> for Error {
    fn from(e: crate::synth::Error) -> Error {
        match e {
            crate::synth::Error::Render { what, message } => Error::Render { what, message },
        }
    }
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
            Error::Aws { .. } => "aws",
            Error::WrongAccount { .. } => "wrong_account",
            Error::NotBootstrapped { .. } => "not_bootstrapped",
            Error::LoggingRole { .. } => "logging_role",
            Error::Build { .. } => "build",
            Error::Deploy { .. } => "deploy_failed",
            Error::Refused { .. } => "refused",
            Error::RolledBack { .. } => "rolled_back",
            Error::Image(_) => "image",
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::RolledBack { .. } => EXIT_ROLLED_BACK,
            Error::Image(crate::image::ImageError::BadReference { .. }) => EXIT_INVALID,
            Error::Image(_) => EXIT_FAILURE,
            Error::InvalidSpec { .. }
            | Error::UnknownEnvironment { .. }
            | Error::BadEnvironmentName { .. }
            | Error::NoEnvironment
            | Error::Rejected { .. }
            | Error::WrongAccount { .. }
            | Error::NotBootstrapped { .. }
            | Error::Refused { .. } => EXIT_INVALID,
            Error::Read { .. }
            | Error::Write { .. }
            | Error::Render { .. }
            | Error::Local { .. }
            | Error::Client { .. }
            | Error::Aws { .. }
            | Error::LoggingRole { .. }
            | Error::Build { .. }
            | Error::Deploy { .. } => EXIT_FAILURE,
        }
    }
}
