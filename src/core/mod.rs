//! The decision core: plain data in, plain data out. Nothing here does I/O or reads a clock,
//! so every branch is covered by ordinary unit tests.

pub mod alert;
pub mod decide;
pub mod drainability;
pub mod ec2_event;
pub mod interruption;
pub mod model;
pub mod offerings;
pub mod placement;
pub mod prices;
pub mod repair;
pub mod sync;
pub mod text;
pub mod time;

#[cfg(test)]
pub(crate) mod fixtures;
