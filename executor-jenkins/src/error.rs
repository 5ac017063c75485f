//! Jenkins failures and their mapping onto [`executor_base::Error`].
//!
//! One private enum says what went wrong on the wire; `From` turns it into the shared error
//! with the kind and retry flag of the shared mapping ([`executor_base::http`]) and
//! Jenkins' own wording. Jenkins' own case: a 404 inside the configured folder is a
//! configuration error naming the folder. Messages are built only from Jenkins' answers, paths
//! and the user name: the API token and the build token are never formatted.

use std::time::Duration;

use executor_base::http::{Transport, transport_error};
use executor_base::{Error, ErrorKind};

use crate::SCHEME;

/// What went wrong talking to Jenkins.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JenkinsError {
    /// No connection could be made: the request never reached Jenkins.
    #[error("cannot reach Jenkins at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request was sent (or partly sent) but no answer came in time.
    #[error("Jenkins did not answer {what} within the request timeout")]
    Timeout {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke after the request may have reached Jenkins.
    #[error("transport error during {what}")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// Jenkins answered with a non-success status.
    #[error("{what} failed: {detail}")]
    Status {
        status: u16,
        what: String,
        detail: String,
        user: String,
        retry_after: Option<Duration>,
    },
    /// Jenkins answered 404 inside the configured folder: it does not exist (or the user
    /// cannot see it). sdx never creates folders.
    #[error(
        "folder: Jenkins folder '{folder}' does not exist or user '{user}' cannot see it \
         ({what} answered 404); sdx does not create folders: create it in Jenkins first"
    )]
    MissingFolder {
        folder: String,
        what: String,
        user: String,
    },
    /// Jenkins answered 2xx with a body we cannot read.
    #[error("{what}: unreadable answer from Jenkins: {detail}")]
    Decode { what: String, detail: String },
    /// A status Jenkins does not answer this call with: a redirect, most likely from
    /// something in between (a proxy's http→https or login redirect), or another 2xx.
    #[error(
        "{what} answered {status}{}, expected {expected}{}",
        location.as_deref().map(|l| format!(" (Location: {l})")).unwrap_or_default(),
        if (300..400).contains(status) {
            ": Jenkins does not redirect this call; check url and pathPrefix (a proxy redirect?)"
        } else {
            ""
        }
    )]
    UnexpectedStatus {
        status: u16,
        what: String,
        expected: &'static str,
        location: Option<String>,
    },
    /// `buildWithParameters` answered 302 to the job: Jenkins did not schedule the build
    /// (core `ParameterizedJobMixIn`: `schedule2` gave no item, e.g. a queue decision
    /// handler refused it).
    #[error(
        "{what} answered 302: Jenkins did not schedule the build (refused by a queue decision handler or plugin)"
    )]
    NotScheduled { what: String },
    /// `buildWithParameters` answered 409: the job is not buildable (disabled).
    #[error("{what} answered 409: the Jenkins job is not buildable (disabled?): {detail}")]
    NotBuildable { what: String, detail: String },
    /// `buildWithParameters` answered 201 or 303 without a queue item `Location`; the
    /// build may have been queued.
    #[error("{what} answered {status} without a queue item Location")]
    NoQueueItem { status: u16, what: String },
}

impl JenkinsError {
    /// Classifies a reqwest failure of the request `what` to `url`.
    pub(crate) fn transport(what: &str, url: &url::Url, source: reqwest::Error) -> Self {
        if source.is_connect() {
            JenkinsError::Connect {
                url: url.as_str().to_string(),
                source,
            }
        } else if source.is_timeout() {
            JenkinsError::Timeout {
                what: what.to_string(),
                source,
            }
        } else {
            JenkinsError::Transport {
                what: what.to_string(),
                source,
            }
        }
    }
}

impl From<JenkinsError> for Error {
    fn from(e: JenkinsError) -> Self {
        let message = e.to_string();
        let err = match e {
            JenkinsError::Connect { source, .. } => {
                transport_error(Transport::Connect, message).with_source(source)
            }
            JenkinsError::Timeout { source, .. } => {
                transport_error(Transport::Timeout, message).with_source(source)
            }
            JenkinsError::Transport { source, .. } => {
                transport_error(Transport::Broken, message).with_source(source)
            }
            JenkinsError::Decode { .. } => Error::new(ErrorKind::Unexpected, message),
            JenkinsError::UnexpectedStatus { status, .. } => {
                Error::new(ErrorKind::Unexpected, message).with_status(status)
            }
            JenkinsError::NotScheduled { .. } => {
                Error::new(ErrorKind::Unexpected, message).with_status(302)
            }
            JenkinsError::NotBuildable { .. } => {
                Error::new(ErrorKind::Unexpected, message).with_status(409)
            }
            // Jenkins may have queued it: the caller asks Jenkins before anything else.
            JenkinsError::NoQueueItem { status, .. } => Error::new(ErrorKind::Unexpected, message)
                .with_status(status)
                .with_context("outcome", "unknown: the build may be queued")
                .temporary(),
            JenkinsError::MissingFolder { folder, .. } => {
                Error::new(ErrorKind::ConfigInvalid, message)
                    .with_context("folder", folder)
                    .with_status(404)
            }
            JenkinsError::Status {
                status,
                what,
                detail,
                user,
                retry_after,
            } => status_error(status, &what, &detail, &user, retry_after),
        };
        err.with_executor(SCHEME)
    }
}

