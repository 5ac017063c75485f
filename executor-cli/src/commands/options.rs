//! `sdx options`: the option tables, generated from the declarations.

use crate::cli::OptionsArgs;
use crate::config::{compiled_schemes, find_scheme};
use crate::error::CliResult;

/// Prints the tables of the schemes asked for (all compiled-in ones by default).
pub fn run(a: OptionsArgs) -> CliResult<u8> {
    let schemes = if a.schemes.is_empty() {
        compiled_schemes()
    } else {
        a.schemes
            .iter()
            .map(|s| find_scheme(s, "sdx options"))
            .collect::<CliResult<Vec<_>>>()?
    };
    for (i, s) in schemes.iter().enumerate() {
        if i > 0 {
            println!();
        }
        if a.markdown {
            println!("### {}\n\n{}", s.name, (s.markdown)());
        } else {
            print!("{}", (s.text)());
        }
    }
    Ok(0)
}
