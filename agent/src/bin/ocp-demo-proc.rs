//! A small stand-in for a supervised program, for tests and demos:
//!
//! `ocp-demo-proc [--listen PORT|ADDR:PORT]... [--ignore-term] [--exit-after MS]
//!  [--exit-code N] [--spawn-child] [--startup-delay MS] [--tag TEXT]
//!  [--hog-mb N [--hog-when FILE]]`
//!
//! `--spawn-child` starts a second, sleeping copy in the same process group, to
//! check that stopping a process also stops what it forked. `--tag` is ignored; it
//! lets a test find its processes by command line. `--hog-mb` touches that many MiB
//! once ready (once FILE exists, with `--hog-when`), to run into a memory limit.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct Args {
    listen: Vec<SocketAddr>,
    ignore_term: bool,
    exit_after: Option<Duration>,
    exit_code: Option<u8>,
    spawn_child: bool,
    startup_delay: Duration,
    sleep_only: bool,
    hog_mb: usize,
    hog_when: Option<std::path::PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let ms = |v: String| {
            v.parse()
                .map(Duration::from_millis)
                .map_err(|e| format!("bad milliseconds {v:?}: {e}"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                let addr = match v.parse::<u16>() {
                    Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
                    Err(_) => v.parse().map_err(|e| format!("bad address {v:?}: {e}"))?,
                };
                args.listen.push(addr);
            }
            "--ignore-term" => args.ignore_term = true,
            "--exit-after" => args.exit_after = Some(ms(value()?)?),
            "--exit-code" => {
                let v = value()?;
                args.exit_code = Some(v.parse().map_err(|e| format!("bad code {v:?}: {e}"))?);
            }
            "--spawn-child" => args.spawn_child = true,
            "--startup-delay" => args.startup_delay = ms(value()?)?,
            "--tag" => {
                value()?;
            }
            "--sleep" => args.sleep_only = true,
            "--hog-mb" => {
                let v = value()?;
                args.hog_mb = v.parse().map_err(|e| format!("bad MiB {v:?}: {e}"))?;
            }
            "--hog-when" => args.hog_when = Some(value()?.into()),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ocp-demo-proc: {e}");
            return ExitCode::from(2);
        }
    };
    if args.ignore_term {
        // SAFETY: installs SIG_IGN, no handler code runs; done before any thread starts.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    if args.sleep_only {
        loop {
            thread::park();
        }
    }
    thread::sleep(args.startup_delay);
    if args.spawn_child {
        match std::env::current_exe().and_then(|exe| Command::new(exe).arg("--sleep").spawn()) {
            Ok(child) => println!("child pid={}", child.id()),
            Err(e) => {
                eprintln!("ocp-demo-proc: cannot spawn child: {e}");
                return ExitCode::from(3);
            }
        }
    }
    for addr in &args.listen {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ocp-demo-proc: cannot listen on {addr}: {e}");
                return ExitCode::from(4);
            }
        };
        thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
    }
    println!("ready pid={}", std::process::id());
    if args.hog_mb > 0 {
        while args.hog_when.as_ref().is_some_and(|f| !f.exists()) {
            thread::sleep(Duration::from_millis(10));
        }
        let mut held = Vec::with_capacity(args.hog_mb);
        for _ in 0..args.hog_mb {
            held.push(vec![1u8; 1 << 20]);
        }
        println!("holding {} MiB", held.len());
        loop {
            thread::park();
        }
    }
    match (args.exit_after, args.exit_code) {
        (Some(after), code) => {
            thread::sleep(after);
            ExitCode::from(code.unwrap_or(0))
        }
        (None, Some(code)) => ExitCode::from(code),
        (None, None) => loop {
            thread::park();
        },
    }
}
