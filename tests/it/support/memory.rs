//! The process's resident memory, for tests that check it stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Resident memory of this process in KiB (`VmRSS` in `/proc/self/status`).
pub fn resident_kib() -> u64 {
    resident_kib_in("/proc/self/status")
}

/// Resident memory of process `pid` in KiB.
pub fn resident_kib_of(pid: u32) -> u64 {
    resident_kib_in(&format!("/proc/{pid}/status"))
}

fn resident_kib_in(path: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Samples resident memory every few milliseconds on a thread of its own, keeping the
/// highest value seen, until stopped.
pub struct PeakResident {
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl PeakResident {
    pub fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(resident_kib()));
        let running = Arc::new(AtomicBool::new(true));
        let sampler = std::thread::spawn({
            let (peak, running) = (peak.clone(), running.clone());
            move || {
                while running.load(Ordering::SeqCst) {
                    peak.fetch_max(resident_kib(), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Self {
            peak,
            running,
            sampler: Some(sampler),
        }
    }

    /// Stops sampling and answers the highest resident memory seen, in KiB.
    pub fn stop(mut self) -> u64 {
        self.running.store(false, Ordering::SeqCst);
        if let Some(sampler) = self.sampler.take() {
            sampler.join().expect("the sampler thread");
        }
        self.peak.fetch_max(resident_kib(), Ordering::SeqCst);
        self.peak.load(Ordering::SeqCst)
    }
}
