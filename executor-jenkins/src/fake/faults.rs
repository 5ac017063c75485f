//! Injected faults and the record of every request the fake saw.

use std::time::Duration;

/// What an injected fault does.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer with this status, body and headers without processing the request.
    Respond {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
        /// Extra headers.
        headers: Vec<(String, String)>,
    },
    /// Wait, then process and answer normally (a slow Jenkins).
    DelayBefore(Duration),
    /// Process the request, then wait before answering (the client may time out although
    /// the request took effect).
    DelayAfter(Duration),
    /// Process the request, then answer with this status (a proxy error after Jenkins
    /// acted).
    ProcessThenRespond(u16),
}

/// A fault for the next matching request(s).
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests of this method (`GET`, `POST`); any when `None`.
    pub method: Option<String>,
    /// Only requests whose path contains this.
    pub path_contains: String,
    /// How many more requests it applies to.
    pub remaining: usize,
    /// What happens.
    pub action: FaultAction,
}

impl Fault {
    /// A fault on the next request of `method` whose path contains `path_contains`.
    pub fn on(method: &str, path_contains: &str, action: FaultAction) -> Self {
        Self {
            method: (!method.is_empty()).then(|| method.to_ascii_uppercase()),
            path_contains: path_contains.to_string(),
            remaining: 1,
            action,
        }
    }

    /// An answer with `status` (body `injected <status>`) instead of processing.
    pub fn status(method: &str, path_contains: &str, status: u16) -> Self {
        Self::on(
            method,
            path_contains,
            FaultAction::Respond {
                status,
                body: format!("injected {status}"),
                headers: Vec::new(),
            },
        )
    }

    /// Applies to the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = n;
        self
    }
}

/// One request the fake saw (no bodies: they may hold tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`.
    pub method: String,
    /// The path, as sent (percent-encoded, with the prefix).
    pub path: String,
    /// The query string.
    pub query: String,
    /// Whether a `Jenkins-Crumb` header came with it.
    pub with_crumb: bool,
    /// The status the fake answered with.
    pub status: u16,
}
