//! The streaming hot path: SSE framing plus record extraction over a long Claude Code-style
//! Messages stream, against a baseline that only finds event boundaries in the same bytes.
//!
//! `cargo bench --bench stream --features bench-internals`

use aibridge::__bench::{
    chat_stream, chunks, claude_code_stream, responses_stream, split_and_extract,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let stream = claude_code_stream(5_000);
    let (events, facts, bytes) = split_and_extract("messages", &chunks(&stream, 4096));
    assert_eq!(bytes, stream.len(), "relay is byte-faithful");
    assert!(facts >= 3, "usage, prompt id and tool are extracted");
    let mut g = c.benchmark_group("messages_stream");
    g.throughput(Throughput::Elements(events as u64));
    for size in [1024usize, 4096, 16384] {
        let parts = chunks(&stream, size);
        g.bench_function(format!("split_and_extract/{size}B_chunks"), |b| {
            b.iter(|| split_and_extract("messages", std::hint::black_box(&parts)));
        });
        g.bench_function(format!("baseline_boundary_scan/{size}B_chunks"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for p in std::hint::black_box(&parts) {
                    n += memchr::memmem::find_iter(p, b"\n\n").count();
                }
                n
            });
        });
    }
    g.finish();
    for (api, stream) in [
        ("chat_completions", chat_stream(5_000)),
        ("responses", responses_stream(5_000)),
    ] {
        let parts = chunks(&stream, 4096);
        let (events, facts, bytes) = split_and_extract(api, &parts);
        assert_eq!(bytes, stream.len(), "{api}: relay is byte-faithful");
        assert!(facts >= 3, "{api}: usage, id and tool are extracted");
        let mut g = c.benchmark_group(format!("{api}_stream"));
        g.throughput(Throughput::Elements(events as u64));
        g.bench_function("split_and_extract/4096B_chunks", |b| {
            b.iter(|| split_and_extract(api, std::hint::black_box(&parts)));
        });
        g.bench_function("baseline_boundary_scan/4096B_chunks", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for p in std::hint::black_box(&parts) {
                    n += memchr::memmem::find_iter(p, b"\n\n").count();
                }
                n
            });
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
