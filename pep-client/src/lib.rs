//! The gateway-side client of pep.
