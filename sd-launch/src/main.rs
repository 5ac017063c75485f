//! The `launch` binary; see the [`sd_launch`] crate docs.

fn main() {
    std::process::exit(sd_launch::main_with_args(std::env::args_os()));
}
