//! What a rolling operation asks for: the `rollout` of a batch request, its validation,
//! and the batches it cuts a list of hosts into.
//!
//! Validation is whole: every bad field is named at once, so an operator fixes a
//! request in one go instead of one refusal at a time. Both faces hand the same
//! `RolloutInput` over; only how they spell a field differs.

use serde::{Deserialize, Serialize};

/// The longest pause between two batches: a day. Longer is a rollout that belongs in
/// several tasks, and a bound keeps a typo (seconds for milliseconds) from parking
/// hosts locked for years.
pub const MAX_PAUSE_SECONDS: u32 = 86_400;

/// The longest a host is watched after Start all: an hour, the longest any of the
/// tools this replaces documents for a health check.
pub const MAX_MIN_HEALTHY_SECONDS: u32 = 3_600;

/// A validated rollout, as the task keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub batch_size: BatchSize,
    /// Failed hosts tolerated: the next batch starts while failed hosts <= this.
    pub max_failed_hosts: u32,
    pub pause_seconds: u32,
    pub min_healthy_seconds: u32,
    /// A canary: the task holds itself after the first batch until resumed.
    pub pause_after_first_batch: bool,
}

/// How many hosts go at once: a count, or a share of the task's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BatchSizeWire", try_from = "BatchSizeWire")]
pub enum BatchSize {
    Hosts(u32),
    /// 1 to 100.
    Percent(u8),
}

/// A batch size on the wire: a number of hosts, or a string ("25%" or "3").
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BatchSizeWire {
    Hosts(u32),
    Text(String),
}

impl From<BatchSize> for BatchSizeWire {
    fn from(size: BatchSize) -> Self {
        match size {
            BatchSize::Hosts(n) => BatchSizeWire::Hosts(n),
            BatchSize::Percent(p) => BatchSizeWire::Text(format!("{p}%")),
        }
    }
}

impl TryFrom<BatchSizeWire> for BatchSize {
    type Error = String;
    fn try_from(wire: BatchSizeWire) -> Result<Self, Self::Error> {
        match wire {
            BatchSizeWire::Hosts(n) => parse_batch_size(&n.to_string()),
            BatchSizeWire::Text(text) => parse_batch_size(&text),
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Hosts(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A rollout as a client sent it, each field absent or as typed; the faces parse
/// types, `validate` judges values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutInput {
    /// "3", "25%": a face turns a JSON number into its text.
    pub batch_size: Option<String>,
    pub max_failed_hosts: Option<i64>,
    pub pause_seconds: Option<i64>,
    pub min_healthy_seconds: Option<i64>,
    pub pause_after_first_batch: Option<bool>,
    /// Fields a face could not read as their type (a string for a number): reported
    /// with the rest, so that one answer names every bad field.
    pub unreadable: Vec<Problem>,
}

/// A field of a rollout, named by each face in its own spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RolloutField {
    BatchSize,
    MaxFailedHosts,
    PauseSeconds,
    MinHealthySeconds,
    PauseAfterFirstBatch,
}

/// One bad field of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: RolloutField,
    pub rejected: String,
    pub message: String,
}

impl std::fmt::Display for RolloutField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutField::BatchSize => "batch size",
            RolloutField::MaxFailedHosts => "max failed hosts",
            RolloutField::PauseSeconds => "pause seconds",
            RolloutField::MinHealthySeconds => "min healthy seconds",
            RolloutField::PauseAfterFirstBatch => "pause after first batch",
        })
    }
}

impl RolloutInput {
    /// The rollout, or every field that is wrong. Absent fields take Nomad's defaults:
    /// one host at a time, no failure tolerated, no pause, no health wait.
    pub fn validate(&self) -> Result<Rollout, Vec<Problem>> {
        let mut problems = self.unreadable.clone();
        let batch_size = match &self.batch_size {
            None => Some(BatchSize::Hosts(1)),
            Some(text) => parse_batch_size(text)
                .map_err(|message| {
                    problems.push(Problem {
                        field: RolloutField::BatchSize,
                        rejected: text.clone(),
                        message,
                    })
                })
                .ok(),
        };
        let mut count = |field, value: Option<i64>, max: u32| -> u32 {
            let Some(value) = value else { return 0 };
            match u32::try_from(value) {
                Ok(n) if n <= max => n,
                _ => {
                    let message = if value < 0 {
                        format!("must be 0 or more, got {value}")
                    } else {
                        format!("must be at most {max}, got {value}")
                    };
                    problems.push(Problem {
                        field,
                        rejected: value.to_string(),
                        message,
                    });
                    0
                }
            }
        };
        let max_failed_hosts = count(
            RolloutField::MaxFailedHosts,
            self.max_failed_hosts,
            u32::MAX,
        );
        let pause_seconds = count(
            RolloutField::PauseSeconds,
            self.pause_seconds,
            MAX_PAUSE_SECONDS,
        );
        let min_healthy_seconds = count(
            RolloutField::MinHealthySeconds,
            self.min_healthy_seconds,
            MAX_MIN_HEALTHY_SECONDS,
        );
        problems.sort_by_key(|p| p.field);
        match batch_size {
            Some(batch_size) if problems.is_empty() => Ok(Rollout {
                batch_size,
                max_failed_hosts,
                pause_seconds,
                min_healthy_seconds,
                pause_after_first_batch: self.pause_after_first_batch.unwrap_or(false),
            }),
            _ => Err(problems),
        }
    }
}

