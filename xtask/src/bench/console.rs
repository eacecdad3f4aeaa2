//! Scenario 9: how soon the console shows a big fleet. Headless Chromium loads the
//! console afresh, signed in, with the store full: the first contentful paint, and when
//! the host list and the task list are drawn with their first page of rows, read from
//! the console's own `ocp:<page>-shown` marks (User Timing), since navigation start.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::BenchError;
use super::report::Latency;
use crate::browser::Browser;

/// The goal: the host list of 1,000 hosts drawn within a second, 10,000 tasks stored.
pub const GOAL_MS: f64 = 1000.0;
/// Where the goal applies.
pub const GOAL_HOSTS: usize = 1000;
pub const GOAL_TASKS: usize = 10_000;
/// Fresh loads of each page.
const LOADS: usize = 7;

#[derive(Debug, Clone, Serialize)]
pub struct ConsoleRun {
    pub hosts: usize,
    pub tasks: usize,
    pub first_paint: Latency,
    pub hosts_shown: Latency,
    pub tasks_shown: Latency,
}

/// What one load of a page took, from the page's own performance entries.
async fn load(b: &Browser, url: &str, page: &str) -> Result<(f64, f64), BenchError> {
    b.client
        .goto(url)
        .await
        .map_err(crate::browser::BrowserError::from)?;
    let script = format!(
        "return performance.getEntriesByName('ocp:{page}-shown').length > 0 && \
         [performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1, \
          performance.getEntriesByName('ocp:{page}-shown')[0].startTime]"
    );
    let v = b
        .wait_until(
            Duration::from_secs(30),
            &format!("the {page} page"),
            &script,
        )
        .await
        .map_err(BenchError::Failed)?;
    let pair = |i: usize| v.get(i).and_then(Value::as_f64).unwrap_or(-1.0);
    Ok((pair(0), pair(1)))
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

pub fn measure(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    base: &str,
    (user, password): (&str, &str),
    hosts: usize,
    tasks: usize,
) -> Result<ConsoleRun, BenchError> {
    rt.block_on(async {
        let b = Browser::start(dir, 1400, 1000).await?;
        let home = format!("{base}/console/");
        b.client
            .goto(&home)
            .await
            .map_err(crate::browser::BrowserError::from)?;
        b.client
            .execute(
                "sessionStorage.setItem('ocp.auth', btoa(arguments[0] + ':' + arguments[1]))",
                vec![user.into(), password.into()],
            )
            .await
            .map_err(crate::browser::BrowserError::from)?;
        let (mut paint, mut host_list, mut task_list) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..LOADS {
            let (fcp, shown) = load(&b, &format!("{home}?load={i}#/hosts"), "hosts").await?;
            paint.push(ms(fcp));
            host_list.push(ms(shown));
            let (_, shown) = load(&b, &format!("{home}?load=t{i}#/tasks"), "tasks").await?;
            task_list.push(ms(shown));
        }
        b.close().await;
        Ok(ConsoleRun {
            hosts,
            tasks,
            first_paint: Latency::of("first contentful paint", paint),
            hosts_shown: Latency::of("host list drawn (50 rows)", host_list),
            tasks_shown: Latency::of("task list drawn (20 rows)", task_list),
        })
    })
}
