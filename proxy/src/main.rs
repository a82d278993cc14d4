//! `weft-proxy`: the sidecar (and its helper subcommands: await, probe, init).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use weft_proxy::cli::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Await(a)) => return weft_proxy::cli::await_cmd::main(a),
        Some(Command::Probe(a)) => return weft_proxy::cli::probe::main(a),
        Some(Command::Init(a)) => return weft_proxy::cli::init::main(a),
        None => {}
    }
    let cfg = match cli.run.validate() {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("weft-proxy: invalid configuration:\n  {}", problems.join("\n  "));
            return ExitCode::from(2);
        }
    };
    let log = match weft_telemetry::logging::init(&cli.run.log_level, cli.run.log_format == "json") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weft-proxy: --log-level: {e}");
            return ExitCode::from(2);
        }
    };
    match weft_proxy::run::run(cfg, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
