//! Who is writing to what `persist` is about to copy: every process's descriptors open for
//! writing (`/proc/PID/fdinfo/N`, [`rules::fdinfo_writable`]) on a regular file (`stat` of
//! `/proc/PID/fd/N`, which follows the magic link to the open file), later matched by device and
//! inode against the files of the tree; the process named by `/proc/PID/comm`, its unit by
//! `/proc/PID/cgroup`. Processes that vanish or cannot be read meanwhile are skipped.
//!
//! Not seen: a file mapped shared and writable whose descriptor was closed (`mmap` then `close`).

use super::rules::{self, Unit};
use std::os::unix::ffi::OsStrExt;

/// A process with a file of the tree open for writing.
#[derive(Debug, Clone)]
pub struct Writer {
    pub pid: u32,
    pub comm: String,
    /// The open file's path as the process's descriptor names it.
    pub file: Vec<u8>,
    pub unit: Unit,
    /// (device, inode) of the file.
    pub id: (u64, u64),
}

/// Every descriptor of another process that is open for writing on a regular file, read before
/// the backend moves this process into a private mount namespace (so the paths are the ones the
/// running system sees). Match them with [`Writer::id`].
pub fn open_for_writing() -> Vec<Writer> {
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = std::str::from_utf8(p.file_name().as_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        let mut unit: Option<Unit> = None;
        for fd in fds.flatten() {
            let n = fd.file_name();
            let n = n.to_string_lossy();
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).unwrap_or_default();
            if !rules::fdinfo_writable(&info) {
                continue;
            }
            let link = format!("/proc/{pid}/fd/{n}");
            let Ok(st) = rustix::fs::stat(link.as_str()) else {
                continue;
            };
            if st.st_mode as u32 & 0o170000 != 0o100000 {
                continue;
            }
            let file = std::fs::read_link(&link)
                .map(|p| p.into_os_string().into_encoded_bytes())
                .unwrap_or_default();
            let comm = comm
                .get_or_insert_with(|| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| c.trim_end().to_string())
                        .unwrap_or_default()
                })
                .clone();
            let unit = unit
                .get_or_insert_with(|| {
                    rules::unit_of(
                        &std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default(),
                    )
                })
                .clone();
            out.push(Writer {
                pid,
                comm,
                file,
                unit,
                id: (st.st_dev as u64, st.st_ino as u64),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_child_writing_a_file_is_found_and_a_reader_is_not() {
        let dir = std::env::temp_dir().join(format!("er-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (w, r) = (dir.join("written"), dir.join("read"));
        std::fs::write(&w, b"x").unwrap();
        std::fs::write(&r, b"x").unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 3>>'{}' 4<'{}'; echo ready; exec sleep 30",
                w.display(),
                r.display()
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        // "ready" is printed before `exec sleep`: wait until the exec has happened (the name the
        // scan reports is the process's current one).
        let comm = format!("/proc/{}/comm", child.id());
        for _ in 0..500 {
            if std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let id = |p: &std::path::Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let (wid, rid) = (id(&w), id(&r));
        let set: HashSet<(u64, u64)> = [wid, rid].into_iter().collect();
        let found: Vec<Writer> = open_for_writing()
            .into_iter()
            .filter(|x| set.contains(&x.id))
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let mine: Vec<&Writer> = found.iter().filter(|x| x.pid == child.id()).collect();
        assert_eq!(mine.len(), 1, "{found:?}");
        assert_eq!(mine[0].id, wid);
        assert!(mine[0].file.ends_with(b"/written"), "{:?}", mine[0]);
        assert_eq!(mine[0].comm, "sleep");
    }
}
