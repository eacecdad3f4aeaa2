//! A rolling task drawn one row per batch: each host's chain summed up to one glyph,
//! the running batch host by host (or step by step when it is large), the Wait node
//! between two batches, and runs of finished or untouched batches folded into one row
//! when there are many, so that a thousand hosts take a screen, not a thousand columns.

use std::collections::HashMap;

use serde::Deserialize as _;
use serde_json::Value;

use super::json::{BatchSize, Subtask, Task};

/// A batch of at most this many hosts shows one glyph per host; a larger one, counts.
const GLYPHS_MAX: usize = 16;
/// The running batch lists each of its hosts up to this many; a larger one, per step.
const HOST_LINES_MAX: usize = 8;
/// Up to this many batches, one row each; beyond, consecutive batches that are all
/// done, all pending, or all finished with failures share a row.
const ROWS_MAX: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Active,
    Done,
    Failed,
}

/// One host's chain in a word: where it stands and at which step.
#[derive(Debug, Clone, Copy)]
struct Host<'a> {
    state: State,
    glyph: &'static str,
    /// The step running, ready or failed; empty for a chain done or untouched.
    step: &'a str,
    start: Option<i64>,
    finish: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Pending,
    Done,
    /// Nothing runs any more and at least one host failed.
    Finished,
    Active,
}

/// "Stop all OCP agent processes" -> "Stop all": the words that tell the steps apart.
fn short(step: &str) -> &str {
    step.split(" OCP agent").next().unwrap_or(step)
}

fn host<'a>(chain: &[&'a Subtask]) -> Host<'a> {
    let start = chain.iter().filter_map(|s| s.start()).min();
    let finish = chain.iter().filter_map(|s| s.finish()).max();
    let make = |state, glyph, step| Host {
        state,
        glyph,
        step,
        start,
        finish,
    };
    if let Some(s) = chain.iter().find(|s| s.status.as_str() == "FAILED") {
        return make(State::Failed, "✘", s.name());
    }
    if let Some(s) = chain
        .iter()
        .find(|s| matches!(s.status.as_str(), "RUNNING" | "CANCELING"))
    {
        return make(State::Active, "▶", s.name());
    }
    if let Some(s) = chain.iter().find(|s| s.status.as_str() == "READY") {
        return make(State::Active, "○", s.name());
    }
    if !chain.is_empty() && chain.iter().all(|s| s.status.as_str() == "SUCCESSFUL") {
        return make(State::Done, "✔", "");
    }
    if chain.iter().all(|s| s.status.as_str() == "PENDING") {
        return make(State::Pending, "·", "");
    }
    // Between two steps: the next one is about to start.
    let next = chain
        .iter()
        .find(|s| s.status.as_str() == "PENDING")
        .map_or("?", |s| s.name());
    make(State::Active, "▶", next)
}

fn class(hosts: &[Host]) -> Class {
    let all = |state| hosts.iter().all(|h| h.state == state);
    if all(State::Done) {
        Class::Done
    } else if all(State::Pending) {
        Class::Pending
    } else if hosts
        .iter()
        .all(|h| matches!(h.state, State::Done | State::Failed))
    {
        Class::Finished
    } else {
        Class::Active
    }
}

fn count(hosts: &[Host], state: State) -> usize {
    hosts.iter().filter(|h| h.state == state).count()
}

/// "✔ 8  ▶ 2  ✘ 1", the states present only.
fn counts(hosts: &[Host]) -> String {
    [
        (State::Done, "✔"),
        (State::Active, "▶"),
        (State::Failed, "✘"),
        (State::Pending, "·"),
    ]
    .iter()
    .filter_map(|&(state, glyph)| {
        let n = count(hosts, state);
        (n > 0).then(|| format!("{glyph} {n}"))
    })
    .collect::<Vec<_>>()
    .join("  ")
}

