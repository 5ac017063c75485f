//! sd-launch (work in progress).
