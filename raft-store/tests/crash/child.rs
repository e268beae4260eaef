//! The child process: appends to every group as fast as the store allows and reports each
//! append and each acknowledgement on stdout, until the parent kills it.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bongsu_raft_store::{LogStore, Store, StoreOptions};
use openraft::storage::RaftLogStorage;
use openraft::Vote;
use rand::Rng;

use crate::workload::{entry, Report, ENTRIES_PER_TERM, GROUPS, MAX_BATCH, NODE_ID};

/// Set by the parent to the store directory; its presence is what makes a run the child.
pub const DIR_ENV: &str = "BONGSU_CRASH_CHILD_DIR";
/// Set by the parent to its own pid, so the child can tell whether it has been orphaned.
pub const PARENT_PID_ENV: &str = "BONGSU_CRASH_PARENT_PID";

/// The parent kills the child well within a second. A child that lives this long has lost its
/// parent somehow, and stops instead of writing into a temporary directory forever.
const MAX_LIFETIME: Duration = Duration::from_secs(30);

pub fn run(dir: &Path) -> anyhow::Result<()> {
    die_with_parent()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("build the child's tokio runtime")?;
    runtime.block_on(async {
        let store = Store::open(dir, StoreOptions::default())
            .with_context(|| format!("open the store at {}", dir.display()))?;
        // libtest may have printed "test child_process_appender ... " without a newline; end
        // that line so that every report starts a line of its own.
        write_line("\n");
        let deadline = Instant::now() + MAX_LIFETIME;
        let tasks: Vec<_> = GROUPS
            .iter()
            .map(|&group| tokio::spawn(append_until(store.log_store(group), deadline)))
            .collect();
        for task in tasks {
            task.await.context("join an append task")??;
        }
        Ok(())
    })
}

/// Appends to one group, continuing its log where the last child left it, the way a leader
/// elected after a restart would: a vote for a new term first, then entries of that term.
/// Every `ENTRIES_PER_TERM` entries it moves to the next term, so votes are written (and
/// can be lost) throughout the run, not only at startup.
async fn append_until(mut log: LogStore, deadline: Instant) -> anyhow::Result<()> {
    let group = log.group();
    let (_, last) = log
        .log_state()
        .with_context(|| format!("read the log state of group {group}"))?;
    let voted = log
        .vote()
        .with_context(|| format!("read the vote of group {group}"))?
        .map_or(0, |v| v.leader_id.get_term());
    let mut next = last.map_or(0, |id| id.index + 1);
    let mut term = voted.max(last.map_or(0, |id| id.leader_id.term));
    let mut left_in_term = 0;
    while Instant::now() < deadline {
        if left_in_term == 0 {
            term += 1;
            log.save_vote(&Vote::new(term, NODE_ID))
                .await
                .with_context(|| format!("save vote {term} of group {group}"))?;
            report(Report::Vote { group, term });
            left_in_term = ENTRIES_PER_TERM;
        }
        let count = rand::rng().random_range(1..=MAX_BATCH).min(left_in_term);
        let last = next + count - 1;
        report(Report::Append {
            group,
            first: next,
            last,
            term,
        });
        let appended = log
            .append_durable((next..=last).map(|index| entry(group, term, index)))
            .await
            .with_context(|| format!("append {next}..={last} to group {group}"))?;
        ensure!(
            appended.map(|id| (id.index, id.leader_id.term)) == Some((last, term)),
            "append_durable of {next}..={last} (term {term}) to group {group} returned {appended:?}"
        );
        report(Report::Ack { group, last });
        next = last + 1;
        left_in_term -= count;
    }
    Ok(())
}

fn report(r: Report) {
    write_line(&r.line());
}

/// Writes a whole line with one `write` to the pipe. This blocks a runtime thread for a moment;
/// the parent reads continuously, so the pipe does not stay full.
fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .expect("the parent reads the child's stdout until the child is dead");
}

/// Makes the kernel SIGKILL this process when the parent's test thread dies, so a parent that
/// crashes or is timed out never leaves a child appending in the background.
fn die_with_parent() -> anyhow::Result<()> {
    let parent: libc::pid_t = std::env::var(PARENT_PID_ENV)
        .with_context(|| format!("read {PARENT_PID_ENV}"))?
        .parse()
        .with_context(|| format!("parse {PARENT_PID_ENV}"))?;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_PDEATHSIG only sets which signal this process gets when its parent
        // exits; it touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        ensure!(
            rc == 0,
            "prctl(PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        );
    }
    // The parent may have died before the prctl took effect, and then nothing will kill us.
    // SAFETY: getppid has no preconditions.
    let actual = unsafe { libc::getppid() };
    ensure!(
        actual == parent,
        "the parent test process {parent} is gone (our parent is now {actual})"
    );
    Ok(())
}
