//! The workspace's one TLS crypto provider: **ring**, for every rustls user (reqwest in
//! Jenkins and token exchange, kube's hyper-rustls) and for JWTs (jsonwebtoken over
//! `jwt::RING_PROVIDER`).
//!
//! Why ring rather than aws-lc-rs (rustls' default):
//!
//! - **Build time.** A cold build of each alone on this project's 2-core machine, two
//!   runs each, back to back: aws-lc-rs (its `aws-lc-sys` C build) 47.1 s of CPU and
//!   52.9 s wall, ring 7.6 s CPU and 10.1 s wall (6.2x less CPU). aws-lc-sys was the
//!   largest unit of `sdx`'s cold build.
//! - **Maintenance.** Both are maintained (ring by the rustls project, aws-lc-rs by AWS)
//!   and both are supported providers of rustls 0.23, kube 5 (`ring` feature) and
//!   hyper-rustls. jsonwebtoken 10+ ships no ring provider but takes one through its
//!   `CryptoProvider` API, which [`crate::jwt`] implements in ~250 lines over ring.
//! - What aws-lc-rs offers beyond ring (FIPS mode, post-quantum key exchange) is not
//!   needed by a CI executor talking to its own engines and API.
//!
//! reqwest is built with `rustls-no-provider`, so it uses the process-wide default: call
//! [`install_default_provider`] before building a client (Jenkins, token exchange and
//! the Kubernetes client do). An application that installed another provider first
//! keeps it.

use std::sync::Once;

/// Installs ring as rustls' process-wide crypto provider, once; a provider installed
/// earlier by the application wins.
///
/// ```
/// executor_base::tls::install_default_provider();
/// assert!(rustls::crypto::CryptoProvider::get_default().is_some());
/// ```
pub fn install_default_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
