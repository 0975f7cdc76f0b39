//! HTTPS served by the workers (feature `tls`).
#![cfg(feature = "tls")]
