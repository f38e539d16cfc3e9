//! The WebSocket transport (tokio-tungstenite). Work in progress.
