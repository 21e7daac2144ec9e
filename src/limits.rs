//! Resource limits: the open-file limit raised to its hard maximum at
//! start, and `max_streams = "auto"` derived from it and from memory.

/// Bytes budgeted per stream for `max_streams = "auto"`, socket buffers
/// included.
pub const BYTES_PER_STREAM: u64 = 16 * 1024;

/// Raises the soft open-file limit to the hard one; returns the limit now
/// in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The memory this process may use: the cgroup's `memory.max`, else the
/// machine's memory.
pub fn memory_limit() -> u64 {
    if let Ok(s) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(n) = s.trim().parse::<u64>() {
            return n;
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/meminfo") {
        for line in s.lines() {
            if let Some(rest) = line.strip_prefix("MemTotal:") {
                if let Some(kb) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    return kb * 1024;
                }
            }
        }
    }
    1 << 30
}

/// `max_streams = "auto"`: the smaller of the open-file limit less 256 and
/// 70% of memory at [`BYTES_PER_STREAM`].
pub fn auto_max_streams(nofile: u64, memory: u64) -> usize {
    let by_files = nofile.saturating_sub(256);
    let by_memory = memory / 10 * 7 / BYTES_PER_STREAM;
    by_files.min(by_memory).max(1) as usize
}
