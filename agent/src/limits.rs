//! A process's resource limits as the config states them (`cpu_quota`, `memory_limit`),
//! and the values the kernel's cgroup files take for them.
//!
//! Sizes follow systemd's `MemoryMax=` and Docker's `--memory`: `K`, `M`, `G`, `T` are
//! powers of 1024, as are `KiB` .. `TiB`. `GB` and friends are refused rather than
//! guessed, since half the tools an operator knows read them as 10^9 and half as 2^30.

use std::fmt;

/// The CFS period the quota is a share of; the kernel's default, and systemd's.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Below this the kernel kills a process before it has loaded its libraries, which
/// an operator never means.
const MIN_MEMORY: u64 = 4 << 20;

/// A single CPU may not be given less than the kernel's 1 ms quota floor.
const MIN_CPU_QUOTA: f64 = 0.01;
const MAX_CPU_QUOTA: f64 = 4096.0;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// CPUs' worth of time per period: 2.0 is two whole CPUs.
    pub cpu_quota: Option<f64>,
    pub memory_limit: Option<MemoryLimit>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.cpu_quota.is_none() && self.memory_limit.is_none()
    }
}

/// A byte count that remembers how to read back as the operator wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(pub u64);

impl fmt::Display for MemoryLimit {
    /// The largest unit that divides the value: "2GiB", "1536MiB", "4194305B".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if self.0 >= 1 << shift && self.0 & ((1 << shift) - 1) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Parses "2GiB", "512M", "1.5G" or a plain byte count "1073741824".
pub fn parse_memory(text: &str) -> Result<MemoryLimit, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" | "m" => 20,
        "G" | "GiB" | "g" => 30,
        "T" | "TiB" | "t" => 40,
        "KB" | "MB" | "GB" | "TB" | "kB" => {
            return Err(format!(
                "invalid memory limit {text:?}: {unit} is ambiguous; write {}iB for powers of 1024",
                &unit[..1].to_ascii_uppercase()
            ));
        }
        _ => {
            return Err(format!(
                "invalid memory limit {text:?}: expected a size such as \"2GiB\", \"512MiB\" or a byte count"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("invalid memory limit {text:?}: {number:?} is not a number"))?;
    let bytes = value * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 / 2.0 {
        return Err(format!("invalid memory limit {text:?}: too large"));
    }
    // Whole pages: the kernel rounds down to them anyway, and reporting what it holds
    // beats reporting what was asked.
    let bytes = (bytes as u64) / 4096 * 4096;
    if bytes < MIN_MEMORY {
        return Err(format!(
            "invalid memory limit {text:?}: at least {} is needed to start a process",
            MemoryLimit(MIN_MEMORY)
        ));
    }
    Ok(MemoryLimit(bytes))
}

pub fn check_cpu_quota(quota: f64) -> Result<f64, String> {
    if quota.is_finite() && (MIN_CPU_QUOTA..=MAX_CPU_QUOTA).contains(&quota) {
        Ok(quota)
    } else {
        Err(format!(
            "invalid cpu_quota {quota}: expected CPUs from {MIN_CPU_QUOTA} to {MAX_CPU_QUOTA}, such as 2.0"
        ))
    }
}

/// Microseconds of CPU time per [`CPU_PERIOD_US`].
pub fn cpu_quota_us(quota: f64) -> u64 {
    (quota * CPU_PERIOD_US as f64).round() as u64
}

/// cgroup v2's `cpu.max`: "200000 100000" for two CPUs, "max 100000" for none.
pub fn cpu_max(quota: Option<f64>) -> String {
    match quota {
        Some(q) => format!("{} {CPU_PERIOD_US}", cpu_quota_us(q)),
        None => format!("max {CPU_PERIOD_US}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_1024_and_read_back_as_written() {
        assert_eq!(parse_memory("2GiB"), Ok(MemoryLimit(2 << 30)));
        assert_eq!(parse_memory("2G"), Ok(MemoryLimit(2 << 30)));
        assert_eq!(parse_memory(" 512 MiB "), Ok(MemoryLimit(512 << 20)));
        assert_eq!(parse_memory("1.5G"), Ok(MemoryLimit(1536 << 20)));
        assert_eq!(parse_memory("67108864"), Ok(MemoryLimit(64 << 20)));
        assert_eq!(MemoryLimit(2 << 30).to_string(), "2GiB");
        assert_eq!(MemoryLimit(1536 << 20).to_string(), "1536MiB");
        assert_eq!(MemoryLimit(4096 * 1025).to_string(), "4100KiB");
    }

    #[test]
    fn ambiguous_tiny_and_junk_sizes_are_refused_with_a_reason() {
        assert!(parse_memory("2GB").unwrap_err().contains("write GiB"));
        assert!(parse_memory("1MiB").unwrap_err().contains("at least 4MiB"));
        assert!(parse_memory("1.2.3G").unwrap_err().contains("not a number"));
        assert!(
            parse_memory("lots")
                .unwrap_err()
                .contains("expected a size")
        );
        assert!(
            parse_memory("2 parsecs")
                .unwrap_err()
                .contains("expected a size")
        );
        assert!(
            parse_memory("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_memory("").is_err());
    }

    #[test]
    fn cpu_quota_is_a_share_of_the_period() {
        assert_eq!(cpu_max(Some(2.0)), "200000 100000");
        assert_eq!(cpu_max(Some(0.5)), "50000 100000");
        assert_eq!(cpu_max(None), "max 100000");
        assert!(check_cpu_quota(0.0).is_err());
        assert!(check_cpu_quota(f64::NAN).is_err());
        assert!(check_cpu_quota(-1.0).is_err());
        assert_eq!(check_cpu_quota(2.0), Ok(2.0));
    }
}
