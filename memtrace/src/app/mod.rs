//! The application: the command line, the one registry of families, the session a command
//! runs, doctor, and the always-on outputs (metrics, recording) with replay and dump. Dependency rule: app may use every other layer; nothing uses app.

pub mod cli;
pub mod doctor;
pub mod dump;
pub mod generate;
pub mod metrics;
pub mod outputs;
pub mod record;
pub mod registry;
pub mod replay;
pub mod session;
pub mod units;