fn range(word: &str, first: usize, last: usize) -> String {
    if first == last {
        format!("{word} {first}")
    } else {
        format!("{word}s {first}-{last}")
    }
}

fn seconds(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1e3)
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A row: one batch, or a run of alike batches (`first..=last`, 0-based).
struct Row {
    first: usize,
    last: usize,
    class: Class,
}

pub(super) fn render(task: &Value, labels: &[String]) -> Vec<String> {
    match Task::deserialize(task) {
        Ok(task) => Rolling::of(&task).lines(labels),
        Err(e) => vec![format!("task #{}: unreadable: {e}", task["id"])],
    }
}

/// A rolling task worked out batch by batch.
struct Rolling<'a> {
    task: &'a Task,
    /// Each host's chain summed up, in host order.
    hosts: Vec<Host<'a>>,
    /// Hosts a batch (the last one may have fewer).
    per: usize,
    batches: usize,
    /// Step names in id order, which is each chain's order.
    steps: Vec<&'a str>,
    /// The Wait node after each batch but the last.
    wait_after: Vec<Option<&'a Subtask>>,
    /// Where a paused rollout holds: before the first batch not yet let through.
    hold: Option<usize>,
    /// Where the budget stopped an ended rollout: the first barrier that never ran.
    stopped: Option<usize>,
    failed: usize,
}

