//! The tooling layer: copying a database, checksumming its content,
//! verifying its schema, reading its catalog. Built on the handle
//! ([`Db`](crate::Db)) and the dialects; nothing below depends on it.

pub(crate) mod checksum;
pub(crate) mod compare;
pub(crate) mod copy;
mod copy_io;
pub(crate) mod introspect;
pub(crate) mod verify;
