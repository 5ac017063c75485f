//! Parse, don't validate: every missing or malformed field is refused by name, and every
//! valid config survives a JSON round trip.

use executor_base::{ErrorKind, StartConfig, StopConfig, TimerConfig};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn start_json() -> Value {
    json!({
        "buildId": 42, "apiUri": "http://127.0.0.1:8080", "container": "node:22",
        "token": "temporary-jwt", "jobId": 7, "eventId": 8, "pipelineId": 9,
        "jobName": "main", "isPR": false, "buildClusterName": "sd1",
        "storeUri": "http://127.0.0.1:8081", "uiUri": "https://ui.example",
        "annotations": {"screwdriver.cd/timeout": 30, "screwdriver.cd/cpu": "HIGH"}
    })
}

fn stop_json() -> Value {
    json!({"buildId": 42, "apiUri": "http://127.0.0.1:8080", "jobId": 7, "pipelineId": 9,
           "jobName": "main", "token": "tok", "annotations": {"screwdriver.cd/executor": "docker"}})
}

fn timer_json() -> Value {
    json!({"buildId": 42, "jobId": 7, "buildStatus": "RUNNING",
           "startTime": "2026-11-26T03:00:00Z", "pipelineId": 9,
           "annotations": {"beta.screwdriver.cd/timeout": "45"}})
}

fn without(mut v: Value, field: &str) -> Value {
    v.as_object_mut().unwrap().remove(field);
    v
}

fn with(mut v: Value, field: &str, value: Value) -> Value {
    v.as_object_mut().unwrap().insert(field.to_string(), value);
    v
}

/// Asserts `r` is an `Invalid` error whose only rejected field is `field`, and that the
/// message names it.
fn assert_refused<T: std::fmt::Debug>(r: Result<T, executor_base::Error>, field: &str, case: &str) {
    let e = match r {
        Ok(v) => panic!("{case}: accepted: {v:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Invalid, "{case}: {e}");
    let fields: Vec<&str> = e.field_errors().iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, [field], "{case}: {e}");
    assert!(e.to_string().contains(&format!("{field}: ")), "{case}: {e}");
    assert!(!e.field_errors()[0].reason.is_empty());
}

#[test]
fn valid_examples_parse() {
    StartConfig::from_json(&start_json()).unwrap();
    StopConfig::from_json(&stop_json()).unwrap();
    TimerConfig::from_json(&timer_json()).unwrap();
}

#[test]
fn start_required_fields_missing() {
    for field in ["buildId", "apiUri", "container", "token"] {
        assert_refused(
            StartConfig::from_json(&without(start_json(), field)),
            field,
            field,
        );
        // null is the same as missing
        assert_refused(
            StartConfig::from_json(&with(start_json(), field, Value::Null)),
            field,
            field,
        );
        let e = StartConfig::from_json(&without(start_json(), field)).unwrap_err();
        assert_eq!(e.field_errors()[0].reason, "is required");
    }
}

#[test]
fn start_fields_malformed() {
    let cases: Vec<(&str, Value)> = vec![
        ("buildId", json!(0)),
        ("buildId", json!(-1)),
        ("buildId", json!(1.5)),
        ("buildId", json!("abc")),
        ("buildId", json!(true)),
        ("buildId", json!({})),
        ("apiUri", json!("ftp://127.0.0.1")),
        ("apiUri", json!("not a url")),
        ("apiUri", json!("http://user:pw@127.0.0.1")),
        ("apiUri", json!(42)),
        ("apiUri", json!("")),
        ("container", json!("")),
        ("container", json!("Node:4")),
        ("container", json!("node:4 extra")),
        ("container", json!("node@sha256:xyz")),
        ("container", json!(4)),
        ("token", json!("")),
        ("token", json!("   ")),
        ("token", json!("two words")),
        ("token", json!(12)),
        ("jobId", json!(0)),
        ("jobId", json!("seven")),
        ("eventId", json!(-3)),
        ("pipelineId", json!([])),
        ("jobName", json!("bad name!")),
        ("jobName", json!("x".repeat(111))),
        ("jobName", json!(5)),
        ("isPR", json!("yes")),
        ("buildClusterName", json!("bad/cluster")),
        ("buildClusterName", json!("")),
        ("storeUri", json!("file:///tmp")),
        ("uiUri", json!(1)),
    ];
    for (field, value) in cases {
        let case = format!("{field} = {value}");
        assert_refused(
            StartConfig::from_json(&with(start_json(), field, value)),
            field,
            &case,
        );
    }
}

#[test]
fn start_annotations_malformed() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"screwdriver.cd/timeout": -5}),
            "annotations[screwdriver.cd/timeout]",
        ),
        (
            json!({"screwdriver.cd/timeout": "soon"}),
            "annotations[screwdriver.cd/timeout]",
        ),
        (
            json!({"screwdriver.cd/cpu": "HUGE"}),
            "annotations[screwdriver.cd/cpu]",
        ),
        (
            json!({"beta.screwdriver.cd/ram": 0}),
            "annotations[beta.screwdriver.cd/ram]",
        ),
        (
            json!({"screwdriver.cd/executor": "no spaces allowed"}),
            "annotations[screwdriver.cd/executor]",
        ),
        (
            json!({"team/owner": {"nested": true}}),
            "annotations[team/owner]",
        ),
        (json!(["not", "an", "object"]), "annotations"),
    ];
    for (annotations, field) in cases {
        let case = format!("annotations = {annotations}");
        assert_refused(
            StartConfig::from_json(&with(start_json(), "annotations", annotations)),
            field,
            &case,
        );
    }
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let e = StartConfig::from_json(&json!({"buildId": 0, "apiUri": "ftp://x", "token": ""}))
        .unwrap_err();
    let fields: Vec<&str> = e.field_errors().iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["buildId", "apiUri", "container", "token"]);
}

