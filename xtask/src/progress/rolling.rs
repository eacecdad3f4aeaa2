//! A rolling task drawn one row per batch: each host's chain summed up to one glyph,
//! the running batch host by host (or step by step when it is large), the Wait node
//! between two batches, and runs of finished or untouched batches folded into one row
//! when there are many, so that a thousand hosts take a screen, not a thousand columns.

use std::collections::HashMap;

use serde_json::Value;

use crate::rest::millis;

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

fn status(s: &Value) -> &str {
    s["status"].as_str().unwrap_or("")
}

/// "Stop all OCP agent processes" -> "Stop all": the words that tell the steps apart.
fn short(step: &str) -> &str {
    step.split(" OCP agent").next().unwrap_or(step)
}

fn host<'a>(chain: &[&'a Value]) -> Host<'a> {
    let start = chain.iter().filter_map(|s| millis(&s["startTime"])).min();
    let finish = chain.iter().filter_map(|s| millis(&s["finishTime"])).max();
    let make = |state, glyph, step| Host {
        state,
        glyph,
        step,
        start,
        finish,
    };
    let name = |s: &&'a Value| s["name"].as_str().unwrap_or("?");
    if let Some(s) = chain.iter().find(|s| status(s) == "FAILED") {
        return make(State::Failed, "✘", name(s));
    }
    if let Some(s) = chain
        .iter()
        .find(|s| matches!(status(s), "RUNNING" | "CANCELING"))
    {
        return make(State::Active, "▶", name(s));
    }
    if let Some(s) = chain.iter().find(|s| status(s) == "READY") {
        return make(State::Active, "○", name(s));
    }
    if !chain.is_empty() && chain.iter().all(|s| status(s) == "SUCCESSFUL") {
        return make(State::Done, "✔", "");
    }
    if chain.iter().all(|s| status(s) == "PENDING") {
        return make(State::Pending, "·", "");
    }
    // Between two steps: the next one is about to start.
    let next = chain
        .iter()
        .find(|s| status(s) == "PENDING")
        .map_or("?", name);
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

/// The number of hosts a batch holds, as the controller resolved `batchSize`.
fn hosts_per_batch(rollout: &Value) -> usize {
    rollout["hostsPerBatch"]
        .as_u64()
        .map_or(1, |n| n as usize)
        .max(1)
}

/// A row: one batch, or a run of alike batches (`first..=last`, 0-based).
struct Row {
    first: usize,
    last: usize,
    class: Class,
}

