//! The FCC wire protocol (see `docs/protocol.md`).
