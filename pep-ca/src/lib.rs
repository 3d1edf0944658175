//! The factory CA.
