//! Crash test: a real child process appends to several groups of a store on a real disk and
//! is SIGKILLed at random moments; after every kill the parent reopens the store and checks it
//! against everything the child acknowledged (see [`check`] for the properties).
//!
//! The child is this same test binary, run again with libtest arguments that select only
//! [`child_process_appender`], and with [`child::DIR_ENV`] set. Running the binary directly
//! works under both `cargo test` and `cargo nextest`, which both hand test binaries
//! libtest-style arguments.
//!
//! Most kills come 20–300 ms after the child's first acknowledgement, in the middle of a
//! stream of appends; every sixth comes earlier, while the child may still be starting up and
//! RocksDB recovering from the previous kill.

mod check;
mod child;
mod workload;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;

use crate::workload::{Report, GROUPS};

/// How many times the child is killed.
const KILLS: usize = 24;
/// Every this many rounds, the kill does not wait for the first acknowledgement.
const EARLY_KILL_EVERY: usize = 6;
/// How long after the first acknowledgement a normal kill comes, in milliseconds.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 20..=300;
/// Starting the child and opening the store takes well under a second; this only keeps a
/// broken child from hanging the test.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// The test's name in this binary, which selects it when the binary runs as the child.
const CHILD_TEST: &str = "child_process_appender";

/// Not a test on its own: it is the child process of [`sigkill_loses_no_acknowledged_entry`],
/// which sets [`child::DIR_ENV`], selects it with `--ignored` and kills it. Ignored so that a
/// normal run reports it as skipped instead of counting a no-op as a pass.
#[test]
#[ignore = "runs only as the child process of sigkill_loses_no_acknowledged_entry"]
fn child_process_appender() {
    let Some(dir) = std::env::var_os(child::DIR_ENV) else {
        return;
    };
    if let Err(e) = child::run(Path::new(&dir)) {
        panic!("crash child: {e:#}");
    }
}

