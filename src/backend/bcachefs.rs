//! bcachefs backend (to be written): subvolume ioctls on a privately mounted filesystem.

use super::Backend;
use crate::config::Settings;
use crate::error::{Error, Result};

/// Open the bcachefs filesystem made of `members` (every member device).
pub fn open_backend(_members: &[String], _s: &Settings) -> Result<Box<dyn Backend>> {
    Err(Error::Usage(
        "the bcachefs backend is not available in this build yet".into(),
    ))
}
