//! ephemeral-root: keep the old root as a read-only snapshot and boot from a fresh one.
//!
//! Layout of the program: [`layout`] (the names on disk), [`protocol`] (the state machine, written
//! once), [`backend`] (filesystem primitives, one module per filesystem), [`engine`] (the
//! commands). The full build (feature `tools`, the default) adds `diff`, `restore` and `status`;
//! the initrd build (`--no-default-features`) has only what runs there.
#![deny(unsafe_code)]

mod backend;
mod cli;
mod clock;
mod cmdline;
mod config;
#[cfg(feature = "tools")]
mod copy;
#[cfg(feature = "tools")]
mod diff;
mod engine;
mod error;
mod escape;
mod fault;
#[cfg(test)]
mod fuzz;
mod json;
mod lastrun;
mod layout;
mod lock;
mod logger;
#[cfg(feature = "tools")]
mod lost;
mod mounts;
#[cfg(feature = "tools")]
mod persist;
#[cfg(feature = "tools")]
mod persisted;
mod probe;
mod protocol;
#[cfg(feature = "tools")]
mod report;
#[cfg(feature = "tools")]
mod restore;
mod retention;
#[cfg(feature = "tools")]
mod signals;
#[cfg(feature = "tools")]
mod spawn;
#[cfg(feature = "tools")]
mod status;
#[cfg(test)]
mod testrand;
mod timefmt;
#[cfg(feature = "tools")]
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
    #[cfg(feature = "tools")]
    if matches!(
        cli.command,
        Some(
            cli::Command::Diff(_)
                | cli::Command::List
                | cli::Command::Check
                | cli::Command::Status
                | cli::Command::Lost
                | cli::Command::Report
        )
    ) {
        signals::default_sigpipe();
    }
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