/// The shared mapping's kind, in Jenkins' words.
fn status_error(
    status: u16,
    what: &str,
    detail: &str,
    user: &str,
    retry_after: Option<Duration>,
) -> Error {
    let message = match status {
        401 => format!(
            "Jenkins refused the credentials of user '{user}' during {what}: \
             check the configured username and API token"
        ),
        403 => format!("Jenkins user '{user}' is not allowed to do {what}: {detail}"),
        404 => format!("{what}: not found on Jenkins"),
        409 => format!("{what}: {detail}"),
        429 => format!("{what}: Jenkins asks to slow down"),
        500..=599 => format!("{what}: Jenkins failed: {detail}"),
        _ => format!("{what}: Jenkins refused: {detail}"),
    };
    let e = executor_base::http::status_error(status, message, retry_after);
    if status == 503 {
        let mut u = Error::new(ErrorKind::Unexpected, e.message())
            .with_status(503)
            .temporary();
        if let Some(d) = e.retry_after() {
            u = u.with_retry_after(d);
        }
        return u;
    }
    e
}

/// A short, tag-free excerpt of an error page (Jenkins answers errors with HTML).
pub(crate) fn excerpt(body: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut last_space = true;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            }
            _ if in_tag => {}
            c if c.is_whitespace() || c.is_control() => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            }
            c => {
                out.push(c);
                last_space = false;
            }
        }
        if out.len() >= 200 {
            out.push('…');
            break;
        }
    }
    let t = out.trim();
    if t.is_empty() {
        "(no details)".to_string()
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Error {
        JenkinsError::Status {
            status: code,
            what: "POST /job/SD-1/stop".into(),
            detail: "boom".into(),
            user: "screwdriver".into(),
            retry_after: Some(Duration::from_secs(2)),
        }
        .into()
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(status(401).kind(), ErrorKind::Unauthenticated);
        assert!(status(401).to_string().contains("'screwdriver'"));
        assert_eq!(status(403).kind(), ErrorKind::PermissionDenied);
        assert_eq!(status(404).kind(), ErrorKind::NotFound);
        assert_eq!(status(409).kind(), ErrorKind::AlreadyExists);
        assert_eq!(status(429).retry_after(), Some(Duration::from_secs(2)));
        assert!(status(503).is_temporary());
        assert_eq!(status(503).kind(), ErrorKind::Unexpected, "behind a proxy");
        assert_eq!(status(503).retry_after(), Some(Duration::from_secs(2)));
        assert!(!status(400).is_temporary());
        assert_eq!(status(500).status(), Some(500));
        assert_eq!(status(500).executor(), "jenkins");
    }

    #[test]
    fn answers_jenkins_does_not_give_are_errors_naming_the_status() {
        let e: Error = JenkinsError::UnexpectedStatus {
            status: 302,
            what: "POST /createItem".into(),
            expected: "200",
            location: Some("https://j/login".into()),
        }
        .into();
        assert_eq!(
            (e.kind(), e.status(), e.is_temporary()),
            (ErrorKind::Unexpected, Some(302), false)
        );
        assert!(
            e.message()
                .contains("answered 302 (Location: https://j/login), expected 200"),
            "{e}"
        );
        assert!(e.message().contains("pathPrefix"), "{e}");
        let e: Error = JenkinsError::NotBuildable {
            what: "POST /job/SD-1/buildWithParameters".into(),
            detail: "SD-1 is not buildable".into(),
        }
        .into();
        assert_ne!(e.kind(), ErrorKind::AlreadyExists);
        let e: Error = JenkinsError::NotScheduled {
            what: "POST x".into(),
        }
        .into();
        assert!(!e.is_temporary() && e.message().contains("302"));
    }

    #[test]
    fn a_missing_folder_is_a_config_error_naming_it() {
        let e: Error = JenkinsError::MissingFolder {
            folder: "ci/sd".into(),
            what: "POST /job/ci/job/sd/createItem".into(),
            user: "screwdriver".into(),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(!e.is_temporary());
        assert_eq!(e.status(), Some(404));
        assert!(
            e.message().starts_with("folder: Jenkins folder 'ci/sd'"),
            "{e}"
        );
        assert!(e.message().contains("does not create folders"), "{e}");
    }

    #[test]
    fn excerpt_strips_html() {
        assert_eq!(
            excerpt("<html><body><h1>Error</h1>\n<p>No valid crumb was included</p></body></html>"),
            "Error No valid crumb was included"
        );
        assert_eq!(excerpt("  "), "(no details)");
        assert!(excerpt(&"x".repeat(1000)).chars().count() < 210);
    }
}
