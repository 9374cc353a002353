//! The PostgreSQL recorder's write path under load, on a throwaway local server over
//! loopback: interceptions driven through the bridge's record queue (each: the
//! interception, a token usage, a prompt, a tool usage and the end; 5 records), many at
//! once, into `PostgresRecorder` configured row by row (every record its own statement on
//! one of 10 connections: the write path before batching) and batched with 1, 2, 4 and 8
//! writers (groups in flight). Reports records per second into the server and the latency
//! of the awaited `record_interception` (p50/p99), under that load and alone (one
//! interception at a time).
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
         | round | recorder | awaited: records/s | awaited p50 / p99 ms | queued: records/s | \
         alone p50 / p99 ms | lost |\n|---|---|---|---|---|---|---|",
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
                let awaited = record_through_queue(rec.clone(), n, concurrency, false).await;
                let queued = record_through_queue(rec.clone(), n, concurrency, true).await;
                let alone = record_through_queue(rec.clone(), 1000, 1, false).await;
                let rate = |r: &QueueRun| r.written as f64 / r.elapsed.as_secs_f64();
                let (p50, p99) = latency(&awaited);
                let (a50, a99) = latency(&alone);
                format!(
                    "| {round} | {name} | {:.0} | {p50:.2} / {p99:.2} | {:.0} | {a50:.3} / {a99:.3} | {} |",
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
