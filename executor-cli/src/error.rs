//! One error type for every command: a single line for stderr and an exit code.

use std::fmt;

use executor_base::ErrorKind;

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The one-line message (printed after `sdx: `).
    pub message: String,
    /// The process exit code (1 failure, 2 configuration or usage).
    pub code: u8,
}

/// Exit code of a failure (a build failed, an engine is unreachable, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a configuration or usage error.
pub const EXIT_USAGE: u8 = 2;

impl CliError {
    /// A failure (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    /// A configuration or usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always one line, whatever the source said.
        f.write_str(&self.message.replace('\n', " "))
    }
}

impl std::error::Error for CliError {}

impl From<executor_base::Error> for CliError {
    fn from(e: executor_base::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Invalid | ErrorKind::ConfigInvalid => EXIT_USAGE,
            _ => EXIT_FAILURE,
        };
        Self {
            message: e.to_string(),
            code,
        }
    }
}

/// `Result` with [`CliError`].
pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_exit_codes_and_messages_stay_on_one_line() {
        let e: CliError =
            executor_base::Error::new(ErrorKind::ConfigInvalid, "jobTools: missing").into();
        assert_eq!(e.code, EXIT_USAGE);
        let e: CliError = executor_base::Error::new(ErrorKind::Unavailable, "down\nreally").into();
        assert_eq!(e.code, EXIT_FAILURE);
        assert_eq!(e.to_string(), "unavailable: down really");
        assert_eq!(
            CliError::failure("x").context("status").to_string(),
            "status: x"
        );
    }
}
