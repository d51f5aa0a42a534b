//! CPU time spent by the processes of a run, from `/proc`: what each request cost the
//! proxy, the database server and the load generator (upstream and clients), so that a
//! throughput ratio can be read as where the machine's cores went.

/// `/proc/<pid>/stat` counts in clock ticks of `USER_HZ`, which Linux fixes at 100 on
/// the architectures this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds one process has used so far (user and system), or 0 when it is gone.
pub fn process_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| ticks(&stat))
        .map_or(0.0, |ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds used so far by every running process named `postgres` (the server and
/// its backends; the proxy's pool keeps its backends for the whole run). Zero when no
/// such process is visible, as with SQLite, which runs inside the proxy.
pub fn postgres_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .filter_map(|stat| ticks(&stat))
        .sum::<u64>() as f64
        / TICKS_PER_SECOND
}

/// utime + stime: the 14th and 15th fields, counted after the parenthesised name, which
/// may itself hold spaces.
fn ticks(stat: &str) -> Option<u64> {
    let (user, system) = user_and_system(stat)?;
    Some(user + system)
}

/// utime and stime, apart.
fn user_and_system(stat: &str) -> Option<(u64, u64)> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// The proxy's CPU split between its own code (user) and the kernel's work for it
/// (system: sockets, wake-ups), and how often its threads were switched out: what a
/// change that saves instructions but adds a round trip or a wake-up would show. Apart,
/// the CPU of sqlx's SQLite worker threads (one a connection, where SQLite itself runs
/// each statement), included in user and system: what the database's own work costs a
/// request inside the proxy, beside what the layer and the runtime cost around it. A
/// worker thread that ends within the window (its connection closed) takes its ticks
/// with it, and the figure reads low.
#[derive(Clone, Copy, Default)]
pub struct Split {
    user: f64,
    system: f64,
    switches: f64,
    sqlite: f64,
}

/// How sqlx names the thread that runs a SQLite connection (`sqlx-sqlite-worker-N`), as
/// `/proc` shows it: cut to 15 bytes.
const SQLITE_THREAD: &str = "(sqlx-sqlite-wor";

impl Split {
    /// The process's user and system seconds, and its threads' context switches summed
    /// from `/proc/<pid>/task/*/status` (the process's own status counts only its first
    /// thread). Zeros when the process is gone.
    pub fn take(pid: u32) -> Self {
        let (user, system) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| user_and_system(&stat))
            .unwrap_or_default();
        let (mut switches, mut sqlite) = (0, 0);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok);
        for task in tasks {
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                switches += context_switches(&status);
            }
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                sqlite += sqlite_ticks(&stat);
            }
        }
        Self {
            user: user as f64 / TICKS_PER_SECOND,
            system: system as f64 / TICKS_PER_SECOND,
            switches: switches as f64,
            sqlite: sqlite as f64 / TICKS_PER_SECOND,
        }
    }

    /// Per request between `self` and `later`: user µs, system µs, context switches,
    /// µs on SQLite's worker threads.
    pub fn per_request(&self, later: &Split, requests: f64) -> [f64; 4] {
        let requests = requests.max(1.0);
        [
            (later.user - self.user).max(0.0) * 1e6 / requests,
            (later.system - self.system).max(0.0) * 1e6 / requests,
            (later.switches - self.switches).max(0.0) / requests,
            (later.sqlite - self.sqlite).max(0.0) * 1e6 / requests,
        ]
    }
}

/// A thread's CPU ticks when it is one of sqlx's SQLite workers, else 0.
fn sqlite_ticks(stat: &str) -> u64 {
    if !stat.contains(SQLITE_THREAD) {
        return 0;
    }
    ticks(stat).unwrap_or(0)
}

/// Voluntary and involuntary context switches of one thread's `status`.
fn context_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|line| line.contains("ctxt_switches:"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// CPU seconds of the three parties at one moment.
#[derive(Clone, Copy)]
pub struct Sample {
    proxy: f64,
    database: f64,
    generator: f64,
    split: Split,
}

impl Sample {
    pub fn take(proxy: u32) -> Self {
        Self {
            proxy: process_seconds(proxy),
            database: postgres_seconds(),
            generator: process_seconds(std::process::id()),
            split: Split::take(proxy),
        }
    }

    /// The proxy's user µs, system µs, context switches and µs on SQLite's worker threads
    /// per request between `self` and `later`.
    pub fn proxy_split(&self, later: &Sample, requests: f64) -> [f64; 4] {
        self.split.per_request(&later.split, requests)
    }

    /// Microseconds of CPU per request between `self` and `later`: proxy, database
    /// server, load generator.
    pub fn per_request(&self, later: &Sample, requests: f64) -> [f64; 3] {
        let per = |before: f64, after: f64| (after - before).max(0.0) * 1e6 / requests.max(1.0);
        [
            per(self.proxy, later.proxy),
            per(self.database, later.database),
            per(self.generator, later.generator),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_worker_threads_count_as_sqlite() {
        let fields = "S 1 2 3 4 5 6 7 8 9 10 17 25 0 0 20 0 4 0";
        let worker = format!("4242 (sqlx-sqlite-wor) {fields}");
        let runtime = format!("4243 (tokio-rt-worker) {fields}");
        assert_eq!(ticks(&worker), Some(42));
        assert_eq!(sqlite_ticks(&worker), 42);
        assert_eq!(sqlite_ticks(&runtime), 0);
        assert_eq!(sqlite_ticks("4244 (sqlx-sqlite-wor"), 0);
    }
}