pub(super) fn render(task: &Value, labels: &[String]) -> Vec<String> {
    let subtasks = super::by_id(task);
    let index = |s: &Value| s["parallelIdx"].as_i64().filter(|&i| i >= 0);
    let n = subtasks
        .iter()
        .filter_map(|s| index(s))
        .max()
        .map_or(0, |i| i as usize + 1);
    let rollout = &task["rollout"];
    let per = hosts_per_batch(rollout);
    let batches = n.div_ceil(per);
    let paused = task["paused"].as_bool().unwrap_or(false);
    let budget = rollout["maxFailedHosts"].as_u64().unwrap_or(0) as usize;
    let pause_s = rollout["pauseSeconds"].as_u64().unwrap_or(0);

    let mut chains: Vec<Vec<&Value>> = vec![Vec::new(); n];
    let mut waits: Vec<&Value> = Vec::new();
    for s in &subtasks {
        match index(s) {
            Some(i) => chains[i as usize].push(s),
            None if s["name"] == "Wait node" => waits.push(s),
            None => {}
        }
    }
    let hosts: Vec<Host> = chains.iter().map(|c| host(c)).collect();
    // Step names in id order, which is each chain's order.
    let mut steps: Vec<&str> = Vec::new();
    for s in &subtasks {
        if let (Some(_), Some(name)) = (index(s), s["name"].as_str())
            && !steps.contains(&name)
        {
            steps.push(name);
        }
    }
    // The Wait node after batch b is the one whose upstreams are batch b's hosts.
    let by_id: HashMap<i64, &Value> = subtasks
        .iter()
        .filter_map(|s| Some((s["id"].as_i64()?, *s)))
        .collect();
    let mut wait_after: Vec<Option<&Value>> = vec![None; batches.saturating_sub(1)];
    for (k, w) in waits.iter().enumerate() {
        let after = w["upstreams"]
            .as_array()
            .and_then(|ups| {
                ups.iter()
                    .filter_map(|u| by_id.get(&u.as_i64()?))
                    .filter_map(|s| index(s))
                    .map(|i| i as usize / per)
                    .max()
            })
            .unwrap_or(k);
        if let Some(slot) = wait_after.get_mut(after)
            && slot.is_none()
        {
            *slot = Some(w);
        }
    }
    // Where a paused rollout holds: before the first batch not yet let through.
    let hold = paused
        .then(|| {
            wait_after
                .iter()
                .position(|w| w.is_some_and(|w| matches!(status(w), "PENDING" | "READY")))
        })
        .flatten();
    // Where the budget stopped an ended rollout: the first barrier that never ran.
    let failed_hosts = count(&hosts, State::Failed);
    let stopped = (task["status"] == "FAILED" && failed_hosts > budget)
        .then(|| {
            wait_after
                .iter()
                .position(|w| w.is_some_and(|w| matches!(status(w), "PENDING" | "READY")))
        })
        .flatten();
    let batch = |b: usize| &hosts[b * per..((b + 1) * per).min(n)];

    let mut rows: Vec<Row> = Vec::new();
    for b in 0..batches {
        let class = class(batch(b));
        match rows.last_mut() {
            Some(row)
                if batches > ROWS_MAX
                    && class != Class::Active
                    && row.class == class
                    && hold != Some(row.last) =>
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

    let id = &task["id"];
    let resume = format!("POST /api/v2/tasks/instances/{id}/resume");
    let mut lines = vec![format!(
        "{} #{id}: {}{}",
        task["name"].as_str().unwrap_or("task"),
        task["status"].as_str().unwrap_or("?"),
        if paused { " (paused)" } else { "" }
    )];
    let size = match &rollout["batchSize"] {
        Value::String(s) => s.clone(),
        Value::Null => "1".to_string(),
        other => other.to_string(),
    };
    // The settings left at their defaults are left out.
    let mut settings = format!(
        "rolling: {} of {} (batchSize {size}), maxFailedHosts {budget}",
        plural(batches, "batch", "batches"),
        plural(per, "host", "hosts"),
    );
    if pause_s > 0 {
        settings.push_str(&format!(", pauseSeconds {pause_s}"));
    }
    if let Some(healthy) = rollout["minHealthySeconds"].as_u64().filter(|&s| s > 0) {
        settings.push_str(&format!(", minHealthySeconds {healthy}"));
    }
    if rollout["pauseAfterFirstBatch"] == true {
        settings.push_str(", pauseAfterFirstBatch");
    }
    lines.push(settings);
    let failed = failed_hosts;
    lines.push(format!(
        "hosts: {}{}",
        counts(&hosts),
        if failed > budget {
            format!("  (over the budget of {budget})")
        } else {
            String::new()
        }
    ));

    let cells: Vec<[String; 3]> = rows
        .iter()
        .map(|row| {
            let label = if row.first == row.last {
                format!("batch {}/{batches}", row.first + 1)
            } else {
                format!("batches {}-{}/{batches}", row.first + 1, row.last + 1)
            };
            let first = row.first * per;
            let end = ((row.last + 1) * per).min(n);
            let span = &hosts[first..end];
            let glyphs = if span.len() <= GLYPHS_MAX {
                span.iter().map(|h| h.glyph).collect()
            } else {
                counts(span)
            };
            [label, range("host", first + 1, end), glyphs]
        })
        .collect();
    let width = |k: usize| {
        cells
            .iter()
            .map(|c| c[k].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for (r, (row, [label, span, glyphs])) in rows.iter().zip(&cells).enumerate() {
        let first = row.first * per;
        let end = ((row.last + 1) * per).min(n);
        let members = &hosts[first..end];
        let text = match row.class {
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
        };
        lines.push(format!("{label:w0$}  {span:w1$}  {glyphs:w2$}  {text}"));
        if row.class == Class::Active {
            lines.extend(active_lines(members, first, labels, &steps));
        }
        if r + 1 < rows.len() {
            let Some(wait) = wait_after.get(row.last).copied().flatten() else {
                continue;
            };
            let held = hold == Some(row.last);
            let text = match status(wait) {
                "SUCCESSFUL" => match (millis(&wait["startTime"]), millis(&wait["finishTime"])) {
                    (Some(s), Some(f)) => format!("passed in {}", seconds(f - s)),
                    _ => "passed".to_string(),
                },
                "RUNNING" | "CANCELING" if pause_s > 0 => {
                    format!("waiting (pauseSeconds {pause_s})")
                }
                "RUNNING" | "CANCELING" => "checking the batch".to_string(),
                "READY" if held => format!("paused — resume with {resume}"),
                "PENDING" if held => {
                    format!(
                        "paused: the rollout holds here after this batch — resume with {resume}"
                    )
                }
                "PENDING" | "READY" if stopped == Some(row.last) => format!(
                    "stopped: {} failed, budget {budget}; no further batch starts",
                    plural(failed, "host", "hosts")
                ),
                other => other.to_lowercase(),
            };
            lines.push(format!("  └ wait  {} {text}", super::glyph(status(wait))));
        }
    }
    lines.push("· pending  ○ ready  ▶ running  ✔ successful  ✘ failed".to_string());
    lines
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
}
