//! The SSE decoder on arbitrary bytes: decoding is the same however the input is chunked,
//! and the frames plus the remainder give back the input byte for byte.
#![no_main]

use aibridge::__bench::{chunks, decode};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, input)) = data.split_first() else {
        return;
    };
    let input = Bytes::copy_from_slice(input);
    let size = usize::from(k % 64) + 1;
    // A small event cap now and then, to reach the size-limit paths.
    let max = if k & 0x80 != 0 { 48 } else { 16 << 20 };
    let whole = decode(std::slice::from_ref(&input), max);
    let chunked = decode(&chunks(&input, size), max);
    assert_eq!(whole, chunked, "chunking changed the decoding");
    let (frames, tail, error) = whole;
    let mut all = frames.concat();
    if error.is_none() {
        if let Some(t) = tail {
            all.extend_from_slice(&t);
        }
        assert_eq!(
            all,
            &input[..],
            "frames and remainder differ from the input"
        );
    } else {
        assert!(
            input.starts_with(&all),
            "frames are not a prefix of the input"
        );
    }
});
