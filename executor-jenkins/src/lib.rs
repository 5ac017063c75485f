//! Screwdriver-compatible jenkins build executor (work in progress).
