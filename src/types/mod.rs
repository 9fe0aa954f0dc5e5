//! Leaf types of the tooling layer: schemas as read from a catalog, the
//! copied tables as data, and what `copy` and `verify` report. They hold no
//! SQL and depend on nothing above the error and configuration types.

pub(crate) mod copy;
pub(crate) mod replica;
pub(crate) mod schema;
pub(crate) mod tables;
pub(crate) mod verify;
