//! The marker sweep: which processes carry [`MARK_ENV`]`=<mark>` in their environment,
//! found by reading every `/proc/<pid>/environ`. Builds that end together share one pass
//! over `/proc` instead of one each: every environment is read once and its marker value
//! looked up among all the marks asked for.
//!
//! A pass only answers callers that asked before it began: a pass already under way may
//! have read `/proc` before a process the caller cares about was spawned (or before the
//! caller killed the group it now checks), so a caller arriving during a pass waits for
//! the next one, which runs for everybody who arrived meanwhile.
//!
//! Passes begin at most every [`PASS_GAP`]: a caller arriving sooner after the last
//! pass began waits for the rest of the gap, so the builds ending within it share the
//! next pass. Without it, at a few hundred build ends a second most passes would serve
//! a single caller (a pass takes about as long as the time between two build ends); the
//! gap adds at most its length to the end of a build. Blocking: callers run on blocking
//! threads (`Tree::kill`), so a `Mutex` and a `Condvar` do.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::tree::MARK_ENV;

/// The least time between the beginnings of two passes of the host's sweeper.
pub(crate) const PASS_GAP: Duration = Duration::from_millis(5);

/// What one pass does: for each of the marks, the pids that carry it.
type Scan = dyn Fn(&HashSet<String>) -> HashMap<String, Vec<u32>> + Send + Sync;

/// Passes over `/proc` shared by concurrent callers.
pub(crate) struct Sweeper {
    state: Mutex<State>,
    done: Condvar,
    scan: Box<Scan>,
    /// The least time between the beginnings of two passes.
    gap: Duration,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Passes begun so far (the number of the latest).
    started: u64,
    /// Passes finished so far (they finish in order: one runs at a time).
    finished: u64,
    /// Whether a pass runs now.
    running: bool,
    /// When the latest pass began.
    last_start: Option<Instant>,
    /// The marks waited for, with how many callers wait for each.
    wanted: HashMap<String, usize>,
    /// Each wanted mark's pids from the latest finished pass that looked for it.
    found: HashMap<String, Vec<u32>>,
}

/// The host's sweeper (marks are unique on the host: every executor in this process
/// shares it).
static SWEEPER: LazyLock<Sweeper> = LazyLock::new(|| Sweeper::new(Box::new(scan_proc), PASS_GAP));

/// Pids (other than ours) whose environment holds `MARK_ENV=<mark>`, from a pass over
/// `/proc` that began after this call did. Blocking.
pub(crate) fn marked(mark: &str) -> Vec<u32> {
    SWEEPER.find(mark)
}

impl Sweeper {
    /// A sweeper whose passes run `scan` and begin at least `gap` apart.
    pub(crate) fn new(scan: Box<Scan>, gap: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            scan,
            gap,
        }
    }

    /// The pids carrying `mark`, from a pass that began after this call: runs that pass
    /// itself when none runs and the gap since the last one passed, else waits for it
    /// (run by whichever waiter gets there first).
    pub(crate) fn find(&self, mark: &str) -> Vec<u32> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *st.wanted.entry(mark.to_string()).or_default() += 1;
        // The first pass that begins after now.
        let target = st.started + 1;
        loop {
            if st.finished >= target {
                break;
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let now = Instant::now();
            if let Some(due) = st.last_start.map(|t| t + self.gap)
                && now < due
            {
                st = self
                    .done
                    .wait_timeout(st, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            st.last_start = Some(now);
            st.running = true;
            st.started += 1;
            let marks: HashSet<String> = st.wanted.keys().cloned().collect();
            drop(st);
            // A panicking scan must not leave `running` set: everyone would wait forever.
            let found =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.scan)(&marks)))
                    .unwrap_or_default();
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Only for marks still wanted: a caller that left while this pass ran (its
            // answer came from an earlier pass) must not leave an entry behind.
            for m in marks {
                if st.wanted.contains_key(&m) {
                    let pids = found.get(&m).cloned().unwrap_or_default();
                    st.found.insert(m, pids);
                }
            }
            st.finished = st.started;
            st.running = false;
            self.done.notify_all();
        }
        // `found[mark]` comes from a pass >= target: every pass since the request looked
        // for `mark`, which stays wanted until this caller leaves.
        let pids = st.found.get(mark).cloned().unwrap_or_default();
        let left = st.wanted.get_mut(mark).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            st.wanted.remove(mark);
            st.found.remove(mark);
        }
        pids
    }
}

