//! Scenario 6: two controllers sharing one fresh PostgreSQL database, as behind a load
//! balancer: the fleet's batch restart submitted to one of them, its engine overhead,
//! and each controller's memory with the shared store filled as scenario 1 fills it.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::report::{Results, StoreKind};
use super::run::Bench;
use super::{BenchArgs, BenchError, fleet_restart, sys};
use crate::fleet::{Fleet, Transport};

/// The second controller's faces; the first one takes the bench's usual ones.
const GRPC_2: &str = "127.0.0.1:47052";
const HTTP_2: &str = "127.0.0.1:47081";
/// The default TTL, stated, so that the figures say what they were measured with.
const LEASE_TTL: &str = "10s";
const WHAT: &str = "two controllers on PostgreSQL";

pub fn run(
    bench: &Bench,
    args: &BenchArgs,
    n: usize,
    results: &mut Results,
) -> Result<(), BenchError> {
    if args.no_postgres {
        results.skipped.push(format!("{WHAT}: --no-postgres"));
        return Ok(());
    }
    println!("\n== {n} hosts, {WHAT}: a fresh database, {n} agents, two controllers");
    let db = match Scratch::create(&args.postgres_url) {
        Ok(db) => db,
        Err(why) if std::env::var("OCP_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            return Err(BenchError::Failed(format!(
                "{WHAT}: PostgreSQL is required (OCP_REQUIRE_POSTGRES=1) but unusable: {why}"
            )));
        }
        Err(why) => {
            let line = format!("{WHAT}: PostgreSQL is unreachable ({why})");
            println!("  skipping {line}");
            results.skipped.push(line);
            return Ok(());
        }
    };
    println!("  database {}", db.name);
    let binary = bench.bin_dir.join("ocp-controller");
    let mut spec = bench.spec(&format!("postgres-{n}"), n, Transport::Plaintext);
    spec.controller_args
        .extend(["--database-url".to_string(), db.url.clone()]);
    if accepts(&binary, "--lease-ttl") {
        spec.controller_args
            .extend(["--lease-ttl".to_string(), LEASE_TTL.to_string()]);
        println!("  both controllers with --lease-ttl {LEASE_TTL}");
    } else {
        println!("  this ocp-controller has no --lease-ttl: both start without it");
    }
    let started = Instant::now();
    let mut fleet = Fleet::start(spec)?;
    let http_2: SocketAddr = HTTP_2.parse().expect("a valid address");
    fleet.add_controller(GRPC_2.parse().expect("a valid address"), http_2)?;
    let took = started.elapsed();
    let first = fleet.rest()?;
    let second = fleet.rest_at(http_2)?;
    let ids = fleet.register_hosts(&first)?;
    println!(
        "  started in {:.1} s; batch restart through the first controller...",
        took.as_secs_f64()
    );
    let run = fleet_restart::measure(&fleet, &first, StoreKind::Postgres, &ids, took)?;
    let peaks: Vec<String> = run
        .controllers_peak_rss_mb
        .iter()
        .map(|mb| format!("{mb:.0}"))
        .collect();
    println!(
        "  batch restart of {n} hosts: {:.0} ms (agents {:.0} ms, overhead {:.0} ms); controllers' peak RSS {} MB",
        run.wall_ms,
        run.agents_ms,
        run.overhead_ms,
        peaks.join(" and ")
    );
    results.fleet.push(run);
    // Both see the one store: the hosts registered and the task driven by the first.
    let latest = second.get("/api/v2/tasks/instances?size=1")?;
    if latest["contents"][0]["status"] != "SUCCESSFUL" {
        return Err(BenchError::Failed(format!(
            "{WHAT}: the second controller does not show the batch restart as SUCCESSFUL: {latest}"
        )));
    }
    let fill = args.fill_tasks();
    if n >= 1000 && fill > 0 {
        println!(
            "  filling the shared store with {fill} finished tasks, through both controllers..."
        );
        results.postgres_store =
            fleet_restart::fill_store(&fleet, &[first, second], StoreKind::Postgres, &ids, fill)?;
    }
    // The controllers go before their database does.
    drop(fleet);
    drop(db);
    Ok(())
}

