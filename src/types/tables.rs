//! The copied tables as data: columns, value classes, primary keys, in
//! foreign-key order; and a batch of their rows, column-wise. `copy` and the
//! content checksum read and write through these; each dialect spells the
//! SQL.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The value class of a copied column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    Bytes,
}

/// A copied table: its columns (names and classes) and how many leading
/// columns form its primary key.
#[derive(Debug)]
pub(crate) struct TableSpec {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static [(&'static str, Kind)],
    pub(crate) key: usize,
}

impl TableSpec {
    pub(crate) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn key_columns(&self) -> &'static [(&'static str, Kind)] {
        self.columns.get(..self.key).unwrap_or(self.columns)
    }

    pub(crate) fn key_list(&self) -> String {
        self.key_columns()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

const I: Kind = Kind::Int;
const T: Kind = Kind::Text;
const B: Kind = Kind::Bytes;

/// The copied tables in foreign-key order (parents first), at this binary's
/// schema version (a unit test holds
/// it to the migrations).
pub(crate) const TABLES: [TableSpec; 6] = [
    TableSpec {
        name: "accounts",
        columns: &[
            ("user_id", I),
            ("email", T),
            ("email_key", T),
            ("username", T),
            ("username_key", T),
            ("pass_hash", B),
            ("created_at", I),
            ("last_login_at", I),
        ],
        key: 1,
    },
    TableSpec {
        name: "sessions",
        columns: &[
            ("token", B),
            ("user_id", I),
            ("expires_at", I),
            ("created_at", I),
        ],
        key: 1,
    },
    TableSpec {
        name: "army_loadouts",
        columns: &[
            ("user_id", I),
            ("element_id", I),
            ("army_ability_1", I),
            ("army_ability_2", I),
            ("army_ability_3", I),
            ("army_ability_4", I),
            ("ability_pawn", I),
            ("ability_knight", I),
            ("ability_bishop", I),
            ("ability_rook", I),
            ("ability_queen", I),
            ("ability_king", I),
            ("item_1", I),
            ("item_2", I),
            ("item_3", I),
            ("item_4", I),
            ("updated_at", I),
            ("version", I),
        ],
        key: 1,
    },
    TableSpec {
        name: "progression",
        columns: &[("user_id", I), ("level", I), ("xp", I), ("version", I)],
        key: 1,
    },
    TableSpec {
        name: "user_unlocks",
        columns: &[("user_id", I), ("flag_id", I), ("unlocked_at", I)],
        key: 2,
    },
    TableSpec {
        name: "battle_results",
        columns: &[
            ("user_id", I),
            ("battle_id", T),
            ("xp_delta", I),
            ("flags", T),
            ("ended_at", I),
            ("level", I),
            ("xp", I),
            ("granted", T),
        ],
        key: 2,
    },
];

/// One column of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnData {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

/// A primary-key value of the last row of a batch, where the next batch
/// starts after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyValue {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Rows of one table, column-wise (the layout PostgreSQL binds as arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) columns: Vec<ColumnData>,
    pub(crate) len: usize,
}

impl Batch {
    pub(crate) fn new(spec: &TableSpec, capacity: usize) -> Self {
        Batch {
            columns: spec
                .columns
                .iter()
                .map(|(_, k)| match k {
                    Kind::Int => ColumnData::Int(Vec::with_capacity(capacity)),
                    Kind::Text => ColumnData::Text(Vec::with_capacity(capacity)),
                    Kind::Bytes => ColumnData::Bytes(Vec::with_capacity(capacity)),
                })
                .collect(),
            len: 0,
        }
    }

