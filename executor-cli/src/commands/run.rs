//! `sdx run`: a build from flags or a JSON file, followed to its end.
//!
//! Without `--api` the build runs on an embedded API with `sdx run`'s own store
//! (`run.db` in the state directory), ids ([`crate::embedded::run_id`]) and name prefix
//! on Docker and Kubernetes (`sdx-run-`), so it never collides with a server's builds or
//! another run's. Ctrl-C aborts the build; if `sdx run` itself is killed, the build goes
//! on without it until `sdx gc` stops it and records its outcome.

use serde_json::{Map, Value, json};

use super::Ctx;
use super::build::{on_embedded, on_remote};
use crate::cli::RunArgs;
use crate::client::ApiClient;
use crate::embedded::{Embedded, EmbeddedOptions, Mode, api_config};
use crate::error::{CliError, CliResult, EXIT_FAILURE};

fn pair<'a>(flag: &str, s: &'a str) -> CliResult<(&'a str, &'a str)> {
    s.split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim(), v))
        .ok_or_else(|| CliError::usage(format!("{flag}: expected KEY=VALUE, got {s:?}")))
}

/// The build body from `--file` and the flags (flags add to and override the file).
pub fn body(args: &RunArgs) -> CliResult<Value> {
    let mut body = match &args.file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CliError::usage(format!("--file {}: {e}", p.display())))?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| CliError::usage(format!("--file {}: not JSON: {e}", p.display())))?
        }
        None => json!({}),
    };
    let Some(obj) = body.as_object_mut() else {
        return Err(CliError::usage("--file: the build must be a JSON object"));
    };
    if !args.steps.is_empty() {
        let steps = obj
            .entry("steps")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Some(list) = steps.as_array_mut() else {
            return Err(CliError::usage("--file: \"steps\" must be an array"));
        };
        for s in &args.steps {
            let (name, command) = pair("--step", s)?;
            list.push(json!({"name": name, "command": command}));
        }
    }
    if let Some(c) = &args.container {
        obj.insert("container".into(), Value::String(c.clone()));
    }
    for (flag, key, items) in [
        ("--annotation", "annotations", &args.annotations),
        ("--env", "environment", &args.env),
    ] {
        if items.is_empty() {
            continue;
        }
        let m = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
        let Some(m) = m.as_object_mut() else {
            return Err(CliError::usage(format!(
                "--file: \"{key}\" must be an object"
            )));
        };
        for item in items {
            let (k, v) = pair(flag, item)?;
            m.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    if let Some(t) = args.timeout {
        let m = obj
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = m.as_object_mut() {
            m.insert("screwdriver.cd/timeout".into(), Value::from(t));
        }
    }
    if !obj.contains_key("steps") {
        return Err(CliError::usage(
            "no steps: give --step NAME=COMMAND or --file with \"steps\"",
        ));
    }
    Ok(body)
}

/// Shows a pre-flight (`--dry-run`); exit 0 when it passed.
fn show_preflight(p: &executor_base::Preflight, json: bool) -> u8 {
    if json {
        say!("{}", serde_json::to_string_pretty(p).unwrap_or_default());
    } else {
        say!(
            "pre-flight of the build on {}: {} (dry run: nothing was started)",
            p.backend,
            if p.passed() { "passed" } else { "FAILED" }
        );
        say_raw!("{}", super::findings::table(p, "  "));
    }
    if p.passed() { 0 } else { EXIT_FAILURE }
}

/// `sdx run --dry-run`: the API's pre-flight of the build (`POST /v4/builds?dryRun=true`
/// on a remote API, the same call on the embedded one), nothing started.
async fn dry_run(ctx: &Ctx, args: &RunArgs, body: &Value) -> CliResult<u8> {
    let p = if let Some(api) = &args.remote.api {
        let client = ApiClient::new(api, args.remote.api_token.clone())?;
        client.dry_run(body).await?
    } else {
        let opts = EmbeddedOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            mode: Mode::Run,
            api: api_config(&ctx.file)?,
        };
        let emb = Embedded::start(&ctx.file, &ctx.executors, opts).await?;
        let new = executor_api::NewBuild::parse(body).map_err(|fields| {
            CliError::usage(
                fields
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        });
        let p = match new {
            Ok(new) => emb.server.state().dry_run(new).await.map_err(|e| {
                CliError::failure(format!("pre-flight ({}): {}", e.status.as_u16(), e.message))
            }),
            Err(e) => Err(e),
        };
        emb.shutdown(false).await;
        p?
    };
    Ok(show_preflight(&p, args.json))
}

/// Runs the build.
pub async fn run(ctx: &Ctx, args: RunArgs) -> CliResult<u8> {
    let body = body(&args)?;
    if args.dry_run {
        return dry_run(ctx, &args, &body).await;
    }
    if let Some(api) = &args.remote.api {
        let client = ApiClient::new(api, args.remote.api_token.clone())?;
        return on_remote(&client, &body, api).await;
    }
    let opts = EmbeddedOptions {
        listen: ([127, 0, 0, 1], 0).into(),
        mode: Mode::Run,
        api: api_config(&ctx.file)?,
    };
    let emb = Embedded::start(&ctx.file, &ctx.executors, opts).await?;
    let result = on_embedded(&emb, &body, true).await;
    emb.shutdown(false).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RemoteApi;

    fn args() -> RunArgs {
        RunArgs {
            file: None,
            steps: vec!["build=make all".into(), "test=make test=1".into()],
            container: Some("node:22".into()),
            annotations: vec!["screwdriver.cd/cpu=HIGH".into()],
            env: vec!["GREETING=hi".into()],
            timeout: Some(5),
            dry_run: false,
            json: false,
            remote: RemoteApi {
                api: None,
                api_token: None,
            },
        }
    }

    #[test]
    fn flags_make_a_body() {
        let b = body(&args()).unwrap();
        assert_eq!(
            b["steps"][1],
            json!({"name": "test", "command": "make test=1"})
        );
        assert_eq!(b["container"], "node:22");
        assert_eq!(b["annotations"]["screwdriver.cd/cpu"], "HIGH");
        assert_eq!(b["annotations"]["screwdriver.cd/timeout"], 5);
        assert_eq!(b["environment"]["GREETING"], "hi");
        executor_api::NewBuild::parse(&b).unwrap();
    }

    #[test]
    fn file_and_flags_combine_and_errors_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.json");
        std::fs::write(
            &p,
            r#"{"steps": [{"name": "first", "command": "true"}], "jobId": 3}"#,
        )
        .unwrap();
        let mut a = args();
        a.file = Some(p.clone());
        let b = body(&a).unwrap();
        assert_eq!(b["steps"].as_array().unwrap().len(), 3);
        assert_eq!(b["jobId"], 3);
        let mut a = args();
        a.steps = vec!["nope".into()];
        assert!(
            body(&a)
                .unwrap_err()
                .message
                .starts_with("--step: expected KEY=VALUE")
        );
        let mut a = args();
        a.steps.clear();
        assert!(body(&a).unwrap_err().message.starts_with("no steps"));
        std::fs::write(&p, "[]").unwrap();
        let mut a = args();
        a.file = Some(p);
        assert_eq!(body(&a).unwrap_err().code, 2);
    }
}
