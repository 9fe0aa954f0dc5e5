//! The content checksum: row counts and SHA-256 of every copied table, read
//! from one consistent snapshot, identical across dialects.

use sha2::{Digest, Sha256};

use super::copy_io::Reader;
use crate::db::Db;
use crate::error::Result;
use crate::types::copy::{ContentChecksum, CopyOptions, TableChecksum};
use crate::types::tables::{KeyValue, TABLES};

/// Row counts and content checksums of every copied table of `db`, read from
/// one consistent snapshot. Computed identically on both dialects (see the
/// [`ContentChecksum`]), so equal content gives equal
/// checksums across SQLite and PostgreSQL.
///
/// # Errors
/// [`Error::Closed`](crate::Error::Closed), [`Error::Unavailable`](crate::Error::Unavailable), [`Error::Timeout`](crate::Error::Timeout) or a driver
/// error (also when a copied table does not exist: migrate first).
pub async fn content_checksum(db: &Db) -> Result<ContentChecksum> {
    content_checksum_with(db, CopyOptions::default().batch_size).await
}

pub(super) async fn content_checksum_with(db: &Db, batch: usize) -> Result<ContentChecksum> {
    let mut reader = Reader::open(db).await?;
    let sum = checksum_with(&mut reader, batch).await?;
    reader.finish().await?;
    Ok(sum)
}

pub(super) async fn checksum_with(reader: &mut Reader, limit: usize) -> Result<ContentChecksum> {
    let mut tables = Vec::with_capacity(TABLES.len());
    let mut all = Sha256::new();
    for spec in &TABLES {
        let mut h = Sha256::new();
        let mut rows = 0u64;
        let mut after: Option<Vec<KeyValue>> = None;
        loop {
            let batch = reader.batch(spec, after.as_deref(), limit).await?;
            batch.hash_into(&mut h);
            rows += batch.len as u64;
            if batch.len < limit {
                break;
            }
            after = batch.last_key(spec)?;
        }
        let sha256 = hex::encode(h.finalize());
        all.update(format!("{}\0{rows}\0{sha256}\n", spec.name).as_bytes());
        tables.push(TableChecksum {
            table: spec.name,
            rows,
            sha256,
        });
    }
    Ok(ContentChecksum {
        tables,
        sha256: hex::encode(all.finalize()),
    })
}