impl<'a> Rolling<'a> {
    fn of(task: &'a Task) -> Rolling<'a> {
        let mut subtasks: Vec<&Subtask> = task.subtasks.iter().collect();
        subtasks.sort_by_key(|s| s.id);
        let n = subtasks
            .iter()
            .filter_map(|s| s.index())
            .max()
            .map_or(0, |i| i + 1);
        let per = task.rollout.per_batch();
        let batches = n.div_ceil(per);
        let mut chains: Vec<Vec<&Subtask>> = vec![Vec::new(); n];
        let mut waits: Vec<&Subtask> = Vec::new();
        for s in &subtasks {
            match s.index() {
                Some(i) => chains[i].push(*s),
                None if s.is_wait() => waits.push(*s),
                None => {}
            }
        }
        let hosts: Vec<Host> = chains.iter().map(|c| host(c)).collect();
        let wait_after = wait_after(&subtasks, &waits, per, batches);
        let first_unpassed = || {
            wait_after
                .iter()
                .position(|w| w.is_some_and(Subtask::unpassed))
        };
        let hold = task.paused.then(first_unpassed).flatten();
        let failed = count(&hosts, State::Failed);
        let stopped = (task.status.as_deref() == Some("FAILED") && failed > task.rollout.budget())
            .then(first_unpassed)
            .flatten();
        Rolling {
            task,
            hosts,
            per,
            batches,
            steps: steps(&subtasks),
            wait_after,
            hold,
            stopped,
            failed,
        }
    }

    fn lines(&self, labels: &[String]) -> Vec<String> {
        let mut lines = vec![self.title(), self.settings(), self.tally()];
        let rows = self.rows();
        let cells: Vec<[String; 3]> = rows.iter().map(|row| self.cells(row)).collect();
        let width = |k: usize| {
            cells
                .iter()
                .map(|c| c[k].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (w0, w1, w2) = (width(0), width(1), width(2));
        for (r, (row, [label, span, glyphs])) in rows.iter().zip(&cells).enumerate() {
            let members = self.members(row);
            let text = row_text(row, members);
            lines.push(format!("{label:w0$}  {span:w1$}  {glyphs:w2$}  {text}"));
            if row.class == Class::Active {
                lines.extend(active_lines(
                    members,
                    row.first * self.per,
                    labels,
                    &self.steps,
                ));
            }
            if r + 1 < rows.len()
                && let Some(wait) = self.wait_after.get(row.last).copied().flatten()
            {
                lines.push(self.wait_line(wait, row.last));
            }
        }
        lines.push(super::LEGEND.to_string());
        lines
    }

    /// "Batch restart OCP agent #9: RUNNING (paused)".
    fn title(&self) -> String {
        let task = self.task;
        format!(
            "{} #{}: {}{}",
            task.name.as_deref().unwrap_or("task"),
            task.id,
            task.status.as_deref().unwrap_or("?"),
            if task.paused { " (paused)" } else { "" }
        )
    }

    /// The rollout's settings; those left at their defaults are left out.
    fn settings(&self) -> String {
        let rollout = &self.task.rollout;
        let size = rollout
            .batch_size
            .as_ref()
            .map_or("1".to_string(), BatchSize::to_string);
        let mut settings = format!(
            "rolling: {} of {} (batchSize {size}), maxFailedHosts {}",
            plural(self.batches, "batch", "batches"),
            plural(self.per, "host", "hosts"),
            rollout.budget(),
        );
        if rollout.pause_seconds > 0 {
            settings.push_str(&format!(", pauseSeconds {}", rollout.pause_seconds));
        }
        if rollout.min_healthy_seconds > 0 {
            settings.push_str(&format!(
                ", minHealthySeconds {}",
                rollout.min_healthy_seconds
            ));
        }
        if rollout.pause_after_first_batch {
            settings.push_str(", pauseAfterFirstBatch");
        }
        settings
    }

    /// How many hosts are in each state, and whether that is past the budget.
    fn tally(&self) -> String {
        let budget = self.task.rollout.budget();
        format!(
            "hosts: {}{}",
            counts(&self.hosts),
            if self.failed > budget {
                format!("  (over the budget of {budget})")
            } else {
                String::new()
            }
        )
    }

    /// One row a batch; beyond `ROWS_MAX` batches, runs of alike ones share a row, but
    /// not across where a paused rollout holds.
    fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        for b in 0..self.batches {
            let class = class(self.span(b, b));
            match rows.last_mut() {
                Some(row)
                    if self.batches > ROWS_MAX
                        && class != Class::Active
                        && row.class == class
                        && self.hold != Some(row.last) =>
                {
                    row.last = b
                }
                _ => rows.push(Row {
                    first: b,
                    last: b,
                    class,
                }),
            }
        }
        rows
    }

    /// The hosts of batches `first..=last`.
    fn span(&self, first: usize, last: usize) -> &[Host<'a>] {
        let end = ((last + 1) * self.per).min(self.hosts.len());
        &self.hosts[first * self.per..end]
    }

    /// The hosts of a row's batches.
    fn members(&self, row: &Row) -> &[Host<'a>] {
        self.span(row.first, row.last)
    }

    /// A row's batches, its hosts, and their glyphs (or counts, when many).
    fn cells(&self, row: &Row) -> [String; 3] {
        let batches = self.batches;
        let label = if row.first == row.last {
            format!("batch {}/{batches}", row.first + 1)
        } else {
            format!("batches {}-{}/{batches}", row.first + 1, row.last + 1)
        };
        let span = self.members(row);
        let first = row.first * self.per;
        let glyphs = if span.len() <= GLYPHS_MAX {
            span.iter().map(|h| h.glyph).collect()
        } else {
            counts(span)
        };
        [label, range("host", first + 1, first + span.len()), glyphs]
    }

    /// The Wait node after batch `after`: passed, waiting, or why it holds.
    fn wait_line(&self, wait: &Subtask, after: usize) -> String {
        let pause_s = self.task.rollout.pause_seconds;
        let resume = format!("POST /api/v2/tasks/instances/{}/resume", self.task.id);
        let held = self.hold == Some(after);
        let text = match wait.status.as_str() {
            "SUCCESSFUL" => match (wait.start(), wait.finish()) {
                (Some(s), Some(f)) => format!("passed in {}", seconds(f - s)),
                _ => "passed".to_string(),
            },
            "RUNNING" | "CANCELING" if pause_s > 0 => {
                format!("waiting (pauseSeconds {pause_s})")
            }
            "RUNNING" | "CANCELING" => "checking the batch".to_string(),
            "READY" if held => format!("paused — resume with {resume}"),
            "PENDING" if held => {
                format!("paused: the rollout holds here after this batch — resume with {resume}")
            }
            "PENDING" | "READY" if self.stopped == Some(after) => format!(
                "stopped: {} failed, budget {}; no further batch starts",
                plural(self.failed, "host", "hosts"),
                self.task.rollout.budget()
            ),
            other => other.to_lowercase(),
        };
        format!("  └ wait  {} {text}", super::glyph(&wait.status))
    }
}

/// Step names in id order, which is each chain's order.
fn steps<'a>(subtasks: &[&'a Subtask]) -> Vec<&'a str> {
    let mut steps: Vec<&str> = Vec::new();
    for s in subtasks {
        if let (Some(_), Some(name)) = (s.index(), s.name.as_deref())
            && !steps.contains(&name)
        {
            steps.push(name);
        }
    }
    steps
}

