//! Whether the tool and the proxy may open as many sockets as a run needs. The proxy
//! inherits the tool's limit on open files, so one check covers both; it is read from
//! `/proc`, not raised, so that the tool needs no `unsafe` and no further dependency.

/// Descriptors beyond the streams' sockets: the runtime, the database pool, the log
/// pipe, the key file, the metrics listener.
const SPARE: u64 = 256;

/// `Ok` when the soft limit on open files allows `streams` streams at once. Each stream
/// takes two sockets in each process: the proxy holds the client's connection and its
/// own to the model, the tool the client's end and the model's.
pub fn enough_files(streams: usize) -> Result<(), String> {
    let needed = 2 * streams as u64 + SPARE;
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| soft_open_files(&limits))
    else {
        // Not Linux, or /proc is hidden: the run finds out the hard way.
        return Ok(());
    };
    if limit >= needed {
        Ok(())
    } else {
        Err(format!(
            "{streams} streams need {needed} open files in the tool and in the proxy, but \
             the limit is {limit}: raise it (`ulimit -n {needed}`) or run fewer streams"
        ))
    }
}

/// The soft limit on the "Max open files" line of `/proc/<pid>/limits`; `u64::MAX` when
/// it says unlimited.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_read_from_its_line() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63456                63456                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(soft_open_files(unlimited), Some(u64::MAX));
        assert_eq!(soft_open_files("Max processes 1 1 processes\n"), None);
    }

    #[test]
    fn this_process_can_hold_a_few_streams() {
        assert!(enough_files(1).is_ok());
        let error = enough_files(usize::MAX / 4).err().unwrap();
        assert!(error.contains("ulimit -n"), "{error}");
    }
}