/// "3" is three hosts, "25%" a quarter of them; anything else says what it should be.
/// Exactly these spellings: digits without a sign, spaces or leading zeros, then `%`
/// or nothing, so that "50 %" or " 3" is a typo the client hears about, not a guess.
fn parse_batch_size(text: &str) -> Result<BatchSize, String> {
    let expected = "must be a number of hosts (1 or more) or a percentage from 1% to 100%";
    let (digits, percent) = match text.strip_suffix('%') {
        Some(digits) => (digits, true),
        None => (text, false),
    };
    if digits == "0" {
        return Err(format!("{expected}, got {text}"));
    }
    let exact = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !exact {
        return Err(format!(
            "{expected}, written as 3 or \"25%\" (no spaces, signs or leading zeros), got {text:?}"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{expected}, got {text}"))?;
    if percent {
        return match u8::try_from(n) {
            Ok(p @ 1..=100) => Ok(BatchSize::Percent(p)),
            _ => Err(format!("{expected}; {n}% is more than every host")),
        };
    }
    u32::try_from(n)
        .map(BatchSize::Hosts)
        .map_err(|_| format!("{expected}, got {n}"))
}

impl Rollout {
    /// How many hosts each batch takes out of `hosts`: a share rounds up, so "25%" of
    /// 10 hosts is 3, and a batch is never empty nor larger than the task.
    pub fn hosts_per_batch(&self, hosts: usize) -> usize {
        let per = match self.batch_size {
            BatchSize::Hosts(n) => n as usize,
            BatchSize::Percent(p) => (hosts * usize::from(p)).div_ceil(100),
        };
        per.clamp(1, hosts.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(batch_size: &str) -> RolloutInput {
        RolloutInput {
            batch_size: Some(batch_size.to_string()),
            ..RolloutInput::default()
        }
    }

    #[test]
    fn absent_fields_take_one_host_at_a_time_and_no_tolerance() {
        let rollout = RolloutInput::default().validate().unwrap();
        assert_eq!(
            rollout,
            Rollout {
                batch_size: BatchSize::Hosts(1),
                max_failed_hosts: 0,
                pause_seconds: 0,
                min_healthy_seconds: 0,
                pause_after_first_batch: false,
            }
        );
    }

    #[test]
    fn batch_sizes_are_counts_or_percentages_within_bounds() {
        assert_eq!(
            input("3").validate().unwrap().batch_size,
            BatchSize::Hosts(3)
        );
        assert_eq!(
            input("25%").validate().unwrap().batch_size,
            BatchSize::Percent(25)
        );
        assert_eq!(
            input("100%").validate().unwrap().batch_size,
            BatchSize::Percent(100)
        );
        for bad in [
            "0",
            "-1",
            "0%",
            "101%",
            "2.5",
            "12.5%",
            "abc",
            "",
            "%",
            "99999999999",
            "99999999999999999999999%",
            // Not exactly a count or a percentage.
            "50 %",
            " 25% ",
            " 3",
            "+3",
            "03",
            "3.0",
            "1e2",
            "25%%",
        ] {
            let problems = input(bad).validate().unwrap_err();
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].field, RolloutField::BatchSize, "{bad}");
            assert_eq!(problems[0].rejected, bad);
        }
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let problems = RolloutInput {
            batch_size: Some("0".to_string()),
            max_failed_hosts: Some(-1),
            pause_seconds: Some(-5),
            min_healthy_seconds: Some(i64::from(MAX_MIN_HEALTHY_SECONDS) + 1),
            pause_after_first_batch: Some(true),
            unreadable: Vec::new(),
        }
        .validate()
        .unwrap_err();
        let fields: Vec<RolloutField> = problems.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            vec![
                RolloutField::BatchSize,
                RolloutField::MaxFailedHosts,
                RolloutField::PauseSeconds,
                RolloutField::MinHealthySeconds
            ]
        );
        assert_eq!(problems[2].message, "must be 0 or more, got -5");
        assert_eq!(problems[3].message, "must be at most 3600, got 3601");
    }

    #[test]
    fn shares_round_up_and_batches_stay_within_the_task() {
        let of = |size, hosts| {
            Rollout {
                batch_size: size,
                ..RolloutInput::default().validate().unwrap()
            }
            .hosts_per_batch(hosts)
        };
        assert_eq!(of(BatchSize::Percent(25), 10), 3);
        assert_eq!(of(BatchSize::Percent(1), 10), 1);
        assert_eq!(of(BatchSize::Percent(100), 7), 7);
        assert_eq!(of(BatchSize::Hosts(10), 100), 10);
        assert_eq!(of(BatchSize::Hosts(50), 3), 3);
    }

    #[test]
    fn a_stored_rollout_reads_back_as_written() {
        let rollout = Rollout {
            batch_size: BatchSize::Percent(25),
            max_failed_hosts: 2,
            pause_seconds: 30,
            min_healthy_seconds: 10,
            pause_after_first_batch: true,
        };
        let json = serde_json::to_value(rollout).unwrap();
        assert_eq!(json["batchSize"], "25%");
        assert_eq!(serde_json::from_value::<Rollout>(json).unwrap(), rollout);
        let count = serde_json::to_value(Rollout {
            batch_size: BatchSize::Hosts(3),
            ..rollout
        })
        .unwrap();
        assert_eq!(count["batchSize"], 3);
    }
}
