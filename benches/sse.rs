//! SSE decoding throughput, in events and bytes per second.
//!
//! Decodes a long recorded-style Anthropic Messages stream (`anthropic_long.sse`: 2,102
//! events, ~300 KB) pushed in realistic chunk sizes, next to a baseline measured in the same
//! run: a bare `memmem` scan for `"\n\n"` over the same bytes, the least any decoder must do.
//! Compare the ratio, not the absolute figures.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/main/target cargo bench --bench sse -- --warm-up-time 1 --measurement-time 3
//! ```

// A bench cannot reach the crate's `pub(crate)` items, so it compiles the decoder's source
// itself; `decode.rs` depends only on std, bytes, memchr and thiserror for that reason.
#[allow(dead_code, reason = "the bench drives only part of the decoder's API")]
#[path = "../src/sse/decode.rs"]
mod decode;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use crate::decode::Decoder;

/// The stream to decode.
const LONG: &[u8] = include_bytes!("../tests/fixtures/sse/anthropic_long.sse");
/// The bridge's maximum event size.
const MAX_EVENT_SIZE: usize = 16 << 20;

/// `input` cut into chunks of `size` bytes (zero-copy slices, like hyper's body chunks).
fn chunked(input: &Bytes, size: usize) -> Vec<Bytes> {
    (0..input.len())
        .step_by(size)
        .map(|start| input.slice(start..input.len().min(start + size)))
        .collect()
}

/// `input` cut after every event, as an upstream that flushes each event does.
fn per_event(input: &Bytes) -> Vec<Bytes> {
    let mut start = 0;
    let mut chunks = Vec::new();
    for end in memchr::memmem::find_iter(input, b"\n\n") {
        chunks.push(input.slice(start..end + 2));
        start = end + 2;
    }
    chunks
}

/// The relay path: decode frames, look at each type, hand the raw bytes on.
fn relay(chunks: &[Bytes]) -> usize {
    let mut decoder = Decoder::new(MAX_EVENT_SIZE);
    let mut events = 0;
    for chunk in chunks {
        decoder.push(chunk.clone());
        while let Some(frame) = decoder.next_frame().expect("no oversized event") {
            events += usize::from(frame.event_type().is_some());
            black_box(frame.into_raw());
        }
    }
    assert!(decoder.finish().is_none() && decoder.buffered() == 0);
    events
}

/// The inspecting path: also borrow each frame's data, as the interceptors do.
fn inspect(chunks: &[Bytes]) -> usize {
    let mut decoder = Decoder::new(MAX_EVENT_SIZE);
    let mut data = 0;
    for chunk in chunks {
        decoder.push(chunk.clone());
        while let Some(frame) = decoder.next_frame().expect("no oversized event") {
            black_box(frame.event_type());
            data += frame.data().map_or(0, |d| black_box(d).len());
            black_box(frame.raw());
        }
    }
    data
}

/// The baseline: count event ends with `memmem`, over one contiguous buffer.
fn baseline(input: &[u8]) -> usize {
    memchr::memmem::find_iter(input, b"\n\n").count()
}

fn decode(c: &mut Criterion) {
    let input = Bytes::from_static(LONG);
    let events = baseline(&input);
    assert_eq!(
        relay(std::slice::from_ref(&input)),
        events,
        "every frame is an event"
    );

    let mut group = c.benchmark_group("sse_decode");
    group.throughput(Throughput::ElementsAndBytes {
        elements: events as u64,
        bytes: input.len() as u64,
    });
    group.bench_function("baseline_memmem", |b| {
        b.iter(|| baseline(black_box(&input)));
    });
    for (name, chunks) in [
        ("relay/one_chunk", vec![input.clone()]),
        ("relay/4KiB_chunks", chunked(&input, 4096)),
        ("relay/1KiB_chunks", chunked(&input, 1024)),
        ("relay/event_per_chunk", per_event(&input)),
        ("relay/100B_chunks", chunked(&input, 100)),
    ] {
        group.bench_function(name, |b| b.iter(|| relay(black_box(&chunks))));
    }
    for (name, chunks) in [
        ("inspect/1KiB_chunks", chunked(&input, 1024)),
        ("inspect/event_per_chunk", per_event(&input)),
    ] {
        group.bench_function(name, |b| b.iter(|| inspect(black_box(&chunks))));
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
