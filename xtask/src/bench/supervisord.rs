//! Scenario 3, the other side: supervisord (`startsecs = 0`) restarting the same child
//! program, through its own CLI and through the XML-RPC interface the CLI uses.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::python::Python;
use super::report::Latency;
use super::{BenchError, io};

pub const LISTEN: &str = "127.0.0.1:47200";
const RPC: &str = "127.0.0.1:47201";

/// supervisord in the foreground as our child; stopped (and its child with it) on drop.
struct Supervisord(Child);

impl Drop for Supervisord {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // Our own unreaped child.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// supervisorctl's own XML-RPC client, kept in one Python process so that the figure is
/// supervisord's restart without an interpreter start-up; prints one duration per line.
/// Between restarts (untimed) it waits for the port: with `startsecs = 0` supervisord
/// calls a start done at fork, and a SIGTERM sent before the child's exec is lost, which
/// costs a SIGKILL after `stopwaitsecs`; the agent waits for the port, so it never races.
const XMLRPC_CLIENT: &str = r#"
import socket, sys, time, xmlrpc.client
s = xmlrpc.client.ServerProxy("http://%s/RPC2" % sys.argv[1])
host, port = sys.argv[3].rsplit(":", 1)
for i in range(int(sys.argv[2]) + 1):
    t = time.perf_counter()
    s.supervisor.stopProcess("listener", True)
    s.supervisor.startProcess("listener", True)
    if i:
        print(time.perf_counter() - t, flush=True)
    while True:
        try:
            socket.create_connection((host, int(port)), 1).close()
            break
        except OSError:
            time.sleep(0.001)
"#;

fn xmlrpc_restarts(python: &Python, rounds: usize) -> Result<Vec<Duration>, BenchError> {
    let output = Command::new(python.bin("python"))
        .args(["-c", XMLRPC_CLIENT, RPC, &rounds.to_string(), LISTEN])
        .stdin(Stdio::null())
        .output()
        .map_err(io("running the XML-RPC client"))?;
    if !output.status.success() {
        return Err(BenchError::Failed(format!(
            "the XML-RPC client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect())
}

fn wait_listening(addr: &str, child: &mut Child) -> Result<(), BenchError> {
    let addr: SocketAddr = addr.parse().map_err(|_| BenchError::Failed(addr.into()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            return Err(BenchError::Failed(format!(
                "supervisord: nothing listens on {addr}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The XML-RPC figure is supervisord's own restart; the CLI one adds a Python start-up,
/// which is what an operator typing `supervisorctl restart` waits for.
pub fn measure(
    python: &Python,
    dir: &Path,
    demo: &Path,
    rounds: usize,
    cli_rounds: usize,
) -> Result<Vec<Latency>, BenchError> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let conf = dir.join("supervisord.conf");
    let d = dir.display();
    let config = format!(
        "[supervisord]\nnodaemon = true\nlogfile = {d}/supervisord.log\npidfile = {d}/supervisord.pid\nchildlogdir = {d}\n\n\
         [inet_http_server]\nport = {RPC}\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl = http://{RPC}\n\n\
         [program:listener]\ncommand = {demo} --listen {LISTEN}\nstartsecs = 0\nstopwaitsecs = 5\nautorestart = true\n\
         stdout_logfile = NONE\nstderr_logfile = NONE\n",
        demo = demo.display()
    );
    fs::write(&conf, config).map_err(io(format!("writing {}", conf.display())))?;
    let log = fs::File::create(dir.join("stdout.log")).map_err(io("creating supervisord's log"))?;
    let child = Command::new(python.bin("supervisord"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("cloning a log file"))?)
        .stderr(log)
        .spawn()
        .map_err(io("starting supervisord"))?;
    let mut supervisord = Supervisord(child);
    wait_listening(RPC, &mut supervisord.0)?;
    wait_listening(LISTEN, &mut supervisord.0)?;

    let rpc = xmlrpc_restarts(python, rounds)?;
    let mut cli = Vec::with_capacity(cli_rounds);
    for _ in 0..cli_rounds {
        let sent = Instant::now();
        let output = Command::new(python.bin("supervisorctl"))
            .arg("-c")
            .arg(&conf)
            .args(["restart", "listener"])
            .stdin(Stdio::null())
            .output()
            .map_err(io("running supervisorctl"))?;
        let took = sent.elapsed();
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !text.contains("started") {
            return Err(BenchError::Failed(format!(
                "supervisorctl restart listener: {text}"
            )));
        }
        cli.push(took);
        // Untimed, for the reason given at XMLRPC_CLIENT.
        wait_listening(LISTEN, &mut supervisord.0)?;
    }
    drop(supervisord);
    Ok(vec![
        Latency::of("supervisord XML-RPC (Python client)", rpc),
        Latency::of("supervisorctl restart (CLI)", cli),
    ])
}
