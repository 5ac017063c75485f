//! Screwdriver-compatible process build executor (work in progress).
