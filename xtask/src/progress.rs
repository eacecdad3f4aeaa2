//! A batch task's DAG drawn as a table: the seeds' stage-wise DAG one row per stage and
//! one column per host; a rolling task (one whose JSON has `rollout`) one row per batch.

mod json;
mod rolling;

use std::io::{IsTerminal, Write};

use serde_json::Value;

/// The glyphs' key, under every table.
const LEGEND: &str = "· pending  ○ ready  ▶ running  ✔ successful  ✘ failed";

fn glyph(status: &str) -> &'static str {
    match status {
        "PENDING" => "·",
        "READY" => "○",
        "RUNNING" | "CANCELING" => "▶",
        "SUCCESSFUL" => "✔",
        "FAILED" => "✘",
        _ => "?",
    }
}

/// The task's subtasks in id order, which is each chain's order.
fn by_id(task: &Value) -> Vec<&Value> {
    let mut subtasks: Vec<&Value> = task["subtasks"]
        .as_array()
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    subtasks.sort_by_key(|s| s["id"].as_i64().unwrap_or(0));
    subtasks
}

/// The table for `task` (the REST task JSON), hosts labelled by `parallelIdx`.
pub fn render(task: &Value, hosts: &[String]) -> Vec<String> {
    if task["rollout"].is_object() {
        return rolling::render(task, hosts);
    }
    let subtasks = by_id(task);
    let mut stages: Vec<&str> = Vec::new();
    for s in &subtasks {
        let name = s["name"].as_str().unwrap_or("?");
        if name != "Wait node" && !stages.contains(&name) {
            stages.push(name);
        }
    }
    let width = stages.iter().map(|s| s.len()).max().unwrap_or(10) + 2;
    let column = hosts.iter().map(String::len).max().unwrap_or(1).max(9) + 2;
    let mut lines = vec![format!(
        "{} #{}: {}",
        task["name"].as_str().unwrap_or("task"),
        task["id"],
        task["status"].as_str().unwrap_or("?")
    )];
    let mut header = format!("{:width$}", "");
    for h in hosts {
        header.push_str(&format!("{h:^column$}"));
    }
    lines.push(header);
    for stage in &stages {
        let mut row = format!("{stage:width$}");
        for idx in 0..hosts.len() {
            let status = subtasks
                .iter()
                .find(|s| s["name"] == *stage && s["parallelIdx"].as_i64() == Some(idx as i64))
                .and_then(|s| s["status"].as_str())
                .unwrap_or("");
            row.push_str(&format!("{:^column$}", glyph(status)));
        }
        lines.push(row);
    }
    let barriers: Vec<&str> = subtasks
        .iter()
        .filter(|s| s["name"] == "Wait node")
        .map(|s| glyph(s["status"].as_str().unwrap_or("")))
        .collect();
    if !barriers.is_empty() {
        lines.push(format!("{:width$}{}", "barriers", barriers.join(" ")));
    }
    lines.push(LEGEND.to_string());
    lines
}

/// Redraws the table in place on a terminal (a shorter table clears what the longer one
/// left below it); elsewhere prints it only when it changed.
pub struct Screen {
    drawn: usize,
    last: Vec<String>,
    tty: bool,
}

impl Default for Screen {
    fn default() -> Self {
        Screen {
            drawn: 0,
            last: Vec::new(),
            tty: std::io::stdout().is_terminal(),
        }
    }
}

impl Screen {
    pub fn show(&mut self, lines: Vec<String>) {
        if lines == self.last {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty && self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        for line in &lines {
            if self.tty {
                let _ = write!(out, "\x1b[2K");
            }
            let _ = writeln!(out, "{line}");
        }
        if self.tty {
            let _ = write!(out, "\x1b[J");
        }
        let _ = out.flush();
        self.drawn = lines.len();
        self.last = lines;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_stage_and_one_column_per_host() {
        let task = serde_json::json!({
            "id": 7, "name": "Batch restart OCP agent", "status": "RUNNING",
            "subtasks": [
                {"id": 1, "name": "Prepare restart OCP agent", "parallelIdx": 0, "status": "SUCCESSFUL"},
                {"id": 2, "name": "Prepare restart OCP agent", "parallelIdx": 1, "status": "RUNNING"},
                {"id": 3, "name": "Wait node", "parallelIdx": -1, "status": "PENDING"},
                {"id": 4, "name": "Restart pos proxy", "parallelIdx": 0, "status": "PENDING"},
                {"id": 5, "name": "Restart pos proxy", "parallelIdx": 1, "status": "PENDING"}
            ]
        });
        let lines = render(&task, &["127.0.0.2".to_string(), "127.0.0.3".to_string()]);
        assert_eq!(lines[0], "Batch restart OCP agent #7: RUNNING");
        assert!(lines[2].starts_with("Prepare restart OCP agent"));
        assert!(
            lines[2].contains('✔') && lines[2].contains('▶'),
            "{}",
            lines[2]
        );
        assert!(lines[3].starts_with("Restart pos proxy") && lines[3].matches('·').count() == 2);
        assert_eq!(lines[4].trim_start_matches("barriers").trim(), "·");
    }
}
