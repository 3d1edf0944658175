//! The pep provisioning core and HTTP daemon.