#[test]
fn non_objects_are_refused() {
    for v in [json!(null), json!(42), json!("buildId"), json!([1, 2])] {
        assert_refused(StartConfig::from_json(&v), "(config)", "start");
        assert_refused(StopConfig::from_json(&v), "(config)", "stop");
        assert_refused(TimerConfig::from_json(&v), "(config)", "timer");
    }
    assert_refused(
        StartConfig::from_json_str("{not json"),
        "(config)",
        "string",
    );
}

#[test]
fn stop_required_and_malformed_fields() {
    assert_refused(
        StopConfig::from_json(&without(stop_json(), "buildId")),
        "buildId",
        "missing",
    );
    // Only buildId is required.
    StopConfig::from_json(&json!({"buildId": "42"})).unwrap();
    let cases: Vec<(&str, Value)> = vec![
        ("buildId", json!(0)),
        ("buildId", json!("x")),
        ("apiUri", json!("gopher://x")),
        ("jobId", json!(0)),
        ("pipelineId", json!(-1)),
        ("jobName", json!("a b")),
        ("token", json!("")),
        ("token", json!(false)),
        ("annotations", json!(3)),
    ];
    for (field, value) in cases {
        let case = format!("{field} = {value}");
        assert_refused(
            StopConfig::from_json(&with(stop_json(), field, value)),
            field,
            &case,
        );
    }
}

#[test]
fn timer_required_and_malformed_fields() {
    for field in ["buildId", "jobId", "buildStatus", "startTime"] {
        assert_refused(
            TimerConfig::from_json(&without(timer_json(), field)),
            field,
            field,
        );
    }
    let cases: Vec<(&str, Value)> = vec![
        ("buildId", json!(0)),
        ("jobId", json!("x")),
        ("buildStatus", json!("running")),
        ("buildStatus", json!("DONE")),
        ("buildStatus", json!(1)),
        ("startTime", json!("yesterday")),
        ("startTime", json!("2026-13-01T00:00:00Z")),
        ("startTime", json!(1_700_000_000)),
        ("pipelineId", json!(0)),
    ];
    for (field, value) in cases {
        let case = format!("{field} = {value}");
        assert_refused(
            TimerConfig::from_json(&with(timer_json(), field, value)),
            field,
            &case,
        );
    }
}

#[test]
fn deserialize_goes_through_the_same_parsing_step() {
    let e = serde_json::from_value::<StartConfig>(without(start_json(), "container")).unwrap_err();
    assert!(e.to_string().contains("container: is required"), "{e}");
    let e = serde_json::from_value::<TimerConfig>(with(timer_json(), "startTime", json!("x")))
        .unwrap_err();
    assert!(e.to_string().contains("startTime"), "{e}");
    let e = serde_json::from_value::<StopConfig>(json!({})).unwrap_err();
    assert!(e.to_string().contains("buildId: is required"), "{e}");
}

// ---- property tests: valid configs survive a JSON round trip ----

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..1000, 1u64..=u64::MAX]
}

