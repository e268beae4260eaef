//! Child processes of a test or a tool: finding the workspace's binaries, spawning a process
//! that dies with its parent, signalling it, free ports, and the log every process writes.
//!
//! Every process the kit starts goes through [`spawn`], so `PR_SET_PDEATHSIG` is set in one
//! place: a node or gateway never outlives the test, benchmark or `bongsu run` that started it,
//! even when that one is killed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// The directory of the workspace's binaries (`target/<profile>/`): the directory of the
/// running executable, or its parent for a test (`deps/`) or an example (`examples/`).
pub fn profile_dir() -> Result<PathBuf> {
    let me = std::env::current_exe().context("find this executable's path")?;
    let dir = me.parent().context("this executable has no directory")?;
    let nested = dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples");
    Ok(match (nested, dir.parent()) {
        (true, Some(up)) => up.to_path_buf(),
        _ => dir.to_path_buf(),
    })
}

/// The workspace binary `name` beside the running executable (see [`profile_dir`]); for a
/// binary of another package than the caller's (a test's own package's binaries come from
/// `env!("CARGO_BIN_EXE_<name>")`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let bin = profile_dir()?.join(name);
    if !bin.is_file() {
        bail!(
            "{} not found: build the workspace first (`cargo build --release --workspace \
             --all-targets`, which `make test` runs)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A scratch directory shared by the workspace's tests: `target/tmp`, where cargo puts
/// `CARGO_TARGET_TMPDIR`.
pub fn target_tmp() -> Result<PathBuf> {
    let profile = profile_dir()?;
    let target = profile.parent().unwrap_or(&profile);
    let tmp = target.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    Ok(tmp)
}

/// Opens `path` for appending, so that a process started again keeps its earlier story.
pub fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// Starts `cmd` with its output appended to `log` and no input. The child receives `death`
/// (SIGKILL for a test, SIGTERM for `bongsu run`) when this process dies.
pub fn spawn(cmd: &mut Command, log: &Path, death: libc::c_int) -> Result<Child> {
    let out = open_log(log)?;
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe and touches none of the parent's state.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, death);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))
}

/// Sends `sig` to a child that has not been reaped.
pub fn signal(child: &Child, sig: libc::c_int) -> Result<()> {
    let pid = child.id();
    // SAFETY: kill(2) on the PID of our own child that has not been reaped, so the PID cannot
    // belong to another process.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        bail!(
            "signal {sig} to pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sends `sig` and reaps the child, for cleanup: errors are ignored.
pub fn stop(mut child: Child, sig: libc::c_int) {
    let _ = signal(&child, sig);
    let _ = child.wait();
}

/// `n` distinct free ports on `ip`. Another process may take one before it is bound; callers
/// pick again when their process exits at start.
pub fn free_ports(ip: Ipv4Addr, n: usize) -> Result<Vec<u16>> {
    let mut ports = std::collections::BTreeSet::new();
    while ports.len() < n {
        let l = TcpListener::bind((ip, 0)).with_context(|| format!("bind a free port on {ip}"))?;
        ports.insert(l.local_addr()?.port());
    }
    Ok(ports.into_iter().collect())
}

/// The last `lines` lines of a log (read from its last 256 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
        let _ = f.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Appends `=== hh:mm:ss.mmmZ <who>: <line> ===` to a process's log, so that the log tells
/// what was done to the process, stamped like the process's own lines (UTC).
pub fn note(path: &Path, who: &str, line: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let day_ms = now.as_millis() % 86_400_000;
    let (h, m, s, ms) = (
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000,
    );
    if let Ok(mut f) = open_log(path) {
        let _ = writeln!(f, "=== {h:02}:{m:02}:{s:02}.{ms:03}Z {who}: {line} ===");
    }
}

/// utime + stime of a process, in clock ticks, from `/proc/<pid>/stat` (for benchmarks).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces; fields after the
    // last ')' start with field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("parse {path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize, name: &str| -> Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("parse {path}: no {name}"))?
            .parse::<u64>()
            .with_context(|| format!("parse {path}: {name}"))
    };
    Ok(field(11, "utime")? + field(12, "stime")?)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_notes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        assert_eq!(log_tail(&log, 3), "");
        std::fs::write(&log, "a\nb\nc\nd\n").unwrap();
        note(&log, "kit", "SIGKILL");
        let tail = log_tail(&log, 2);
        assert!(tail.starts_with("d\n=== "), "{tail}");
        assert!(tail.ends_with("kit: SIGKILL ==="), "{tail}");
    }

    #[test]
    fn this_process_uses_cpu() {
        assert!(cpu_ticks(std::process::id()).is_ok());
        assert!(clock_ticks_per_sec() > 0.0);
    }

    #[test]
    fn ports_are_distinct() {
        let p = free_ports(Ipv4Addr::LOCALHOST, 3).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p[0] < p[1] && p[1] < p[2]);
    }
}
