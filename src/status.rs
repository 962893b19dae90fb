//! `status` (to be written).

use crate::cli::Cli;
use crate::config::Settings;
use crate::error::{Error, Result};

pub fn run(_cli: &Cli, _s: &Settings) -> Result<()> {
    Err(Error::Other(
        "status is not available in this build yet".into(),
    ))
}
