//! Shared test support: a scripted mock upstream HTTP server, fixture loaders and the
//! real-client request logs.
//!
//! Integration tests use it with `mod support;`. Nothing here depends on the bridge's
//! internals: the mock is a plain HTTP/1.1 + HTTP/2 server on `127.0.0.1:0`, and the fixture
//! helpers only read files under `tests/fixtures/`.
//!
//! ```ignore
//! mod support;
//! use support::{MockResponse, MockUpstream, fixture};
//!
//! let upstream = MockUpstream::start().await;
//! upstream.push(MockResponse::sse(fixture("anthropic/text_stream.upstream.sse")).chunked(vec![7, 100]));
//! // … build the bridge with base URL `upstream.base_url()`, send a request …
//! let reqs = upstream.wait_for_requests(1).await;
//! assert_eq!(reqs[0].path_and_query, "/v1/messages");
//! assert_eq!(upstream.unanswered(), 0); // no request hit an empty queue
//!
//! // Client disconnect ⇒ upstream cancelled:
//! let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
//! upstream.push(resp);
//! // … start a streaming request, ctl.send(..).await, drop the client's body …
//! ctl.closed().await;
//! ```

// Every integration test crate compiles this module but uses only part of it, and its `pub`
// items are not reachable from a test crate's root.
#![allow(dead_code, unused_imports, unreachable_pub)]

mod clients;
mod fixtures;
mod upstream;

pub use clients::{ClientRequest, client_log, compact_json, is_masked};
pub use fixtures::{SseEvent, fixture, fixture_json, fixture_path, parse_sse};
pub use upstream::{
    HeadGate, MockResponse, MockUpstream, NO_RESPONSE_QUEUED, RecordedRequest, StreamClosed,
    StreamController,
};