/// The Wait node after batch b is the one whose upstreams are batch b's hosts (else,
/// the k-th Wait node comes after batch k).
fn wait_after<'a>(
    subtasks: &[&'a Subtask],
    waits: &[&'a Subtask],
    per: usize,
    batches: usize,
) -> Vec<Option<&'a Subtask>> {
    let by_id: HashMap<i64, &Subtask> = subtasks.iter().map(|s| (s.id, *s)).collect();
    let mut after: Vec<Option<&Subtask>> = vec![None; batches.saturating_sub(1)];
    for (k, w) in waits.iter().enumerate() {
        let b = w
            .upstreams
            .iter()
            .filter_map(|u| by_id.get(u))
            .filter_map(|s| s.index())
            .map(|i| i / per)
            .max()
            .unwrap_or(k);
        if let Some(slot) = after.get_mut(b)
            && slot.is_none()
        {
            *slot = Some(w);
        }
    }
    after
}

/// What a row says of its batches.
fn row_text(row: &Row, members: &[Host]) -> String {
    match row.class {
        Class::Pending => "pending".to_string(),
        Class::Done => {
            let start = members.iter().filter_map(|h| h.start).min();
            let finish = members.iter().filter_map(|h| h.finish).max();
            match (start, finish, row.first == row.last) {
                (Some(s), Some(f), true) => format!("done in {}", seconds(f - s)),
                _ => "done".to_string(),
            }
        }
        Class::Finished => match members {
            [one] => format!("failed at {}", short(one.step)),
            _ => format!(
                "{} failed, {} done",
                count(members, State::Failed),
                count(members, State::Done)
            ),
        },
        Class::Active => "running".to_string(),
    }
}

