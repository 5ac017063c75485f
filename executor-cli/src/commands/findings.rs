//! Pre-flight findings as a table: `sdx doctor` and `sdx run --dry-run` show them the
//! same way.

use executor_base::Preflight;

/// The findings as aligned lines, `indent` before each: level, check, message.
///
/// ```text
///   ok    docker.daemon         Docker 20.10.24 at unix:///var/run/docker.sock (API 1.41, ...)
///   FAIL  docker.launcherImage  launcher image localhost/sdx-launcher:0.1.0 has no ... label
/// ```
pub fn table(p: &Preflight, indent: &str) -> String {
    let width = p.findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for f in &p.findings {
        let level = match f.level {
            executor_base::Level::Ok => "ok",
            executor_base::Level::Warn => "warn",
            executor_base::Level::Fail => "FAIL",
        };
        out.push_str(&format!(
            "{indent}{level:<5} {:<width$}  {}\n",
            f.check, f.message
        ));
    }
    if p.findings.is_empty() {
        out.push_str(&format!("{indent}(nothing to check)\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::Finding;

    #[test]
    fn aligns_checks_and_marks_failures() {
        let mut p = Preflight::new("docker");
        p.push(Finding::ok("docker.daemon", "up"));
        p.push(Finding::fail("docker.buildImage", "missing"));
        let t = table(&p, "  ");
        assert_eq!(
            t,
            "  ok    docker.daemon      up\n  FAIL  docker.buildImage  missing\n"
        );
        assert_eq!(table(&Preflight::new("x"), ""), "(nothing to check)\n");
    }
}