#[test]
fn sigkill_loses_no_acknowledged_entry() -> anyhow::Result<()> {
    let started = Instant::now();
    // Cargo's scratch directory for integration tests lives in the target directory, on a
    // real disk even where /tmp is a tmpfs.
    let dir = tempfile::Builder::new()
        .prefix("crash-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .context("create the store directory")?;
    let mut history = check::History::default();
    let mut rounds_with_acks = 0;
    let mut max_unacked_tail = 0;
    let (mut in_flight, mut in_flight_landed, mut acked_votes) = (0, 0, 0);
    // The early kills aim anywhere between spawning and the first acknowledgement.
    let mut time_to_first_ack = Duration::from_millis(100);
    for round in 0..KILLS {
        let kill_at = if round % EARLY_KILL_EVERY == EARLY_KILL_EVERY - 1 {
            KillAt::AfterSpawn(rand::rng().random_range(Duration::ZERO..=time_to_first_ack))
        } else {
            KillAt::AfterFirstAck(Duration::from_millis(
                rand::rng().random_range(KILL_DELAY_MS),
            ))
        };
        let run = run_child_until_killed(dir.path(), kill_at)
            .with_context(|| format!("round {round}"))?;
        if let Some(t) = run.time_to_first_ack {
            time_to_first_ack = t;
        }
        let stats = history
            .record_round(&run.reports)
            .with_context(|| format!("round {round}: read the child's reports"))?;
        acked_votes += stats.acked_votes;
        if stats.acked_entries > 0 {
            rounds_with_acks += 1;
        }
        let (violations, observed) = check::check_store(dir.path(), &mut history)
            .with_context(|| format!("round {round}: check the store"))?;
        if !violations.is_empty() {
            let listed: Vec<String> = violations.iter().map(|v| format!("  {v}")).collect();
            panic!(
                "round {round} ({kill_at:?}), after {} acknowledged entries:\n{}",
                history.acked_entries(),
                listed.join("\n")
            );
        }
        max_unacked_tail = max_unacked_tail.max(observed.max_unacked_tail);
        in_flight += observed.in_flight;
        in_flight_landed += observed.in_flight_landed;
    }
    // A child that never gets anything acknowledged would pass every check above vacuously.
    let waited_for_ack = KILLS - KILLS / EARLY_KILL_EVERY;
    assert!(
        rounds_with_acks >= waited_for_ack,
        "only {rounds_with_acks} of {KILLS} rounds acknowledged anything"
    );
    println!(
        "crash: kills={KILLS} groups={} acked_entries={} acked_votes={acked_votes} max_unacked_tail={max_unacked_tail} \
         in_flight_landed={in_flight_landed}/{in_flight} elapsed={:.1}s",
        GROUPS.len(),
        history.acked_entries(),
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the child's first acknowledgement.
    AfterFirstAck(Duration),
    /// This long after spawning it, acknowledgement or not.
    AfterSpawn(Duration),
}

/// What one child did before it was killed.
struct ChildRun {
    /// Every report it printed, in order.
    reports: Vec<Report>,
    time_to_first_ack: Option<Duration>,
}

/// What the parent reads from the child's stdout.
enum Line {
    Report(Report),
    /// A line claiming to be a report that does not parse.
    Malformed(String),
    /// Anything else (libtest's own output, a panic message).
    Other(String),
}

fn run_child_until_killed(dir: &Path, kill_at: KillAt) -> anyhow::Result<ChildRun> {
    let exe = std::env::current_exe().context("find this test binary")?;
    let spawned = Instant::now();
    let mut child = KillOnDrop(Some(
        Command::new(exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(child::DIR_ENV, dir)
            .env(child::PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn the child")?,
    ));
    let stdout = child
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("stdout was piped");
    let (tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || read_lines(stdout, tx));

    let mut received = Vec::new();
    let mut time_to_first_ack = None;
    match kill_at {
        KillAt::AfterSpawn(delay) => thread::sleep(delay),
        KillAt::AfterFirstAck(delay) => {
            wait_for_first_ack(&lines, &mut received)?;
            time_to_first_ack = Some(spawned.elapsed());
            thread::sleep(delay);
        }
    }
    let status = child.kill_and_wait().context("kill the child")?;
    // The child is dead, so its stdout is at end of file once the pipe is drained: every line
    // it managed to print is read now, including those printed just before the kill.
    reader
        .join()
        .expect("the reader thread does not panic")
        .context("read the child's stdout")?;
    received.extend(lines.try_iter());

    let mut reports = Vec::new();
    let mut other = Vec::new();
    for line in received {
        match line {
            Line::Report(r) => reports.push(r),
            Line::Malformed(l) => bail!("the child printed a malformed report: {l:?}"),
            Line::Other(l) => other.push(l),
        }
    }
    if status.signal() != Some(libc::SIGKILL) {
        bail!(
            "the child ended by itself ({status}) before the kill; it printed:\n{}",
            other.join("\n")
        );
    }
    Ok(ChildRun {
        reports,
        time_to_first_ack,
    })
}

fn wait_for_first_ack(lines: &Receiver<Line>, received: &mut Vec<Line>) -> anyhow::Result<()> {
    let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
    loop {
        let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                bail!("no acknowledgement within {FIRST_ACK_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let said: Vec<&str> = received
                    .iter()
                    .filter_map(|l| match l {
                        Line::Other(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                bail!(
                    "the child closed its stdout before any acknowledgement; it printed:\n{}",
                    said.join("\n")
                );
            }
        };
        let is_ack = matches!(line, Line::Report(Report::Ack { .. }));
        received.push(line);
        if is_ack {
            return Ok(());
        }
    }
}

/// Reads the child's stdout to its end. A last piece without a newline is dropped: the child
/// writes each report whole with one write, so such a piece is never a report.
fn read_lines(stdout: ChildStdout, tx: mpsc::Sender<Line>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stdout);
    let mut buf = String::new();
    loop {
        buf.clear();
        if reader.read_line(&mut buf)? == 0 || !buf.ends_with('\n') {
            return Ok(());
        }
        let text = buf.trim_end_matches('\n');
        let line = match Report::parse(text) {
            Some(Ok(r)) => Line::Report(r),
            Some(Err(_)) => Line::Malformed(text.to_string()),
            None => Line::Other(text.to_string()),
        };
        // The parent stops listening only when it has failed already.
        if tx.send(line).is_err() {
            return Ok(());
        }
    }
}

/// The child, SIGKILLed and reaped when this is dropped, so a failing parent never leaves
/// it running.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn kill_and_wait(&mut self) -> std::io::Result<ExitStatus> {
        let mut child = self.0.take().expect("the child is killed once");
        sigkill(&child);
        child.wait()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            sigkill(&child);
            // Nothing more to do if reaping fails while the test is already failing.
            let _ = child.wait();
        }
    }
}

/// Sends SIGKILL to exactly this child. Its pid cannot have been reused: a child that has
/// exited stays a zombie, holding the pid, until `wait` reaps it, which happens only after.
fn sigkill(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
