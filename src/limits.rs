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

/// The memory this process may use: the smallest `memory.max` of its
/// cgroup and the cgroups above it (cgroup v2; `memory.limit_in_bytes` on
/// v1), and never more than the machine's memory.
pub fn memory_limit() -> u64 {
    let machine = machine_memory().unwrap_or(1 << 30);
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    cgroup_limit(&cgroups, std::path::Path::new("/sys/fs/cgroup"))
        .map_or(machine, |c| c.min(machine))
}

fn machine_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let rest = s.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The limit found walking from this process's cgroup up to the root;
/// `"max"` (no limit) and unreadable files count as no limit.
fn cgroup_limit(proc_self_cgroup: &str, root: &std::path::Path) -> Option<u64> {
    let mut best: Option<u64> = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let (base, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                if let Ok(n) = text.trim().parse::<u64>() {
                    best = Some(best.map_or(n, |b| b.min(n)));
                }
            }
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    best
}

/// `max_streams = "auto"`: the smaller of the open-file limit less 256 and
/// 70% of memory at [`BYTES_PER_STREAM`].
pub fn auto_max_streams(nofile: u64, memory: u64) -> usize {
    let by_files = nofile.saturating_sub(256);
    let by_memory = memory / 10 * 7 / BYTES_PER_STREAM;
    by_files.min(by_memory).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_the_smaller_bound() {
        // 20,000 files: 19,744 streams; 1 GiB at 70%: 45,875 streams.
        assert_eq!(auto_max_streams(20_000, 1 << 30), 19_744);
        assert_eq!(auto_max_streams(1_000_000, 100 << 20), 4_480);
        assert_eq!(auto_max_streams(100, 1 << 30), 1);
    }

    #[test]
    fn cgroup_v2_takes_the_smallest_limit_up_the_tree() {
        let root = std::env::temp_dir().join(format!("sidecast-cg-{}", std::process::id()));
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("memory.max"), "max\n").unwrap();
        std::fs::write(root.join("a/memory.max"), "1048576\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "4194304\n").unwrap();
        assert_eq!(cgroup_limit("0::/a/b\n", &root), Some(1 << 20));
        assert_eq!(cgroup_limit("0::/\n", &root), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