    /// The primary key of the last row.
    pub(crate) fn last_key(&self, spec: &TableSpec) -> Result<Option<Vec<KeyValue>>> {
        let Some(last) = self.len.checked_sub(1) else {
            return Ok(None);
        };
        let mut key = Vec::with_capacity(spec.key);
        for col in self.columns.iter().take(spec.key) {
            let v = match col {
                ColumnData::Int(v) => v.get(last).copied().flatten().map(KeyValue::Int),
                ColumnData::Text(v) => v.get(last).cloned().flatten().map(KeyValue::Text),
                ColumnData::Bytes(v) => v.get(last).cloned().flatten().map(KeyValue::Bytes),
            };
            match v {
                Some(v) => key.push(v),
                None => {
                    return Err(Error::Constraint {
                        constraint: format!("{}_pkey", spec.name),
                        source: format!("NULL in the primary key of {}", spec.name).into(),
                    })
                }
            }
        }
        Ok(Some(key))
    }

    /// Feeds every row to `h` in the documented canonical form.
    pub(crate) fn hash_into(&self, h: &mut Sha256) {
        for row in 0..self.len {
            for col in &self.columns {
                match col {
                    ColumnData::Int(v) => match v.get(row).copied().flatten() {
                        Some(x) => {
                            h.update([1u8]);
                            h.update(x.to_be_bytes());
                        }
                        None => h.update([0u8]),
                    },
                    ColumnData::Text(v) => match v.get(row).and_then(Option::as_deref) {
                        Some(s) => hash_bytes(h, 2, s.as_bytes()),
                        None => h.update([0u8]),
                    },
                    ColumnData::Bytes(v) => match v.get(row).and_then(Option::as_deref) {
                        Some(b) => hash_bytes(h, 3, b),
                        None => h.update([0u8]),
                    },
                }
            }
        }
    }
}

pub(crate) fn hash_bytes(h: &mut Sha256, tag: u8, b: &[u8]) {
    h.update([tag]);
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_in_foreign_key_order_and_named_like_the_spec() {
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "accounts",
                "sessions",
                "army_loadouts",
                "progression",
                "user_unlocks",
                "battle_results"
            ]
        );
        assert_eq!(TABLES[4].key_list(), "user_id, flag_id");
        assert_eq!(TABLES[5].key_list(), "user_id, battle_id");
        assert_eq!(TABLES[1].key_list(), "token");
    }

    #[test]
    fn checksum_encoding_is_canonical() {
        let spec = &TABLES[3]; // progression: four integers
        let mut b = Batch::new(spec, 1);
        for (i, col) in b.columns.iter_mut().enumerate() {
            if let ColumnData::Int(v) = col {
                v.push(Some(i as i64 + 1));
            }
        }
        b.len = 1;
        let mut h = Sha256::new();
        b.hash_into(&mut h);
        let mut want = Sha256::new();
        for x in [1i64, 2, 3, 4] {
            want.update([1u8]);
            want.update(x.to_be_bytes());
        }
        assert_eq!(h.finalize(), want.finalize());
        assert_eq!(b.last_key(spec).unwrap(), Some(vec![KeyValue::Int(1)]));

        // Text and bytes carry a tag and a length, so ("ab", "") and ("a", "b")
        // hash differently; NULL differs from empty.
        let digest = |vals: &[Option<&str>]| {
            let mut h = Sha256::new();
            for v in vals {
                match v {
                    Some(s) => hash_bytes(&mut h, 2, s.as_bytes()),
                    None => h.update([0u8]),
                }
            }
            hex::encode(h.finalize())
        };
        assert_ne!(
            digest(&[Some("ab"), Some("")]),
            digest(&[Some("a"), Some("b")])
        );
        assert_ne!(digest(&[None]), digest(&[Some("")]));
    }

    #[test]
    fn empty_batches_have_no_key_and_null_keys_are_errors() {
        let spec = &TABLES[0];
        let b = Batch::new(spec, 0);
        assert_eq!(b.last_key(spec).unwrap(), None);
        let mut b = Batch::new(spec, 1);
        for col in &mut b.columns {
            match col {
                ColumnData::Int(v) => v.push(None),
                ColumnData::Text(v) => v.push(None),
                ColumnData::Bytes(v) => v.push(None),
            }
        }
        b.len = 1;
        assert!(matches!(b.last_key(spec), Err(Error::Constraint { .. })));
    }
}
