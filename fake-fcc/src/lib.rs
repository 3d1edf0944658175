//! A simulated FCC gateway.
