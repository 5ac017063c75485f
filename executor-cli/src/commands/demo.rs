//! `sdx demo`: the reference API on loopback, a sample build of three steps, its progress
//! and a summary. Exit 0 only if the build succeeded.

use std::path::Path;

use serde_json::{Value, json};

use super::Ctx;
use super::build::on_embedded;
use crate::cli::DemoArgs;
use crate::embedded::{Embedded, EmbeddedOptions, Mode, api_config};
use crate::error::{CliError, CliResult};

/// The sample steps; with `fail`, the last one fails.
pub fn sample_steps(fail: bool) -> Value {
    let test = if fail {
        "echo 'running 3 tests'; echo 'test_divide FAILED: expected 2, got 3' >&2; exit 1"
    } else {
        "echo 'running 3 tests'; echo '3 passed, 0 failed'"
    };
    json!([
        {"name": "hello", "command": "echo \"Hello from build $SD_BUILD_ID (job $SD_JOB_ID) in $(pwd)\""},
        {"name": "compile", "command": "i=1; while [ $i -le 3 ]; do echo \"compiling module $i of 3\"; sleep 0.2; i=$((i+1)); done"},
        {"name": "test", "command": test}
    ])
}

fn steps_from_file(path: &Path) -> CliResult<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("--steps {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("--steps {}: not JSON: {e}", path.display())))?;
    match v {
        Value::Array(_) => Ok(v),
        Value::Object(ref m) if m.contains_key("steps") => Ok(v["steps"].clone()),
        _ => Err(CliError::usage(format!(
            "--steps {}: expected an array of {{\"name\", \"command\"}} or an object with \"steps\"",
            path.display()
        ))),
    }
}

/// The demo's build body.
pub fn body(args: &DemoArgs) -> CliResult<Value> {
    let steps = match &args.steps {
        Some(p) => steps_from_file(p)?,
        None => sample_steps(args.fail),
    };
    let mut body = json!({"jobName": "demo", "steps": steps});
    if let Some(c) = &args.container {
        body["container"] = Value::String(c.clone());
    }
    Ok(body)
}

/// Runs the demo.
pub async fn run(ctx: &Ctx, args: DemoArgs) -> CliResult<u8> {
    let body = body(&args)?;
    let opts = EmbeddedOptions {
        listen: ([127, 0, 0, 1], 0).into(),
        mode: Mode::Demo,
        api: api_config(&ctx.file)?,
    };
    let emb = Embedded::start(&ctx.file, &ctx.executors, opts).await?;
    let launch = if ctx.executors.first().map(String::as_str) == Some(crate::backends::PROCESS) {
        ", launch = this sdx binary"
    } else {
        ""
    };
    say!(
        "sdx demo: reference API at {}, executor {}{launch}",
        emb.server.url(),
        emb.label()
    );
    let result = on_embedded(&emb, &body, false).await;
    emb.shutdown(false).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_three_valid_steps() {
        for fail in [false, true] {
            let b = body(&DemoArgs {
                fail,
                steps: None,
                container: Some("busybox:latest".into()),
            })
            .unwrap();
            let parsed = executor_api::NewBuild::parse(&b).unwrap();
            assert_eq!(parsed.steps.len(), 3);
            assert_eq!(parsed.steps[2].1.contains("exit 1"), fail);
        }
    }

    #[test]
    fn steps_file_forms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::fs::write(&p, r#"[{"name": "a", "command": "true"}]"#).unwrap();
        assert_eq!(steps_from_file(&p).unwrap()[0]["name"], "a");
        std::fs::write(&p, r#"{"steps": [{"name": "b", "command": "true"}]}"#).unwrap();
        assert_eq!(steps_from_file(&p).unwrap()[0]["name"], "b");
        std::fs::write(&p, "42").unwrap();
        assert_eq!(steps_from_file(&p).unwrap_err().code, 2);
    }
}
