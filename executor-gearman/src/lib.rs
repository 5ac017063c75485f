//! Screwdriver-compatible gearman build executor (work in progress).
