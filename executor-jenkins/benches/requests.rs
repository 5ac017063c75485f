//! Benchmark: HTTP requests per build and time to start 100 builds (being written).
fn main() {}