fn api_uri() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["http", "https"]),
        prop::sample::select(vec![
            "127.0.0.1",
            "localhost",
            "api.screwdriver.example",
            "[::1]",
        ]),
        prop::option::of(1u16..=65535),
        prop::sample::select(vec!["", "/", "/api", "/v1/sd/"]),
    )
        .prop_map(|(scheme, host, port, path)| match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}"),
            None => format!("{scheme}://{host}{path}"),
        })
}

fn image() -> impl Strategy<Value = String> {
    (
        prop::option::of(prop::sample::select(vec![
            "127.0.0.1:5000",
            "registry.example",
            "localhost:5000",
        ])),
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
        prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        prop::option::of("[0-9a-f]{64}"),
    )
        .prop_map(|(registry, name, tag, digest)| {
            let mut s = String::new();
            if let Some(r) = registry {
                s.push_str(r);
                s.push('/');
            }
            s.push_str(&name);
            if let Some(t) = tag {
                s.push(':');
                s.push_str(&t);
            }
            if let Some(d) = digest {
                s.push_str("@sha256:");
                s.push_str(&d);
            }
            s
        })
}

fn annotations() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of((any::<bool>(), 1u32..100_000)),
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["MICRO", "LOW", "HIGH", "TURBO", "MAX"])
                .prop_map(|s| json!(s)),
            (1u64..64).prop_map(|n| json!(n)),
        ]),
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["MICRO", "LOW", "HIGH", "TURBO"]).prop_map(|s| json!(s)),
            (1u64..256).prop_map(|n| json!(n)),
        ]),
        prop::option::of(prop::sample::select(vec![
            "docker",
            "k8s",
            "jenkins",
            "process",
            "my_exec-2",
        ])),
        prop::collection::btree_map(
            "[a-z]{1,6}\\.example/[a-zA-Z]{1,8}",
            prop_oneof![
                "[ -~]{0,12}".prop_map(Value::String),
                any::<i32>().prop_map(|n| json!(n)),
                any::<bool>().prop_map(Value::Bool),
            ],
            0..3,
        ),
    )
        .prop_map(|(timeout, cpu, ram, executor, unknown)| {
            let mut m = Map::new();
            if let Some((beta, t)) = timeout {
                let key = if beta {
                    "beta.screwdriver.cd/timeout"
                } else {
                    "screwdriver.cd/timeout"
                };
                m.insert(key.into(), json!(t));
            }
            if let Some(c) = cpu {
                m.insert("screwdriver.cd/cpu".into(), c);
            }
            if let Some(r) = ram {
                m.insert("screwdriver.cd/ram".into(), r);
            }
            if let Some(e) = executor {
                m.insert("screwdriver.cd/executor".into(), json!(e));
            }
            m.extend(unknown);
            m
        })
}

fn job_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,30}",
        ("[0-9]{1,5}", "[a-z_-]{1,20}").prop_map(|(n, j)| format!("PR-{n}:{j}")),
        (
            "[a-z]{1,10}",
            prop::sample::select(vec!["setup", "teardown"])
        )
            .prop_map(|(s, h)| format!("stage@{s}:{h}")),
    ]
}

prop_compose! {
    fn start_value()(
        build_id in id(), api in api_uri(), container in image(),
        token in "[A-Za-z0-9._~+/=-]{1,300}",
        annotations in annotations(),
        job_id in prop::option::of(id()), event_id in prop::option::of(id()),
        pipeline_id in prop::option::of(id()), job_name in prop::option::of(job_name()),
        is_pr in prop::option::of(any::<bool>()),
        cluster in prop::option::of("[A-Za-z0-9_.-]{1,50}"),
        store in prop::option::of(api_uri()),
        extra in prop::option::of("[ -~]{0,20}"),
    ) -> Value {
        let mut m = Map::new();
        m.insert("buildId".into(), json!(build_id));
        m.insert("apiUri".into(), json!(api));
        m.insert("container".into(), json!(container));
        m.insert("token".into(), json!(token));
        if !annotations.is_empty() { m.insert("annotations".into(), Value::Object(annotations)); }
        if let Some(v) = job_id { m.insert("jobId".into(), json!(v)); }
        if let Some(v) = event_id { m.insert("eventId".into(), json!(v)); }
        if let Some(v) = pipeline_id { m.insert("pipelineId".into(), json!(v)); }
        if let Some(v) = job_name { m.insert("jobName".into(), json!(v)); }
        if let Some(v) = is_pr { m.insert("isPR".into(), json!(v)); }
        if let Some(v) = cluster { m.insert("buildClusterName".into(), json!(v)); }
        if let Some(v) = store { m.insert("storeUri".into(), json!(v)); }
        if let Some(v) = extra { m.insert("causeMessage".into(), json!(v)); }
        Value::Object(m)
    }
}

