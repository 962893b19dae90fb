//! Executing a plan: one step at a time, each logged before it starts, with a fault point before
//! each (crash-safety tests), mapped onto the backend's primitives.

use super::plan::Step;
use crate::backend::Fs;
use crate::error::Result;
use crate::fault::{self, Point};
use crate::layout;

/// Run `steps` in order; `what` prefixes the log lines ("step", "finish").
pub fn execute(fs: &mut dyn Fs, steps: &[Step], what: &str) -> Result<()> {
    let n = steps.len();
    for (i, step) in steps.iter().enumerate() {
        log::info!("{what} {}/{n}: {step}", i + 1);
        fault::point(step.fault_point());
        run(fs, step).map_err(|e| e.prefixed(&format!("{what} {}/{n} ({step})", i + 1)))?;
    }
    Ok(())
}

fn run(fs: &mut dyn Fs, step: &Step) -> Result<()> {
    match step {
        Step::CreateSnapshotsLocation => fs.create_snapshots_location(),
        Step::Discard(x) | Step::Delete(x) => {
            if !layout::destroyable(x) {
                return Err(crate::error::Error::Refused(format!(
                    "{} is not something this program deletes without renaming it first; not deleting it",
                    crate::escape::text(x)
                )));
            }
            fs.destroy(x)
        }
        Step::Build(src) => fs.build(layout::NEW_ROOT, src),
        Step::MoveRootAside(n) => fs.move_root(&layout::kept(n)),
        Step::CopyRoot(n) => fs.copy_root(&layout::incomplete(n)),
        Step::RetireRoot(to) => fs.move_root(to),
        Step::Activate => fs.activate(layout::NEW_ROOT),
        Step::Rename(a, b) => fs.rename(a, b),
        Step::Seal(k, n) => fs.seal(k, n),
        Step::Prune { entry, name, .. } => {
            let doomed = layout::deleting(name);
            if entry != &doomed {
                fs.rename(entry, &doomed)?;
            }
            fault::point(Point::PruneRenamed);
            if let Err(e) = fs.set_pinned(name, false) {
                log::warn!("{e}");
            }
            fs.destroy(&doomed)
        }
        Step::Sync => {
            fs.sync()?;
            fault::point(Point::SyncDone);
            Ok(())
        }
    }
}
