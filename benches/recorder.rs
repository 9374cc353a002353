//! The SQLite recorder's write path: the four records of an interception (interception,
//! token usage, prompt, end) into a WAL database file, one interception at a time and 16
//! at a time (as under load, where the recorder commits the records that queued up together).
//!
//! `cargo bench --bench recorder --features bench-internals`

use std::time::{Duration, Instant};

use aibridge::__bench::record_interceptions;
use aibridge::recorder::SqliteRecorder;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let recorder = rt.block_on(SqliteRecorder::connect(&url)).expect("connect");
    let per_iter = 64;
    let mut g = c.benchmark_group("sqlite_recorder");
    g.throughput(Throughput::Elements(per_iter as u64 * 4));
    g.sample_size(20);
    for concurrency in [1usize, 16] {
        g.bench_function(format!("interceptions/concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let failed =
                        rt.block_on(record_interceptions(&recorder, per_iter, concurrency));
                    total += start.elapsed();
                    assert_eq!(failed, 0, "every record is written");
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
