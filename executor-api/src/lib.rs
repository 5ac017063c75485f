//! executor-api (work in progress).
