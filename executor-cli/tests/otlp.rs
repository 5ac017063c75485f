//! Feature `otlp`: `sdx` sends its spans to the OTLP/HTTP endpoint in the environment.
//! A loopback HTTP server stands in for the collector and keeps what it is sent.
//!
//! `cargo test -p executor-cli --features otlp --test otlp`

#![cfg(feature = "otlp")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const SDX: &str = env!("CARGO_BIN_EXE_sdx");

/// One request the collector received: path, content type, body.
type Received = (String, String, Vec<u8>);

/// Answers every request 200 (keep-alive) and keeps it; returns the endpoint URL.
fn collector() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (mut len, mut kind) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap_or((h, ""));
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "content-type" => kind = v.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    keep.lock().unwrap().push((path, kind, body));
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, got)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn demo_spans_reach_the_otlp_endpoint() {
    let (url, got) = collector();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(SDX)
        .arg("demo")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("SDX_CONFIG")
        .env_remove("SDX_EXECUTOR")
        .env_remove("RUST_LOG")
        .env("EXECUTOR_PROCESS_STATE_DIR", state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    // Exported in batches; the last one when `sdx` exits.
    let got = got.lock().unwrap();
    assert!(!got.is_empty(), "nothing was exported");
    for (path, kind, _) in got.iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(kind, "application/x-protobuf");
    }
    let all: Vec<u8> = got.iter().flat_map(|(_, _, b)| b.clone()).collect();
    // The router's spans, `build{op, build_id, backend}`, of build 1 on the process
    // backend, from the service `sdx`.
    for want in [
        "service.name",
        "sdx",
        "build",
        "op",
        "start",
        "stop",
        "build_id",
        "backend",
        "process",
    ] {
        assert!(contains(&all, want), "{want:?} not in the exported spans");
    }
}

#[test]
fn a_bad_endpoint_is_an_error_naming_the_variable() {
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(SDX)
        .arg("demo")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318")
        .env("EXECUTOR_PROCESS_STATE_DIR", state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        "sdx: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: must be an http(s) URL, got \"collector:4318\""
    );
    assert!(out.stdout.is_empty(), "nothing ran");
}
