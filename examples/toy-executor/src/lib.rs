//! toy-executor (work in progress).