/// Whether `ocp-controller --help` lists `flag`: the bench runs binaries from before
/// and after a flag was added.
fn accepts(binary: &Path, flag: &str) -> bool {
    Command::new(binary).arg("--help").output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
            .any(|word| word == flag)
    })
}

/// A database made for this run, dropped when this is, or on Ctrl-C: runs leave the
/// server as they found it.
struct Scratch {
    server: String,
    name: String,
    /// The URL the controllers are given.
    url: String,
}

impl Scratch {
    fn create(server: &str) -> Result<Scratch, String> {
        let name = format!(
            "ocp_bench_{:016x}",
            RandomState::new().hash_one(std::process::id())
        );
        on_server(server, &format!("CREATE DATABASE {name}"))?;
        let (at, dropped) = (server.to_string(), drop_statement(&name));
        sys::at_interrupt(move || {
            let _ = on_server(&at, &dropped);
        });
        Ok(Scratch {
            url: with_database(server, &name),
            server: server.to_string(),
            name,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = on_server(&self.server, &drop_statement(&self.name)) {
            eprintln!("could not drop the bench database {}: {e}", self.name);
        }
    }
}

/// FORCE: a controller that did not stop in time must not keep the database alive.
fn drop_statement(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
}

/// One statement on the server's default database, from a thread of its own so that
/// it runs the same from the main thread, a drop or the interrupt handler.
fn on_server(server: &str, sql: &str) -> Result<(), String> {
    let (server, sql) = (server.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            use sqlx::Connection as _;
            let connect = sqlx::PgConnection::connect(&server);
            let shown = without_password(&server);
            let mut conn = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| format!("{shown}: no answer within 5 s"))?
                .map_err(|e| format!("{shown}: {e}"))?;
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            let _ = conn.close().await;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the database thread panicked".to_string())?
}

/// For messages: a password in the URL is not shown.
fn without_password(server: &str) -> String {
    let Some((scheme, rest)) = server.split_once("://") else {
        return server.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{}", &rest[authority_end..])
        }
        None => server.to_string(),
    }
}

/// `server` with its database (if any) replaced by `name`, its options kept.
fn with_database(server: &str, name: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap_or(("postgres", server));
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{accepts, with_database, without_password};
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in binary whose `--help` prints `help`, run as the bench runs the real one.
    fn binary_with_help(dir: &std::path::Path, name: &str, help: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\ncat <<'EOF'\n{help}\nEOF\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_flag_counts_only_when_the_help_lists_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let after = binary_with_help(
            dir.path(),
            "after",
            "Options:\n      --lease-ttl <LEASE_TTL>\n          How long a lease lasts [env: OCP_LEASE_TTL=] [default: 10s]",
        );
        let before = binary_with_help(
            dir.path(),
            "before",
            "Options:\n      --lease-ttl-max <X>\n      --offline-grace <OFFLINE_GRACE>\n          no lease ttl here: --lease-ttlx",
        );
        assert!(accepts(&after, "--lease-ttl"));
        assert!(!accepts(&before, "--lease-ttl"));
        assert!(!accepts(&dir.path().join("missing"), "--lease-ttl"));
    }

    #[test]
    fn messages_do_not_show_the_password() {
        assert_eq!(
            without_password("postgres://u:secret@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://postgres@127.0.0.1:5432"),
            "postgres://postgres@127.0.0.1:5432"
        );
        assert_eq!(without_password("postgres://db/x"), "postgres://db/x");
    }

    #[test]
    fn the_database_replaces_the_servers_and_options_stay() {
        let name = "ocp_bench_1";
        for (server, url) in [
            (
                "postgres://postgres@127.0.0.1:5432",
                "postgres://postgres@127.0.0.1:5432/ocp_bench_1",
            ),
            (
                "postgres://u:p@db:5432/postgres",
                "postgres://u:p@db:5432/ocp_bench_1",
            ),
            (
                "postgresql://db/postgres?sslmode=require",
                "postgresql://db/ocp_bench_1?sslmode=require",
            ),
            (
                "postgres://db?sslmode=disable",
                "postgres://db/ocp_bench_1?sslmode=disable",
            ),
        ] {
            assert_eq!(with_database(server, name), url, "{server}");
        }
    }
}
