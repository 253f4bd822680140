//! The application: the command line, the one registry of families, the session a command
//! runs, and doctor. Dependency rule: app may use every other layer; nothing uses app.

pub mod cli;
pub mod doctor;
pub mod generate;
pub mod registry;
pub mod replay;
pub mod session;
