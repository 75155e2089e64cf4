//! The peer framework: what every Archipelago daemon (vlmcd, mapperd, filed, radosd, the
//! null peer) shares.
//!
//! A daemon's `main` parses its flags (flattening [`PeerArgs`]), then calls [`run`] with a
//! constructor for its [`Peer`]. The framework daemonizes with a ready/failed report to the
//! parent, sets up `tracing`, writes the pidfile, joins the segment, binds the static ports
//! `--portno-start..=--portno-end` (recovering them if a previous owner died), and runs
//! `--threads` workers per port. Each worker accepts requests while fewer than `--nr-ops`
//! are in flight, passes them and the replies to the peer's own sub-requests to the
//! [`Peer`], and sleeps on the port's doorbell when idle. SIGTERM or SIGINT stop the
//! accepting; in-flight requests are finished (up to `--drain-timeout-ms`); then the ports
//! are left, which fails back anything still queued so senders can retry elsewhere.
//!
//! Invariants: a peer never has more than `nr_ops` requests accepted and unanswered; a
//! worker never blocks except in the doorbell wait.

mod args;
mod daemon;
mod logging;
mod throttle;
mod worker;

pub use args::{PeerArgs, PORTS_PER_PEER_MAX};
pub use daemon::{daemonize, Pidfile, Readiness};
pub use logging::init as init_logging;
pub use throttle::Throttle;
pub use worker::{run, Peer, PeerIo, PeerState, Responder, IDLE_TICK};
