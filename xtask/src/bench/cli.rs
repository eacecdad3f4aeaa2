//! The arguments of `cargo xtask bench`, and the defaults they leave to the run.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Fleet sizes of the batch restart and of the Ansible comparison, e.g. 10,100,1000.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Option<Vec<usize>>,
    /// Small fleets and short runs, as CI runs it: under 3 minutes once built.
    #[arg(long)]
    pub quick: bool,
    /// Single-process restarts per contender (default 200; quick 50).
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Seconds each throughput target is driven (default 10; quick 3).
    #[arg(long)]
    pub load_seconds: Option<f64>,
    /// Finished tasks to put in the store with the largest fleet of 1,000 hosts or
    /// more, before reading the controllers' memory, on SQLite and on PostgreSQL
    /// (default 10000; 0 skips).
    #[arg(long)]
    pub fill_tasks: Option<usize>,
    /// Skip Ansible above this many hosts (it needs about 1 s of CPU per host).
    #[arg(long)]
    pub ansible_max_hosts: Option<usize>,
    /// Skip the Ansible and supervisord comparisons (no Python needed).
    #[arg(long)]
    pub no_python: bool,
    /// The controller's --task-concurrency (default: the controller's own, 1024).
    #[arg(long)]
    pub task_concurrency: Option<usize>,
    /// Skip the two controllers sharing a PostgreSQL database (run at the largest
    /// fleet size); without a reachable server it is skipped anyway, with the reason,
    /// unless OCP_REQUIRE_POSTGRES=1.
    #[arg(long)]
    pub no_postgres: bool,
    /// The PostgreSQL server of that scenario; it creates a database ocp_bench_<random>
    /// there and drops it at the end.
    #[arg(
        long,
        env = "OCP_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    /// Run only this scenario (and build only what it needs); writes results.json
    /// with its figures alone.
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// The ocp-agent binary of the agent-latency scenario (default: the one just
    /// built), e.g. one built from an earlier commit, to compare the two.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Run on the debug binaries (the ones `cargo test` has just built) from this debug
    /// xtask, without a release build: checks that the harness works, as CI does; the
    /// figures are not the product's.
    #[arg(long)]
    pub debug_binaries: bool,
}

/// A scenario that runs alone with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// GetAgentInfo latency while one agent starts 50 processes (scenario 8).
    AgentLatency,
    /// Agents upgraded in place (scenario 10): the switch gap GetAgentInfo sees on 10
    /// agents, then a rolling upgrade (batchSize 25%) of 100 hosts (or of the largest
    /// of --hosts) beside their batch restart.
    Upgrade,
    /// The console's first paint in Chromium, the store filled (scenario 9): 1,000
    /// hosts (or the largest of --hosts) and --fill-tasks finished tasks (10,000).
    Console,
}

impl BenchArgs {
    /// Finished tasks to fill the store with at 1,000 hosts or more.
    pub fn fill_tasks(&self) -> usize {
        self.fill_tasks
            .unwrap_or(if self.quick { 0 } else { 10_000 })
    }
}
