//! Positive integer ids of builds, jobs, events and pipelines.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "serde_json::Value", into = "u64")]
        pub struct $name(NonZeroU64);

        impl $name {
            /// Wraps a positive integer; `None` for zero.
            pub fn new(id: u64) -> Option<Self> {
                NonZeroU64::new(id).map(Self)
            }

            /// The id as a number.
            pub fn get(self) -> u64 {
                self.0.get()
            }

            /// Parses the id from a JSON value (a positive integer, or a string of one),
            /// naming `field` in the error.
            pub fn parse_json(field: &str, value: &serde_json::Value) -> Result<Self, FieldError> {
                parse_positive(field, value).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                s.trim()
                    .parse::<u64>()
                    .ok()
                    .and_then(Self::new)
                    .ok_or_else(|| Error::invalid_field(stringify!($name), "must be a positive integer"))
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.get()
            }
        }

        impl TryFrom<serde_json::Value> for $name {
            type Error = String;
            fn try_from(v: serde_json::Value) -> Result<Self, String> {
                parse_positive("id", &v).map(Self).map_err(|e| e.reason)
            }
        }
    };
}

fn parse_positive(field: &str, value: &serde_json::Value) -> Result<NonZeroU64, FieldError> {
    let reason = "must be a positive integer";
    let n = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(NonZeroU64::new)
        .ok_or_else(|| FieldError::new(field, reason))
}

id_type!(
    /// A build's id: a positive integer (`buildId`).
    ///
    /// ```
    /// use executor_base::BuildId;
    /// let id: BuildId = "42".parse().unwrap();
    /// assert_eq!(id.get(), 42);
    /// assert!("0".parse::<BuildId>().is_err());
    /// ```
    BuildId
);
id_type!(
    /// A job's id: a positive integer (`jobId`).
    JobId
);
id_type!(
    /// An event's id: a positive integer (`eventId`).
    EventId
);
id_type!(
    /// A pipeline's id: a positive integer (`pipelineId`).
    PipelineId
);