/// The running batch: host by host when it is small, else how many hosts are at
/// each step.
fn active_lines(members: &[Host], first: usize, labels: &[String], order: &[&str]) -> Vec<String> {
    if members.len() <= HOST_LINES_MAX {
        let name = |i: usize| {
            labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("host {}", i + 1))
        };
        let width = (0..members.len())
            .map(|k| name(first + k).chars().count())
            .max()
            .unwrap_or(0);
        return members
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let what = match h.state {
                    State::Done => "done",
                    State::Pending => "pending",
                    State::Active | State::Failed => short(h.step),
                };
                let label = name(first + k);
                format!("    {label:width$}  {} {what}", h.glyph)
            })
            .collect();
    }
    let mut steps: Vec<(&str, &str, usize)> = Vec::new();
    for h in members
        .iter()
        .filter(|h| matches!(h.state, State::Active | State::Failed))
    {
        match steps
            .iter_mut()
            .find(|(glyph, step, _)| *glyph == h.glyph && *step == h.step)
        {
            Some(entry) => entry.2 += 1,
            None => steps.push((h.glyph, h.step, 1)),
        }
    }
    steps.sort_by_key(|(glyph, step, _)| (order.iter().position(|s| s == step), *glyph == "✘"));
    let mut parts: Vec<String> = steps
        .iter()
        .map(|(glyph, step, n)| format!("{glyph} {} ×{n}", short(step)))
        .collect();
    for (state, word) in [(State::Done, "done"), (State::Pending, "not started")] {
        let n = count(members, state);
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    vec![format!("    {}", parts.join(", "))]
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::progress::render;
    use crate::rest::time_at;

    const CHAIN: [&str; 5] = [
        "Prepare restart OCP agent",
        "Restart pos proxy",
        "Stop all OCP agent processes",
        "Start all OCP agent processes",
        "Finish OCP agent operation",
    ];

    /// A rolling restart of `n` hosts `per` a batch as the controller answers it: host
    /// i's chain has `step(i).0` steps done and the next one in `step(i).1`; the Wait
    /// node after batch b is in `wait(b)`.
    fn rolling(
        n: usize,
        per: usize,
        rollout: Value,
        step: impl Fn(usize) -> (usize, &'static str),
        wait: impl Fn(usize) -> &'static str,
    ) -> Value {
        let mut subtasks = Vec::new();
        let id = |i: usize, k: usize| (i * CHAIN.len() + k + 1) as i64;
        for i in 0..n {
            let (done, next) = step(i);
            for (k, name) in CHAIN.iter().enumerate() {
                let status = match k {
                    k if k < done => "SUCCESSFUL",
                    k if k == done => next,
                    _ => "PENDING",
                };
                let mut s =
                    json!({"id": id(i, k), "name": name, "parallelIdx": i, "status": status});
                if status != "PENDING" {
                    s["startTime"] = json!(time_at((i * 100 + k * 10) as i64));
                }
                if matches!(status, "SUCCESSFUL" | "FAILED") {
                    s["finishTime"] = json!(time_at((i * 100 + k * 10 + 8) as i64));
                }
                subtasks.push(s);
            }
        }
        let batches = n.div_ceil(per);
        for b in 0..batches.saturating_sub(1) {
            let ups: Vec<i64> = (b * per..(b + 1) * per).map(|i| id(i, 4)).collect();
            let downs: Vec<i64> = ((b + 1) * per..((b + 2) * per).min(n))
                .map(|i| id(i, 0))
                .collect();
            let mut w = json!({"id": (n * CHAIN.len() + b + 1) as i64, "name": "Wait node",
                "parallelIdx": -1, "status": wait(b), "upstreams": ups, "downstreams": downs});
            if wait(b) == "SUCCESSFUL" {
                w["startTime"] = json!(time_at(1000));
                w["finishTime"] = json!(time_at(1003));
            }
            subtasks.push(w);
        }
        let mut rollout = rollout;
        rollout["hostsPerBatch"] = json!(per);
        json!({"id": 9, "name": "Batch restart OCP agent", "status": "RUNNING",
            "rollout": rollout, "paused": false, "subtasks": subtasks})
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.{}", i + 2)).collect()
    }

    fn line<'a>(lines: &'a [String], start: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{}", lines.join("\n")))
    }

    #[test]
    fn one_row_per_batch_and_the_pause_with_the_resume_route() {
        let mut task = rolling(
            3,
            1,
            json!({"batchSize": 1, "maxFailedHosts": 0, "pauseSeconds": 0,
                "minHealthySeconds": 0, "pauseAfterFirstBatch": true, "hostsPerBatch": 1}),
            |i| if i == 0 { (5, "") } else { (0, "PENDING") },
            |b| if b == 0 { "READY" } else { "PENDING" },
        );
        task["paused"] = json!(true);
        let lines = render(&task, &labels(3));
        let text = lines.join("\n");
        assert_eq!(lines[0], "Batch restart OCP agent #9: RUNNING (paused)");
        assert!(lines[1].starts_with("rolling: 3 batches of 1 host (batchSize 1)"));
        assert!(
            lines[1].ends_with("maxFailedHosts 0, pauseAfterFirstBatch"),
            "{text}"
        );
        let first = line(&lines, "batch 1/3");
        assert!(
            first.contains("host 1 ") && first.contains('✔') && first.contains("done in 48 ms"),
            "{text}"
        );
        let waits: Vec<&String> = lines.iter().filter(|l| l.contains("└ wait")).collect();
        assert_eq!(waits.len(), 2, "{text}");
        assert!(
            waits[0].contains("○ paused — resume with POST /api/v2/tasks/instances/9/resume"),
            "{text}"
        );
        assert!(!waits[1].contains("paused"), "{text}");
        assert!(line(&lines, "batch 2/3").ends_with("pending"), "{text}");
        assert!(line(&lines, "batch 3/3").contains("host 3"), "{text}");
    }

    #[test]
    fn the_running_batch_shows_each_hosts_step() {
        let task = rolling(
            4,
            2,
            json!({"batchSize": 2, "maxFailedHosts": 1, "hostsPerBatch": 2}),
            |i| match i {
                0 | 1 => (5, ""),
                2 => (2, "RUNNING"),
                _ => (3, "FAILED"),
            },
            |_| "SUCCESSFUL",
        );
        let lines = render(&task, &labels(4));
        let text = lines.join("\n");
        assert!(line(&lines, "batch 1/2").contains("✔✔"), "{text}");
        assert!(
            lines.iter().any(|l| l.contains("└ wait  ✔ passed in 3 ms")),
            "{text}"
        );
        let running = line(&lines, "batch 2/2");
        assert!(
            running.contains("hosts 3-4") && running.contains("▶✘") && running.ends_with("running"),
            "{text}"
        );
        assert!(
            line(&lines, "    127.0.0.4").ends_with("▶ Stop all"),
            "{text}"
        );
        assert!(
            line(&lines, "    127.0.0.5").ends_with("✘ Start all"),
            "{text}"
        );
        assert!(lines[2].contains("✔ 2  ▶ 1  ✘ 1"), "{text}");
        assert!(!lines[2].contains("budget"), "within the budget: {text}");
    }

    #[test]
    fn a_thousand_hosts_fit_on_a_screen() {
        let task = rolling(
            1000,
            2,
            json!({"batchSize": 2, "hostsPerBatch": 2}),
            |i| match i {
                0..96 => (5, ""),
                96 | 97 => (1, "RUNNING"),
                _ => (0, "PENDING"),
            },
            |b| if b < 48 { "SUCCESSFUL" } else { "PENDING" },
        );
        let lines = render(&task, &labels(1000));
        let text = lines.join("\n");
        assert!(lines.len() <= 12, "{text}");
        assert!(lines.iter().all(|l| l.chars().count() < 100), "{text}");
        let done = line(&lines, "batches 1-48/500");
        assert!(
            done.contains("hosts 1-96") && done.contains("✔ 96") && done.ends_with("done"),
            "{text}"
        );
        assert!(
            line(&lines, "batch 49/500").contains("hosts 97-98"),
            "{text}"
        );
        let pending = line(&lines, "batches 50-500/500");
        assert!(
            pending.contains("hosts 99-1000") && pending.ends_with("pending"),
            "{text}"
        );
        assert!(lines[2].contains("✔ 96  ▶ 2  · 902"), "{text}");
    }

    #[test]
    fn a_large_batch_is_summed_up_by_step() {
        // No hostsPerBatch: worked out from the percentage, as the controller does.
        let task = rolling(
            100,
            50,
            json!({"batchSize": "50%"}),
            |i| match i {
                0..10 => (5, ""),
                10..40 => (2, "RUNNING"),
                40..50 => (0, "RUNNING"),
                _ => (0, "PENDING"),
            },
            |_| "PENDING",
        );
        let lines = render(&task, &[]);
        let text = lines.join("\n");
        assert!(
            lines[1].contains("2 batches of 50 hosts (batchSize 50%)"),
            "{text}"
        );
        let running = line(&lines, "batch 1/2");
        assert!(running.contains("✔ 10  ▶ 40"), "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.trim() == "▶ Prepare restart ×10, ▶ Stop all ×30, 10 done"),
            "{text}"
        );
        assert!(lines.iter().all(|l| l.chars().count() < 100), "{text}");
    }

    #[test]
    fn past_the_budget_the_wait_node_says_why_no_batch_starts() {
        let mut task = rolling(
            4,
            1,
            json!({"batchSize": 1, "maxFailedHosts": 0, "hostsPerBatch": 1}),
            |i| match i {
                0 => (5, ""),
                1 => (2, "FAILED"),
                _ => (0, "PENDING"),
            },
            |b| match b {
                0 => "SUCCESSFUL",
                _ => "PENDING",
            },
        );
        task["status"] = json!("FAILED");
        let lines = render(&task, &labels(4));
        let text = lines.join("\n");
        assert_eq!(lines[0], "Batch restart OCP agent #9: FAILED", "{text}");
        assert!(lines[2].ends_with("(over the budget of 0)"), "{text}");
        assert!(
            line(&lines, "batch 2/4").ends_with("✘  failed at Stop all"),
            "{text}"
        );
        assert!(
            lines.iter().any(|l| l
                .contains("└ wait  · stopped: 1 host failed, budget 0; no further batch starts")),
            "{text}"
        );
        assert!(line(&lines, "batch 4/4").ends_with("pending"), "{text}");
    }

    #[test]
    fn a_pause_asked_while_a_batch_runs_holds_after_it() {
        let mut task = rolling(
            3,
            1,
            json!({"batchSize": 1, "hostsPerBatch": 1}),
            |i| {
                if i == 0 {
                    (5, "")
                } else if i == 1 {
                    (3, "RUNNING")
                } else {
                    (0, "PENDING")
                }
            },
            |b| if b == 0 { "SUCCESSFUL" } else { "PENDING" },
        );
        task["paused"] = json!(true);
        let lines = render(&task, &labels(3));
        let text = lines.join("\n");
        let waits: Vec<&String> = lines.iter().filter(|l| l.contains("└ wait")).collect();
        assert!(waits[0].contains("passed"), "{text}");
        assert!(
            waits[1].contains("holds here after this batch — resume with POST"),
            "{text}"
        );
    }

    #[test]
    fn a_running_wait_node_says_whether_it_pauses_or_checks_the_batch() {
        let mut task = rolling(
            4,
            2,
            json!({"batchSize": 2, "pauseSeconds": 5, "minHealthySeconds": 3}),
            |i| if i < 2 { (5, "") } else { (0, "PENDING") },
            |_| "RUNNING",
        );
        let lines = render(&task, &labels(4));
        let text = lines.join("\n");
        assert!(
            lines[1].ends_with("maxFailedHosts 0, pauseSeconds 5, minHealthySeconds 3"),
            "{text}"
        );
        assert!(
            lines.contains(&"  └ wait  ▶ waiting (pauseSeconds 5)".to_string()),
            "{text}"
        );

        task["rollout"]["pauseSeconds"] = json!(0);
        let lines = render(&task, &labels(4));
        let text = lines.join("\n");
        assert!(
            lines.contains(&"  └ wait  ▶ checking the batch".to_string()),
            "{text}"
        );
    }

    #[test]
    fn a_task_that_does_not_read_as_one_says_so() {
        let task = json!({"id": 3, "rollout": {"batchSize": 1},
            "subtasks": [{"id": 1, "parallelIdx": "first"}]});
        let lines = render(&task, &[]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("task #3: unreadable: invalid type"),
            "{lines:?}"
        );
    }
}
