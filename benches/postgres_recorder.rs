//! The PostgreSQL recorder's write path under load, on a throwaway local server over
//! loopback: interceptions driven through the bridge's record queue (each: the
//! interception, a token usage, a prompt, a tool usage and the end; 5 records), many at
//! once, into `PostgresRecorder` configured row by row (every record its own statement on
//! one of 10 connections: the write path before batching) and batched with 1, 2, 4 and 8
//! writers (groups in flight). Reports records per second into the server and the latency
//! of the awaited `record_interception` (p50/p99), under that load and alone (one
//! interception at a time), and the CPU time per 1,000 records of the bench process (the
//! record queue and the recorder) plus the server's processes (from `/proc`; the machine
//! may be shared, so CPU time is the steadier figure): records/s is wall time.
//!
//! `cargo bench --bench postgres_recorder --features bench-internals,postgres`
//!
//! Environment: `PG_BENCH_N` interceptions per run (default 4000), `PG_BENCH_CONCURRENCY`
//! interceptions in flight (default 256), `PG_BENCH_ROUNDS` rounds over every
//! configuration (default 2; the table shows each round). Needs the PostgreSQL server
//! binaries, found as in the tests (`$AIBRIDGE_TEST_PG_BIN`, `/usr/lib/postgresql/*/bin`
//! or `PATH`).

#[path = "../src/recorder/sql/tests/pg_server.rs"]
mod pg_server;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use aibridge::__bench::{QueueRun, record_through_queue};
use aibridge::recorder::{PostgresRecorder, Recorder};

/// A recorder configuration: its name, writers and records per group.
const CONFIGS: [(&str, usize, usize); 5] = [
    ("row by row (before)", 10, 1),
    ("batched, 1 writer", 1, 256),
    ("batched, 2 writers", 2, 256),
    ("batched, 4 writers (default)", 4, 256),
    ("batched, 8 writers", 8, 256),
];

/// A bench binary takes its settings from the environment, as `cargo bench` passes no
/// arguments through.
#[allow(clippy::disallowed_methods)]
fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat` (clock ticks of
/// 1/100 s, Linux's `USER_HZ`).
fn cpu_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The parent process id, from `/proc/<pid>/stat`.
fn parent_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of this process and of the server (its postmaster and every backend).
fn cpu(server: u32) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    out.insert("self".to_owned(), cpu_of("self").unwrap_or(0.0));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if (pid == server.to_string() || parent_of(&pid) == Some(server))
            && let Some(t) = cpu_of(&pid)
        {
            out.insert(pid, t);
        }
    }
    out
}

/// CPU milliseconds per 1,000 records between two snapshots.
fn cpu_per_1000(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
    records: u64,
) -> f64 {
    let spent: f64 = after
        .iter()
        .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0))
        .sum();
    spent * 1e3 / records.max(1) as f64 * 1000.0
}

fn latency(run: &QueueRun) -> (f64, f64) {
    let mut l = run.awaited.clone();
    l.sort();
    (percentile(&l, 0.50), percentile(&l, 0.99))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (all or nothing).
    let n = env("PG_BENCH_N", 4000);
    let concurrency = env("PG_BENCH_CONCURRENCY", 256);
    let rounds = env("PG_BENCH_ROUNDS", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = pg_server::PgServer::start();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{n} interceptions ({} records) per run, {concurrency} in flight\n\n\
         | round | recorder | awaited: records/s | CPU ms / 1k records | awaited p50 / p99 ms | \
         queued: records/s | CPU ms / 1k records | alone p50 / p99 ms | lost |\n\
         |---|---|---|---|---|---|---|---|---|",
        n * 5
    )
    .ok();
    let mut db = 0;
    for round in 1..=rounds {
        for (name, writers, max_batch) in CONFIGS {
            db += 1;
            let row = rt.block_on(async {
                let url = server.create_database(&format!("bench{db}")).await;
                let rec: Arc<dyn Recorder> = Arc::new(
                    PostgresRecorder::builder(&url)
                        .writers(writers)
                        .max_batch(max_batch)
                        .connect()
                        .await
                        .expect("connect"),
                );
                // Warm-up: every connection opened, every statement prepared.
                record_through_queue(rec.clone(), 500, concurrency, false).await;
                record_through_queue(rec.clone(), 500, concurrency, true).await;
                let pid = server.pid().expect("the server's pid");
                let t0 = cpu(pid);
                let awaited = record_through_queue(rec.clone(), n, concurrency, false).await;
                let t1 = cpu(pid);
                let queued = record_through_queue(rec.clone(), n, concurrency, true).await;
                let t2 = cpu(pid);
                let cpu_awaited = cpu_per_1000(&t0, &t1, awaited.written);
                let cpu_queued = cpu_per_1000(&t1, &t2, queued.written);
                let alone = record_through_queue(rec.clone(), 1000, 1, false).await;
                let rate = |r: &QueueRun| r.written as f64 / r.elapsed.as_secs_f64();
                let (p50, p99) = latency(&awaited);
                let (a50, a99) = latency(&alone);
                format!(
                    "| {round} | {name} | {:.0} | {cpu_awaited:.0} | {p50:.2} / {p99:.2} | {:.0} | \
                     {cpu_queued:.0} | {a50:.3} / {a99:.3} | {} |",
                    rate(&awaited),
                    rate(&queued),
                    awaited.lost + queued.lost + alone.lost,
                )
            });
            writeln!(out, "{row}").ok();
            out.flush().ok();
        }
    }
}
