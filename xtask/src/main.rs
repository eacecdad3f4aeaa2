//! `cargo xtask`: the workspace's developer tasks (the demo, the benchmarks), as subcommands.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer tasks of the ocp-rs workspace"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, start a controller and three agents on 127.0.0.2-4 with mutual TLS, run a
    /// batch restart (with --rollout, a rolling one that pauses after its first batch)
    /// while showing its DAG (with --upgrade, then upgrade the agents in place and show
    /// their pids unchanged), print ready-to-paste commands, and run until Ctrl-C.
    Demo(xtask::demo::DemoArgs),
    /// Build in release mode and measure: fleet batch restarts, against Ansible and
    /// supervisord, and the gateway's throughput, ours in plaintext and with mutual TLS,
    /// a rolling restart beside a stage-wise one, then two controllers on PostgreSQL;
    /// writes target/bench/results.json and chart.svg.
    Bench(xtask::bench::BenchArgs),
}

fn main() {
    let args = Args::parse();
    let result = match args.command {
        Command::Demo(demo) => xtask::demo::run(demo),
        Command::Bench(bench) => xtask::bench::run(bench).map_err(anyhow::Error::from),
    };
    if let Err(e) = result {
        eprintln!("xtask: {}", trust::causes(e.as_ref()));
        std::process::exit(1);
    }
}
