//! `sdx` (work in progress).
fn main() {}
