//! Helpers shared by the backends' option parsing.

/// The environment variable of a backend option: `EXECUTOR_<SCHEME>_<KEY>` with the
/// camelCase key in SCREAMING_SNAKE_CASE.
///
/// ```
/// use executor_base::options::env_var_name;
/// assert_eq!(env_var_name("docker", "pullPolicy"), "EXECUTOR_DOCKER_PULL_POLICY");
/// assert_eq!(env_var_name("k8s", "url"), "EXECUTOR_K8S_URL");
/// ```
pub fn env_var_name(scheme: &str, key: &str) -> String {
    let mut s = format!("EXECUTOR_{}_", scheme.to_ascii_uppercase());
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s
}
