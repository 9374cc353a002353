//! Decoder tests: every fixture split at every byte boundary and in random chunks, checked
//! against a naive whole-input reference decoder; edge cases of the SSE standard; properties.

mod support;

use std::borrow::Cow;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use self::support::*;
use super::Decoder;
use super::decode::DecodeError;

const ANTHROPIC: &[u8] = include_bytes!("../../../tests/fixtures/sse/anthropic_messages.sse");
const CHAT: &[u8] = include_bytes!("../../../tests/fixtures/sse/openai_chat.sse");
const RESPONSES: &[u8] = include_bytes!("../../../tests/fixtures/sse/openai_responses.sse");
const LONG: &[u8] = include_bytes!("../../../tests/fixtures/sse/anthropic_long.sse");

/// A small stream with every feature, for splits at every pair of boundaries.
const EDGES: &[u8] = b"\xEF\xBB\xBF: hello\n\nevent: a\ndata:x\ndata:  two\r\n\r\
data\nevent\r\nid: 7\nretry: 10\n\n\n: only a comment\r\r\
event: b\rdata: 1:2\r\n\rdata: truncated";

// --- fixtures ---

#[test]
fn anthropic_fixture_decodes_the_same_for_every_split() {
    let frames = check_every_split(ANTHROPIC);
    let types: Vec<_> = frames.iter().map(|f| f.event_type().unwrap()).collect();
    assert_eq!(types.len(), 22);
    assert_eq!(types[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(types[20..], ["message_delta", "message_stop"]);
    for frame in &frames {
        assert_eq!(json(frame)["type"], frame.event_type().unwrap());
    }
    let input: String = frames
        .iter()
        .map(json)
        .filter(|v| v["delta"]["type"] == "input_json_delta")
        .map(|v| v["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    let input: Value = serde_json::from_str(&input).unwrap();
    assert_eq!(
        input,
        serde_json::json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(json(&frames[20])["usage"]["output_tokens"], 89);
}

#[test]
fn anthropic_fixture_with_crlf_cr_and_mixed_line_ends_decodes_the_same() {
    let (_, lf, _) = decode_whole(ANTHROPIC);
    for input in [
        with_terminator(ANTHROPIC, b"\r\n"),
        with_terminator(ANTHROPIC, b"\r"),
        with_mixed_terminators(ANTHROPIC),
    ] {
        let frames = check_every_split(&input);
        assert_eq!(frames.iter().map(event_of).collect::<Vec<_>>(), lf);
    }
}

#[test]
fn anthropic_fixture_after_a_bom_decodes_the_same() {
    let (_, lf, _) = decode_whole(ANTHROPIC);
    let input = [BOM, ANTHROPIC].concat();
    let frames = check_every_split(&input);
    assert!(frames[0].raw().starts_with(BOM), "the BOM is relayed");
    assert_eq!(frames.iter().map(event_of).collect::<Vec<_>>(), lf);
}

#[test]
fn openai_chat_fixture_decodes_the_same_for_every_split() {
    let frames = check_every_split(CHAT);
    assert_eq!(frames.len(), 8);
    assert!(frames.iter().all(|f| f.event_type().is_none()));
    assert_eq!(frames[7].data().as_deref(), Some(&b"[DONE]"[..]));
    let chunks: Vec<Value> = frames[..7].iter().map(json).collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello! How can I help you today?");
    assert_eq!(chunks[6]["usage"]["total_tokens"], 29);
}

#[test]
fn openai_responses_fixture_decodes_the_same_for_every_split() {
    let frames = check_every_split(RESPONSES);
    assert_eq!(frames.len(), 16);
    assert_eq!(frames[0].event_type(), Some("response.created"));
    assert_eq!(frames[15].event_type(), Some("response.completed"));
    for frame in &frames {
        assert_eq!(json(frame)["type"], frame.event_type().unwrap());
    }
    let completed = json(&frames[15]);
    assert_eq!(completed["response"]["usage"]["total_tokens"], 63);
}

#[test]
fn long_fixture_decodes_the_same_in_realistic_chunks() {
    let input = Bytes::from_static(LONG);
    let expected = reference(LONG);
    assert_eq!(expected.frames.len(), 2102);
    assert!(expected.tail.is_empty());
    for size in [1, 7, 100, 1024, 4096, 16384] {
        let cuts: Vec<usize> = (size..LONG.len()).step_by(size).collect();
        check(&input, &cuts, &expected);
    }
    let per_event: Vec<usize> = expected.frames.iter().map(|(r, _)| r.end).collect();
    let frames = check(&input, &per_event, &expected);
    assert_eq!(frames[2101].event_type(), Some("message_stop"));
}

#[test]
fn edge_case_stream_decodes_the_same_for_every_pair_of_splits() {
    check_every_pair(EDGES);
    check_every_pair(&with_terminator(EDGES, b"\r"));
    let (raws, events, tail) = decode_whole(EDGES);
    let expected: [(&[u8], Event); 6] = [
        (b"\xEF\xBB\xBF: hello\n\n", (None, None)),
        (
            b"event: a\ndata:x\ndata:  two\r\n\r",
            (Some("a".into()), Some(b"x\n two".to_vec())),
        ),
        (
            b"data\nevent\r\nid: 7\nretry: 10\n\n",
            (None, Some(Vec::new())),
        ),
        (b"\n", (None, None)),
        (b": only a comment\r\r", (None, None)),
        (
            b"event: b\rdata: 1:2\r\n\r",
            (Some("b".into()), Some(b"1:2".to_vec())),
        ),
    ];
    assert_eq!(raws.len(), expected.len());
    for ((raw, event), (want_raw, want_event)) in raws.iter().zip(events).zip(expected) {
        assert_eq!(raw[..], want_raw[..]);
        assert_eq!(event, want_event);
    }
    assert_eq!(tail.as_deref(), Some(&b"data: truncated"[..]));
}

// --- edge cases ---

#[test]
fn crlf_stream_keeps_every_terminator_in_its_frame() {
    let (raws, events, tail) = decode_whole(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n");
    assert_eq!(raws, ["event: a\r\ndata: 1\r\n\r\n", "data: 2\r\n\r\n"]);
    assert_eq!(events[0], (Some("a".into()), Some(b"1".to_vec())));
    assert_eq!(events[1], (None, Some(b"2".to_vec())));
    assert_eq!(tail, None);
}

#[test]
fn bare_cr_stream_decodes_and_its_last_frame_waits_for_eof() {
    let mut decoder = Decoder::new(MAX);
    decoder.push(Bytes::from_static(b"event: a\rdata: 1\r\rdata: 2\r\r"));
    let first = decoder.next_frame().unwrap().unwrap();
    assert_eq!(first.raw()[..], b"event: a\rdata: 1\r\r"[..]);
    assert_eq!(event_of(&first), (Some("a".into()), Some(b"1".to_vec())));
    // The final CR might be the first half of a CRLF: not decided before EOF.
    assert!(decoder.next_frame().unwrap().is_none());
    assert_eq!(decoder.buffered(), 9);
    assert_eq!(decoder.finish(), None);
    let last = decoder.next_frame().unwrap().unwrap();
    assert_eq!(last.raw()[..], b"data: 2\r\r"[..]);
    assert_eq!(last.data().as_deref(), Some(&b"2"[..]));
    assert!(decoder.next_frame().unwrap().is_none());
}

#[test]
fn mixed_line_ends_join_data_lines_with_lf() {
    let (raws, events, _) = decode_whole(b"data: a\r\ndata: b\rdata: c\n\r\n");
    assert_eq!(raws, ["data: a\r\ndata: b\rdata: c\n\r\n"]);
    assert_eq!(events[0].1.as_deref(), Some(&b"a\nb\nc"[..]));
}

#[test]
fn cr_at_chunk_end_keeps_the_following_lf_in_the_same_frame() {
    let mut decoder = Decoder::new(MAX);
    decoder.push(Bytes::from_static(b"data: a\n\r"));
    assert!(decoder.next_frame().unwrap().is_none());
    assert_eq!(decoder.buffered(), 9);
    let second = Bytes::from_static(b"\ndata: b\n\n");
    decoder.push(second.clone());
    let first = decoder.next_frame().unwrap().unwrap();
    assert_eq!(first.raw()[..], b"data: a\n\r\n"[..]);
    let next = decoder.next_frame().unwrap().unwrap();
    assert_eq!(next.raw()[..], b"data: b\n\n"[..]);
    assert_eq!(next.raw().as_ptr(), second[1..].as_ptr(), "not copied");
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn cr_at_chunk_end_followed_by_another_line_ends_the_frame_without_copying() {
    let mut decoder = Decoder::new(MAX);
    let first = Bytes::from_static(b"data: a\n\r");
    decoder.push(first.clone());
    assert!(decoder.next_frame().unwrap().is_none());
    decoder.push(Bytes::from_static(b"data: b\n\n"));
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(frame.raw(), &first);
    assert_eq!(frame.raw().as_ptr(), first.as_ptr(), "not copied");
    assert_eq!(
        decoder.next_frame().unwrap().unwrap().raw()[..],
        b"data: b\n\n"[..]
    );
}

#[test]
fn bom_is_ignored_only_at_the_start_of_the_stream() {
    let (raws, events, _) =
        decode_whole(b"\xEF\xBB\xBFevent: x\ndata: 1\n\n\xEF\xBB\xBFdata: 2\n\n");
    assert_eq!(raws[0][..3], *BOM, "relayed");
    assert_eq!(events[0], (Some("x".into()), Some(b"1".to_vec())));
    // Later, the BOM is part of the field name, which is then unknown.
    assert_eq!(events[1], (None, None));
    // A line holding only the BOM is blank.
    let (raws, events, _) = decode_whole(b"\xEF\xBB\xBF\ndata: 1\n\n");
    assert_eq!(raws, [&b"\xEF\xBB\xBF\n"[..], b"data: 1\n\n"]);
    assert_eq!(events[0], (None, None));
    // A partial BOM is not a BOM.
    let (_, events, _) = decode_whole(b"\xEF\xBBdata: 1\n\n");
    assert_eq!(events[0], (None, None));
}

#[test]
fn comment_only_frames_are_yielded_without_data() {
    let (raws, events, _) = decode_whole(b": ping\n\n:\n\nevent: a\n: note\ndata: 1\n\n");
    assert_eq!(
        raws,
        [
            &b": ping\n\n"[..],
            b":\n\n",
            b"event: a\n: note\ndata: 1\n\n"
        ]
    );
    assert_eq!(events[0], (None, None));
    assert_eq!(events[1], (None, None));
    assert_eq!(events[2], (Some("a".into()), Some(b"1".to_vec())));
}

#[test]
fn multi_line_data_is_joined_with_lf_and_single_line_data_is_borrowed() {
    let (frames, _) = run(
        &[Bytes::from_static(
            b"data: a\ndata:\ndata: b\n\ndata: c\n\n",
        )],
        MAX,
    );
    assert!(
        matches!(frames[0].data(), Some(Cow::Owned(ref d)) if d == b"a\n\nb"),
        "several data lines are joined into an owned buffer"
    );
    let Some(Cow::Borrowed(single)) = frames[1].data() else {
        panic!("a single data line is borrowed");
    };
    assert_eq!(single, b"c");
    assert_eq!(single.as_ptr(), frames[1].raw()[6..].as_ptr());
}

#[test]
fn only_one_space_after_the_colon_is_dropped() {
    let (_, events, _) = decode_whole(b"data:x\n\ndata:  x\n\ndata: \n\ndata:\tx\n\ndata: a:b\n\n");
    let data: Vec<_> = events.into_iter().map(|e| e.1.unwrap()).collect();
    assert_eq!(data, [&b"x"[..], b" x", b"", b"\tx", b"a:b"]);
}

#[test]
fn field_without_colon_has_an_empty_value() {
    let (_, events, _) =
        decode_whole(b"data\n\nevent\ndata: 1\n\nevent: a\nevent\ndata: 1\n\nfoo\n\n");
    assert_eq!(events[0], (None, Some(Vec::new())));
    assert_eq!(events[1], (None, Some(b"1".to_vec())));
    assert_eq!(events[2], (None, Some(b"1".to_vec())), "empty type wins");
    assert_eq!(events[3], (None, None));
}

#[test]
fn last_event_field_wins_and_other_fields_are_ignored() {
    let (_, events, _) = decode_whole(
        b"event: a\nevent: b\nid: 1\nretry: 5\nDATA: no\nfoo: bar\ndata: 1\n\nevent: lone\n\n",
    );
    assert_eq!(events[0], (Some("b".into()), Some(b"1".to_vec())));
    assert_eq!(events[1], (Some("lone".into()), None));
}

#[test]
fn non_utf8_event_type_is_none() {
    let (_, events, _) = decode_whole(b"event: \xFF\xFE\ndata: 1\n\n");
    assert_eq!(events[0], (None, Some(b"1".to_vec())));
}

#[test]
fn stray_blank_lines_are_frames_of_their_own() {
    let (raws, events, tail) = decode_whole(b"\n\ndata: 1\n\n\r\n");
    assert_eq!(raws, [&b"\n"[..], b"\n", b"data: 1\n\n", b"\r\n"]);
    assert_eq!(events.iter().filter(|e| e.1.is_some()).count(), 1);
    assert_eq!(tail, None);
}

#[test]
fn stream_ending_without_a_blank_line_returns_the_tail_from_finish() {
    let mut decoder = Decoder::new(MAX);
    decoder.push(Bytes::from_static(b"data: 1\n\nevent: message_stop\n"));
    decoder.push(Bytes::from_static(b"data: {}\n"));
    assert_eq!(
        decoder.next_frame().unwrap().unwrap().raw()[..],
        b"data: 1\n\n"[..]
    );
    assert!(decoder.next_frame().unwrap().is_none());
    assert_eq!(decoder.buffered(), 29);
    let tail = decoder.finish().unwrap();
    assert_eq!(tail[..], b"event: message_stop\ndata: {}\n"[..]);
    assert!(decoder.next_frame().unwrap().is_none(), "not dispatched");
    assert_eq!(decoder.finish(), None);
}

#[test]
fn finish_before_draining_keeps_frames_ahead_of_the_tail() {
    let mut decoder = Decoder::new(MAX);
    decoder.push(Bytes::from_static(b"data: 1\n\ndata: 2\n\ndata: 3"));
    assert_eq!(decoder.finish().as_deref(), Some(&b"data: 3"[..]));
    let raws: Vec<_> = std::iter::from_fn(|| decoder.next_frame().unwrap()).collect();
    assert_eq!(raws.len(), 2);
    assert_eq!(raws[1].data().as_deref(), Some(&b"2"[..]));
}

#[test]
fn empty_chunks_are_ignored_and_frames_may_span_many_chunks() {
    let mut decoder = Decoder::new(MAX);
    for chunk in ["", "da", "", "ta: ", "1", "\n", "\n", "data: 2\n\n"] {
        decoder.push(Bytes::from_static(chunk.as_bytes()));
    }
    assert_eq!(decoder.buffered(), 18);
    let (first, second) = (decoder.next_frame().unwrap(), decoder.next_frame().unwrap());
    assert_eq!(first.unwrap().raw()[..], b"data: 1\n\n"[..]);
    assert_eq!(second.unwrap().raw()[..], b"data: 2\n\n"[..]);
    assert!(decoder.next_frame().unwrap().is_none());
    assert_eq!(decoder.finish(), None);
}

#[test]
fn oversized_complete_event_is_an_error_after_the_events_before_it() {
    let input = b"data: 1\n\ndata: 0123456789012345678901234567890123\n\n";
    let mut decoder = Decoder::new(32);
    decoder.push(Bytes::from_static(input));
    assert_eq!(
        decoder.next_frame().unwrap().unwrap().raw()[..],
        b"data: 1\n\n"[..]
    );
    let err = decoder.next_frame().unwrap_err();
    assert_eq!(err, DecodeError::TooLarge(32));
    assert_eq!(err.to_string(), "event exceeds 32 bytes");
    assert_eq!(
        decoder.next_frame().unwrap_err(),
        err,
        "the decoder is spent"
    );
    let tail = decoder.finish().unwrap();
    assert_eq!(
        tail[..],
        input[9..],
        "every byte not yielded is still relayable"
    );
    assert_eq!(decoder.next_frame().unwrap_err(), err);
}

#[test]
fn oversized_event_is_an_error_before_it_ends() {
    let mut decoder = Decoder::new(32);
    for _ in 0..3 {
        decoder.push(Bytes::from_static(b"data: 012\n"));
        assert!(decoder.next_frame().unwrap().is_none());
    }
    decoder.push(Bytes::from_static(b"data: 012\n"));
    assert_eq!(decoder.next_frame().unwrap_err(), DecodeError::TooLarge(32));
    assert_eq!(decoder.finish().map(|t| t.len()), Some(40));
}

#[test]
fn event_of_exactly_the_maximum_size_is_accepted() {
    let (frames, tail) = run(&[Bytes::from_static(b"data: 0123\n\n")], 12);
    assert_eq!(frames.len(), 1);
    assert_eq!(tail, Ok(None));
    let (frames, tail) = run(&[Bytes::from_static(b"data: 01234\n\n")], 12);
    assert!(frames.is_empty());
    assert_eq!(tail, Err(DecodeError::TooLarge(12)));
}

// --- properties ---

/// Inputs made of SSE-ish tokens, so that fields, comments and every line end are common.
fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(&b"data"[..]),
        Just(&b"event"[..]),
        Just(&b":"[..]),
        Just(&b" "[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"x"[..]),
        Just(&b"\xEF\xBB\xBF"[..]),
        Just(&b"\xEF"[..]),
        Just(&b"id"[..]),
    ];
    prop::collection::vec(token, 0..80).prop_map(|tokens| tokens.concat())
}

/// Cut points inside an input of up to `len` bytes.
fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..len.max(1), 0..12)
}

proptest! {
    #[test]
    fn sse_like_bytes_decode_like_the_reference_under_any_chunking(
        input in sse_like(),
        cuts in cuts(400),
    ) {
        let input = Bytes::from(input);
        check(&input, &cuts, &reference(&input));
    }

    #[test]
    fn arbitrary_bytes_decode_like_the_reference_under_any_chunking(
        input in prop::collection::vec(any::<u8>(), 0..300),
        cuts in cuts(300),
    ) {
        let input = Bytes::from(input);
        check(&input, &cuts, &reference(&input));
    }

    #[test]
    fn fixtures_decode_the_same_in_random_chunks(
        fixture in 0..3_usize,
        sizes in prop::collection::vec(1..600_usize, 1..40),
    ) {
        let input = Bytes::from_static([ANTHROPIC, CHAT, RESPONSES][fixture]);
        let cuts: Vec<usize> = sizes
            .iter()
            .cycle()
            .scan(0, |at, size| { *at += size; Some(*at) })
            .take_while(|&at| at < input.len())
            .collect();
        check(&input, &cuts, &reference(&input));
    }

    #[test]
    fn size_limit_fails_exactly_at_the_first_oversized_event(
        input in sse_like(),
        cuts in cuts(400),
        max in 0..48_usize,
    ) {
        let input = Bytes::from(input);
        let expected = reference(&input);
        let (frames, result) = run(&split(&input, &cuts), max);
        let allowed = expected.frames.iter().take_while(|(r, _)| r.len() <= max).count();
        prop_assert_eq!(frames.len(), allowed);
        for (frame, (range, _)) in frames.iter().zip(&expected.frames) {
            prop_assert_eq!(&frame.raw()[..], &input[range.clone()]);
        }
        let too_large = allowed < expected.frames.len() || expected.tail.len() > max;
        prop_assert_eq!(result.is_err(), too_large);
    }
}
