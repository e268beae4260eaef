//! A small disk for one node, so that the `disk-full` fault really fills a disk: a
//! size-limited tmpfs mounted at the node's data directory before the node first starts (root
//! only), which the fault then fills with a ballast file beside the node's store.
//!
//! The mount's source is named `bch-<pid>-n<node>` after the harness process, like the network
//! namespaces, so that a mount left by a run whose process is gone is found and unmounted
//! ([`clean_stale`]). Dropping the [`SmallDisk`] unmounts it.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::netns::{harness_alive, pid_in};

/// The ballast's file name, in the disk's root (the node's store is in `store/`).
pub const BALLAST: &str = "ballast";

/// See the module docs.
#[derive(Debug)]
pub struct SmallDisk {
    pub node: u64,
    /// The mount point: the node's data directory.
    pub path: PathBuf,
    /// The disk's size in bytes.
    pub size: u64,
    source: String,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("path {} has a NUL byte", p.display()))
}

/// Unmounts `path` (lazily: the last user gone, it is gone).
fn unmount(path: &Path) -> Result<()> {
    let c = cstr(path)?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        bail!(
            "unmount {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` bytes at `path` (created if missing, and expected empty) for
    /// node `node`. Fails without root or where mounting is not allowed.
    pub fn mount(node: u64, path: &Path, size: u64) -> Result<SmallDisk> {
        std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        let source = format!("bch-{}-n{node}", std::process::id());
        let (src, target, fstype) = (
            CString::new(source.clone()).expect("no NUL in the name"),
            cstr(path)?,
            CString::new("tmpfs").expect("no NUL"),
        );
        let opts = CString::new(format!("size={size},mode=0755")).expect("no NUL");
        // SAFETY: mount(2) with valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            bail!(
                "mount a {} MiB tmpfs at {}: {}",
                size >> 20,
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(SmallDisk {
            node,
            path: path.to_path_buf(),
            size,
            source,
        })
    }

    /// (total, free) bytes of the disk.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let c = cstr(&self.path)?;
        // SAFETY: statvfs fills the zeroed struct it is given for a valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            bail!(
                "statvfs {}: {}",
                self.path.display(),
                std::io::Error::last_os_error()
            );
        }
        let block = st.f_frsize as u64;
        Ok((st.f_blocks as u64 * block, st.f_bavail as u64 * block))
    }

    pub fn ballast_path(&self) -> PathBuf {
        self.path.join(BALLAST)
    }

    /// Appends to the ballast until the disk has no space left; returns the bytes added
    /// (0 when it was full already). Called again, it takes whatever the node freed since.
    pub fn fill(&self) -> Result<u64> {
        let path = self.ballast_path();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let chunk = vec![0xbau8; 1 << 20];
        let mut added = 0u64;
        // Ever smaller writes take the last partial megabyte too.
        let mut len = chunk.len();
        loop {
            match f.write(&chunk[..len]) {
                Ok(0) => break,
                Ok(n) => added += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    if len <= 4096 {
                        break;
                    }
                    len /= 16;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("write {}", path.display())),
            }
        }
        Ok(added)
    }

    /// Deletes the ballast; returns its size.
    pub fn remove_ballast(&self) -> Result<u64> {
        let path = self.ballast_path();
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("look at {}", path.display())),
        };
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        Ok(len)
    }

    /// A one-line description, for the run's log.
    pub fn describe(&self) -> String {
        format!(
            "node {}'s data directory {} is a {} MiB tmpfs ({})",
            self.node,
            self.path.display(),
            self.size >> 20,
            self.source
        )
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.path) {
            eprintln!("chaos: cleanup: {e:#}");
        }
    }
}

/// Undoes the octal escapes (`\040` for a space) of a path in `/proc/self/mounts`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The small disks in a `/proc/self/mounts` text left by harness runs whose process is gone,
/// by mount point.
fn stale_in(mounts: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (source, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "tmpfs"
                && source.starts_with("bch-")
                && pid_in(source).is_some_and(|p| !alive(p)))
            .then(|| unescape(target))
        })
        .collect()
}

/// Unmounts small disks left by chaos runs whose process is gone; returns what it removed.
pub fn clean_stale() -> Vec<String> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    stale_in(&mounts, harness_alive)
        .into_iter()
        .filter(|p| unmount(Path::new(p)).is_ok())
        .map(|p| format!("tmpfs at {p}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_stale_small_disks_only() {
        let mounts = "\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw 0 0
bch-4242-n5 /work/data/chaos/disk-full/nodes/n5/data tmpfs rw,size=1048576k 0 0
bch-77-n5 /work/data/chaos/disk-full/nodes/n5/data tmpfs rw,size=1048576k 0 0
bch-4243-n1 /tmp/with\\040space/n1/data tmpfs rw 0 0
bch-4244-n1 /tmp/other ext4 rw 0 0
";
        // 77 is a live harness; the ext4 one is not ours.
        assert_eq!(
            stale_in(mounts, |p| p == 77),
            [
                "/work/data/chaos/disk-full/nodes/n5/data",
                "/tmp/with space/n1/data"
            ]
        );
    }

    #[test]
    fn unescapes_mount_paths() {
        assert_eq!(unescape("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }

    /// Only as root (where mounting is allowed): mount, fill, free, unmount.
    #[test]
    fn mount_fill_and_free() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: mounting is not tried");
            return;
        }
        let dir = tempfile::tempdir().expect("create a temp dir");
        let path = dir.path().join("data");
        let disk = match SmallDisk::mount(9, &path, 8 << 20) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("mounting not allowed here: {e:#}");
                return;
            }
        };
        let (total, free) = disk.usage().expect("usage");
        assert_eq!(total, 8 << 20);
        assert_eq!(free, total);
        std::fs::write(path.join("other"), vec![1u8; 1 << 20]).expect("write a file");
        let added = disk.fill().expect("fill");
        assert_eq!(added, 7 << 20);
        assert_eq!(disk.usage().expect("usage").1, 0);
        assert!(
            std::fs::write(path.join("more"), b"x").is_err(),
            "the disk is full"
        );
        assert_eq!(disk.fill().expect("fill again"), 0);
        std::fs::remove_file(path.join("other")).expect("free a megabyte");
        assert_eq!(disk.fill().expect("take it"), 1 << 20);
        assert_eq!(disk.remove_ballast().expect("remove"), 8 << 20);
        assert_eq!(disk.usage().expect("usage").1, 8 << 20);
        assert_eq!(disk.remove_ballast().expect("none left"), 0);
        drop(disk);
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read mounts");
        assert!(!mounts.contains(path.to_str().expect("UTF-8 path")));
    }
}
