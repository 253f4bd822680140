//! The engine: everything a tracing session needs that knows no family. Hooks and their
//! candidates as data ([`hook`]), strategy selection ([`select`]), the BPF object and its
//! globals ([`loader`]), the ring buffers and their sizes ([`rings`]), the
//! [`family::Family`] and [`family::Agent`] traits, the session loop ([`session`]), and the
//! outputs ([`sink`], [`records`], [`format`]).
//!
//! Dependency rule: the engine uses only `crate::kernel` and `crate::error`; it never
//! names a family (app/registry.rs is the only file that does).

pub mod args;
pub mod family;
pub mod format;
pub mod hook;
pub mod loader;
pub mod records;
pub mod rings;
pub mod select;
pub mod session;
pub mod sink;