prop_compose! {
    fn stop_value()(
        build_id in id(), api in prop::option::of(api_uri()), job_id in prop::option::of(id()),
        pipeline_id in prop::option::of(id()), job_name in prop::option::of(job_name()),
        token in prop::option::of("[A-Za-z0-9._-]{1,100}"), annotations in annotations(),
    ) -> Value {
        let mut m = Map::new();
        m.insert("buildId".into(), json!(build_id));
        if let Some(v) = api { m.insert("apiUri".into(), json!(v)); }
        if let Some(v) = job_id { m.insert("jobId".into(), json!(v)); }
        if let Some(v) = pipeline_id { m.insert("pipelineId".into(), json!(v)); }
        if let Some(v) = job_name { m.insert("jobName".into(), json!(v)); }
        if let Some(v) = token { m.insert("token".into(), json!(v)); }
        if !annotations.is_empty() { m.insert("annotations".into(), Value::Object(annotations)); }
        Value::Object(m)
    }
}

prop_compose! {
    fn timer_value()(
        build_id in id(), job_id in id(),
        status in prop::sample::select(executor_base::ApiBuildStatus::ALL.to_vec()),
        secs in 0i64..4_102_444_800, nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
        offset_min in prop::sample::select(vec![0i32, 60, -330, 840]),
        annotations in annotations(), pipeline_id in prop::option::of(id()),
    ) -> Value {
        let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap()
            .with_timezone(&chrono::FixedOffset::east_opt(offset_min * 60).unwrap());
        let mut m = Map::new();
        m.insert("buildId".into(), json!(build_id));
        m.insert("jobId".into(), json!(job_id));
        m.insert("buildStatus".into(), json!(status.as_str()));
        m.insert("startTime".into(), json!(t.to_rfc3339()));
        if !annotations.is_empty() { m.insert("annotations".into(), Value::Object(annotations)); }
        if let Some(v) = pipeline_id { m.insert("pipelineId".into(), json!(v)); }
        Value::Object(m)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn start_configs_round_trip(v in start_value()) {
        let cfg = StartConfig::from_json(&v).map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
        let again = StartConfig::from_json(&cfg.to_json_with_token()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &cfg);
        prop_assert_eq!(again.to_json_with_token(), cfg.to_json_with_token());
        // Serialising never writes the token; with it put back, the rest round-trips.
        let text = serde_json::to_string(&cfg).unwrap();
        prop_assert!(!text.contains("\"token\""), "{}", text);
        let mut back: Value = serde_json::from_str(&text).unwrap();
        back["token"] = v["token"].clone();
        let parsed: StartConfig = serde_json::from_value(back).unwrap();
        prop_assert_eq!(&parsed, &cfg);
        prop_assert_eq!(parsed.build_id.get(), v["buildId"].as_u64().unwrap());
    }

    #[test]
    fn stop_configs_round_trip(v in stop_value()) {
        let cfg = StopConfig::from_json(&v).map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
        let again = StopConfig::from_json(&cfg.to_json_with_token()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &cfg);
        let text = serde_json::to_string(&cfg).unwrap();
        prop_assert!(!text.contains("\"token\""), "{}", text);
        let parsed: StopConfig = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(parsed.to_json(), cfg.to_json());
        prop_assert!(parsed.token.is_none());
    }

    #[test]
    fn timer_configs_round_trip(v in timer_value()) {
        let cfg = TimerConfig::from_json(&v).map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
        let again = TimerConfig::from_json(&cfg.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &cfg);
        let parsed: TimerConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        prop_assert_eq!(&parsed, &cfg);
    }

    #[test]
    fn start_from_json_never_panics(v in prop::collection::btree_map(
        prop::sample::select(vec!["buildId", "apiUri", "container", "token", "jobId", "annotations", "jobName", "isPR"]),
        prop_oneof![
            Just(Value::Null), any::<bool>().prop_map(Value::Bool), any::<i64>().prop_map(|n| json!(n)),
            "[ -~]{0,30}".prop_map(Value::String),
        ],
        0..8,
    )) {
        let v = Value::Object(v.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        if let Err(e) = StartConfig::from_json(&v) {
            prop_assert_eq!(e.kind(), ErrorKind::Invalid);
            prop_assert!(!e.field_errors().is_empty());
        }
    }
}
