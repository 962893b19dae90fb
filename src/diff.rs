//! `diff` and `baseline` (to be written).

use crate::cli::Cli;
use crate::config::Settings;
use crate::error::{Error, Result};

pub fn run(_cli: &Cli, _s: &Settings, _old: Option<&str>) -> Result<()> {
    Err(Error::Other(
        "diff is not available in this build yet".into(),
    ))
}

pub fn baseline(_cli: &Cli, _s: &Settings) -> Result<()> {
    Err(Error::Other(
        "baseline is not available in this build yet".into(),
    ))
}
