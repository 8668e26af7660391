#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! tmp
pub mod core;
