//! Readings from `/proc`: a process's CPU time and resident memory, the kernel's listen-queue
//! counters, and the machine facts a result must carry to be comparable.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux x86_64).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t: &u64| *t > 0)
        .unwrap_or(100)
}

/// User plus system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32, ticks: u64) -> Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': index 0 is field 3 (state), so utime (field 14) is index 11, stime index 12.
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("no utime"))?;
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("no stime"))?;
    Ok((utime + stime) as f64 / ticks as f64)
}

/// Total CPU seconds of every process whose command name (`/proc/<pid>/comm`) is `name`
/// (for PostgreSQL, whose work happens in one backend process per connection).
pub fn cpu_seconds_of_command(name: &str, ticks: u64) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return f64::NAN };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|pid| cpu_seconds(pid, ticks).ok())
        .sum()
}

/// Resident set size (`VmRSS`) of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// The kernel's counters of connections dropped because an accept queue was full.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ListenCounters {
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

impl ListenCounters {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &ListenCounters) -> ListenCounters {
        ListenCounters {
            listen_overflows: self.listen_overflows.saturating_sub(before.listen_overflows),
            listen_drops: self.listen_drops.saturating_sub(before.listen_drops),
        }
    }
}

/// `TcpExtListenOverflows` and `TcpExtListenDrops` (what `nstat -az` shows), read from
/// `/proc/net/netstat`. They count for the whole network namespace.
pub fn listen_counters() -> Result<ListenCounters> {
    let text = std::fs::read_to_string("/proc/net/netstat").context("read /proc/net/netstat")?;
    parse_netstat(&text)
}

fn parse_netstat(text: &str) -> Result<ListenCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Err(anyhow!("no TcpExt lines in /proc/net/netstat"));
    };
    let mut out = ListenCounters::default();
    for (n, v) in names.split_whitespace().zip(values.split_whitespace()).skip(1) {
        match n {
            "ListenOverflows" => out.listen_overflows = v.parse().unwrap_or(0),
            "ListenDrops" => out.listen_drops = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok(out)
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Facts about the machine a figure depends on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub mem_total_bytes: Option<u64>,
    pub kernel: Option<String>,
    /// Soft limit on open files of this (the load generator's) process; the server inherits it.
    pub open_files_limit: Option<u64>,
    pub somaxconn: Option<String>,
    pub tcp_max_syn_backlog: Option<String>,
    pub ip_local_port_range: Option<String>,
    pub cpu_model: Option<String>,
}

impl Machine {
    pub fn read() -> Self {
        let mem_total_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        });
        let open_files_limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
            l.lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            mem_total_bytes,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            open_files_limit,
            somaxconn: read_trimmed("/proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: read_trimmed("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            ip_local_port_range: read_trimmed("/proc/sys/net/ipv4/ip_local_port_range"),
            cpu_model,
        }
    }
}

/// CPU and memory of one process, sampled at the start and end of a phase.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub pid: u32,
    pub ticks: u64,
}

impl Probe {
    pub fn new(pid: u32) -> Self {
        Self { pid, ticks: clock_ticks() }
    }

    pub fn cpu(&self) -> f64 {
        cpu_seconds(self.pid, self.ticks).unwrap_or(f64::NAN)
    }

    pub fn rss(&self) -> u64 {
        rss_bytes(self.pid).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_counters_are_found_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 1 7 9\nIpExt: A\nIpExt: 1\n";
        assert_eq!(parse_netstat(text).unwrap(), ListenCounters { listen_overflows: 7, listen_drops: 9 });
    }

    #[test]
    fn own_process_is_readable() {
        let p = Probe::new(std::process::id());
        assert!(p.rss() > 0);
        assert!(p.cpu() >= 0.0);
        assert!(listen_counters().is_ok());
    }
}
