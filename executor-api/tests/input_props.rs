//! Property tests of the API's input parsing: arbitrary submissions never panic and never
//! get a 5xx, unknown fields are always refused by name, ids are accepted exactly in
//! 1..=2^53, reserved variables are always refused, and every error body is JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use executor_api::fields::{MAX_ID, PathId, parse_id};
use executor_api::model::{NewBuild, SUBMIT_FIELDS};
use executor_api::{ApiConfig, ApiState, router};
use executor_base::secrecy::SecretString;
use executor_base::testkit::fake::FakeExecutor;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(SUBMIT_FIELDS.to_vec()).prop_map(String::from),
                    "[a-zA-Z_.]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid step list.
fn steps() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z][a-z0-9_-]{0,15}", "[!-~][ -~]{0,29}", 1..5).prop_map(|m| {
        Value::Array(
            m.into_iter()
                .filter(|(_, c)| !c.trim().is_empty())
                .map(|(n, c)| json!({"name": n, "command": c}))
                .collect(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_never_panics_and_errors_name_a_field(body in any_json()) {
        if let Err(errors) = NewBuild::parse(&body) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(!e.field.is_empty());
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn unknown_fields_are_always_refused_by_name(
        key in "[a-zA-Z]{1,12}",
        value in any_json(),
        steps in steps(),
    ) {
        prop_assume!(!SUBMIT_FIELDS.contains(&key.as_str()));
        let body = json!({"steps": steps, key.clone(): value});
        let errors = NewBuild::parse(&body).unwrap_err();
        prop_assert!(errors.iter().any(|e| e.field == key && e.reason.starts_with("unknown field")));
    }

    #[test]
    fn ids_are_accepted_exactly_from_1_to_2_pow_53(id in prop_oneof![any::<u64>(), 0u64..=MAX_ID + 2], steps in steps()) {
        let ok = (1..=MAX_ID).contains(&id);
        prop_assert_eq!(parse_id("id", &json!(id)).is_ok(), ok);
        prop_assert_eq!(parse_id("id", &json!(id.to_string())).is_ok(), ok);
        let parsed = NewBuild::parse(&json!({"id": id, "jobId": id, "steps": steps}));
        match parsed {
            Ok(b) => {
                prop_assert!(ok);
                prop_assert_eq!(b.id.map(|i| i.get()), Some(id));
            }
            Err(errors) => {
                prop_assert!(!ok);
                prop_assert!(errors.iter().any(|e| e.field == "id"));
                prop_assert!(errors.iter().any(|e| e.field == "jobId"));
            }
        }
        let path = PathId::parse(&id.to_string());
        prop_assert_eq!(path == PathId::Valid(id), ok);
    }

    #[test]
    fn path_ids_never_panic(s in ".{0,30}") {
        let _ = PathId::parse(&s);
    }

    #[test]
    fn reserved_variables_are_always_refused(suffix in "[A-Z0-9_]{0,10}", steps in steps()) {
        let name = format!("SD_{suffix}");
        let errors = NewBuild::parse(&json!({"steps": steps, "environment": {name.clone(): "x"}})).unwrap_err();
        let field = format!("environment.{name}");
        prop_assert!(errors.iter().any(|e| e.field == field));
    }

    #[test]
    fn valid_builds_keep_their_steps(steps in steps(), env in prop::collection::btree_map("[A-RT-Z][A-Z0-9_]{0,8}", "[ -~]{0,10}", 0..4)) {
        let body = json!({"steps": steps.clone(), "environment": env.clone()});
        let b = NewBuild::parse(&body).unwrap();
        let names: Vec<&str> = steps.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        prop_assert_eq!(b.steps.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), names);
        prop_assert_eq!(b.environment.len(), env.len());
    }
}

/// Any body through the real router: never a 5xx, every error is JSON with the status.
#[test]
fn any_submission_body_gets_a_4xx_or_201_in_json() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        let state = ApiState::new(
            Arc::new(FakeExecutor::new()),
            ApiConfig {
                user_token: Some(SecretString::from("admin")),
                ..ApiConfig::default()
            },
        )
        .await
        .unwrap();
        router(state)
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(128));
    let bodies = prop_oneof![
        any_json().prop_map(|v| v.to_string()),
        ".{0,40}",
        steps().prop_map(|s| json!({"steps": s}).to_string()),
    ];
    runner
        .run(&bodies, |body| {
            let (status, v) = rt.block_on(async {
                let req = Request::builder()
                    .method("POST")
                    .uri("/v4/builds")
                    .header(header::AUTHORIZATION, "Bearer admin")
                    .body(Body::from(body.clone()))
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, serde_json::from_slice::<Value>(&bytes))
            });
            prop_assert!(!status.is_server_error(), "{status} for {body}");
            let v = v.map_err(|e| TestCaseError::fail(format!("not JSON ({e}) for {body}")))?;
            if status == StatusCode::CREATED {
                prop_assert!(v["id"].as_u64().is_some());
            } else {
                prop_assert!(status.is_client_error());
                prop_assert_eq!(v["statusCode"].as_u64(), Some(u64::from(status.as_u16())));
            }
            Ok(())
        })
        .unwrap();
}
