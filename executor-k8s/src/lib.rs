//! Screwdriver-compatible k8s build executor (work in progress).