/// One pass over `/proc`: each process's [`MARK_ENV`] value looked up among `marks`.
fn scan_proc(marks: &HashSet<String>) -> HashMap<String, Vec<u32>> {
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let prefix = format!("{MARK_ENV}=");
    let mut buf = Vec::new();
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
    {
        let Some(len) = read_environ(pid, &mut buf) else {
            continue;
        };
        for var in buf[..len].split(|b| *b == 0) {
            if let Some(value) = var.strip_prefix(prefix.as_bytes())
                && let Ok(value) = std::str::from_utf8(value)
                && marks.contains(value)
            {
                let pids = out.entry(value.to_string()).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    out
}

/// Reads `/proc/<pid>/environ` into `buf` (open, one read for the usual environment,
/// close: no `stat` for a size hint, which procfs does not give) and returns its length;
/// `None` when it cannot be read (gone, or another user's). `buf` is only ever grown.
fn read_environ(pid: u32, buf: &mut Vec<u8>) -> Option<usize> {
    if buf.is_empty() {
        buf.resize(64 * 1024, 0);
    }
    let mut f = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[filled..]) {
            Ok(0) => return Some(filled),
            Ok(n) => {
                filled += n;
                // procfs fills the whole buffer unless the environment ended.
                if filled < buf.len() {
                    return Some(filled);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    /// A `sleep` carrying `mark`, killed when dropped.
    struct Marked(Child);

    impl Marked {
        fn spawn(mark: &str) -> Self {
            Self(
                Command::new("/bin/sleep")
                    .arg("300")
                    .env(MARK_ENV, mark)
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        }
        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Marked {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Until `/proc/<pid>/environ` shows the marker (the child has exec'd `sleep`).
    fn wait_marked(p: &Marked, mark: &str) {
        let needle = format!("{MARK_ENV}={mark}");
        let mut buf = Vec::new();
        for _ in 0..500 {
            if let Some(len) = read_environ(p.pid(), &mut buf)
                && buf[..len]
                    .split(|b| *b == 0)
                    .any(|v| v == needle.as_bytes())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("process {} never showed its marker", p.pid());
    }

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    #[test]
    fn concurrent_callers_each_get_exactly_their_own_processes_from_shared_passes() {
        let base = tempfile::tempdir().unwrap();
        let marks: Vec<String> = (0..12)
            .map(|i| format!("{}/builds/{i}", base.path().display()))
            .collect();
        // Two processes per mark, none for the last two marks.
        let procs: Vec<(usize, Marked)> = (0..10)
            .flat_map(|i| [(i, Marked::spawn(&marks[i])), (i, Marked::spawn(&marks[i]))])
            .collect();
        for (i, p) in &procs {
            wait_marked(p, &marks[*i]);
        }
        let passes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sweeper = Arc::new(Sweeper::new(
            {
                let passes = passes.clone();
                Box::new(move |m| {
                    passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    scan_proc(m)
                })
            },
            Duration::ZERO,
        ));
        let callers: Vec<_> = (0..48)
            .map(|c| {
                let (sweeper, mark) = (sweeper.clone(), marks[c % marks.len()].clone());
                std::thread::spawn(move || (c % 12, sweeper.find(&mark)))
            })
            .collect();
        for t in callers {
            let (i, got) = t.join().unwrap();
            let want: Vec<u32> = procs
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, p)| p.pid())
                .collect();
            assert_eq!(sorted(got), sorted(want), "mark {i}");
        }
        assert!(passes.load(std::sync::atomic::Ordering::SeqCst) <= 48);
        // Nothing is kept once every caller left.
        let st = sweeper.state.lock().unwrap();
        assert!(st.wanted.is_empty() && st.found.is_empty() && !st.running);
    }

    #[test]
    fn a_caller_arriving_during_a_pass_waits_for_the_next_one() {
        let base = tempfile::tempdir().unwrap();
        let mark = format!("{}/builds/late", base.path().display());
        // The first pass reads /proc, then holds until the test lets it finish.
        let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(Some((read_tx, go_rx)));
        let sweeper = Arc::new(Sweeper::new(
            Box::new(move |m| {
                let found = scan_proc(m);
                if let Some((read, go)) = gate.lock().unwrap().take() {
                    read.send(()).unwrap();
                    go.recv().unwrap();
                }
                found
            }),
            Duration::ZERO,
        ));
        // An early caller starts the first pass, which finds nothing yet.
        let early = {
            let (s, m) = (sweeper.clone(), mark.clone());
            std::thread::spawn(move || s.find(&m))
        };
        read_rx.recv().unwrap();
        // Spawned after that pass read /proc; asked for after it was spawned.
        let late_proc = Marked::spawn(&mark);
        wait_marked(&late_proc, &mark);
        let late = {
            let (s, m) = (sweeper.clone(), mark.clone());
            std::thread::spawn(move || s.find(&m))
        };
        // Let the late caller register before the first pass ends.
        while sweeper.state.lock().unwrap().wanted.get(&mark) != Some(&2) {
            std::thread::sleep(Duration::from_millis(1));
        }
        go_tx.send(()).unwrap();
        // The early caller may get the first pass (which predates the process) or, when
        // it wakes late, the second; the late caller only the second.
        let early = early.join().unwrap();
        assert!(
            early.is_empty() || early == vec![late_proc.pid()],
            "{early:?}"
        );
        assert_eq!(late.join().unwrap(), vec![late_proc.pid()]);
    }

    #[test]
    fn callers_arriving_within_the_gap_share_one_pass() {
        let passes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sweeper = Arc::new(Sweeper::new(
            {
                let passes = passes.clone();
                Box::new(move |m: &HashSet<String>| {
                    passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    m.iter()
                        .map(|m| (m.clone(), vec![m.len() as u32]))
                        .collect()
                })
            },
            Duration::from_millis(400),
        ));
        let began = std::time::Instant::now();
        assert_eq!(sweeper.find("a"), vec![1], "the first pass runs at once");
        let callers: Vec<_> = ["bb", "ccc", "bb", "dddd"]
            .into_iter()
            .map(|m| {
                let s = sweeper.clone();
                std::thread::spawn(move || (m.len() as u32, s.find(m)))
            })
            .collect();
        for t in callers {
            let (want, got) = t.join().unwrap();
            assert_eq!(got, vec![want]);
        }
        assert!(began.elapsed() >= Duration::from_millis(400));
        assert_eq!(passes.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn the_host_sweeper_finds_a_marked_process() {
        let base = tempfile::tempdir().unwrap();
        let mark = format!("{}/builds/1", base.path().display());
        let p = Marked::spawn(&mark);
        wait_marked(&p, &mark);
        assert_eq!(marked(&mark), vec![p.pid()]);
        assert!(marked(&format!("{mark}0")).is_empty(), "exact marks only");
    }
}
