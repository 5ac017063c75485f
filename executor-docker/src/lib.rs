//! Screwdriver-compatible docker build executor (work in progress).
