#![cfg(feature = "mcp-server")]
