//! `loadgen`: the webshop's load generator (see `webshop_tests::loadgen` and the README's
//! "Load tests"). Prints the report as a table; exits 1 if any request failed (as locust
//! does) unless `--allow-errors`, 2 if the run could not be made.

use clap::Parser;
use std::process::ExitCode;
use webshop_tests::loadgen::{self, cli::Args, report};

fn main() -> ExitCode {
    let args = Args::parse();
    match loadgen::run(&args) {
        Ok(r) => {
            print!("{}", report::text(&r));
            let errors = r.run.as_ref().map_or(0, |x| x.errors) + r.ceiling.as_ref().map_or(0, |x| x.errors);
            if errors > 0 && !args.allow_errors {
                eprintln!("loadgen: {errors} requests failed");
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
