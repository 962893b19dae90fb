//! `restore` (to be written).

use crate::cli::Cli;
use crate::config::Settings;
use crate::error::{Error, Result};

pub fn run(_cli: &Cli, _s: &Settings, _old: &str, _path: &str) -> Result<()> {
    Err(Error::Other(
        "restore is not available in this build yet".into(),
    ))
}
