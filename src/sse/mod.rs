//! Server-sent events: an incremental zero-copy decoder and small encoders.
