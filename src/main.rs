//! ephemeral-root: keep the old root as a read-only snapshot and boot from a fresh one.

mod backend;
mod cli;
mod cmdline;
mod config;
mod diff;
mod engine;
mod error;
mod escape;
mod fault;
#[cfg(test)]
mod fuzz;
mod json;
mod logger;
mod mounts;
mod plan;
mod probe;
mod restore;
mod retention;
mod status;
#[cfg(test)]
mod testrand;
mod timefmt;
mod walk;
mod zfs;

fn main() {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            logger::init(0);
            log::error!("{e}");
            std::process::exit(e.exit_code());
        }
    };
    logger::init(cli.verbosity);
    let is_rollback = cli.command == Some(cli::Command::Rollback);
    if let Err(e) = engine::run(cli) {
        if is_rollback {
            log::error!("rollback FAILED: {e}");
        } else {
            log::error!("{e}");
        }
        std::process::exit(e.exit_code());
    }
}
