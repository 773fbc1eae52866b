//! Rows as comparable bytes ([`RowCodec`]), and keys interned as dense ids ([`KeyIndex`]): the groups of an aggregate,
//! the keys of a join, the rows of an integrated result.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int8Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{Row, RowConverter, RowParser, Rows, SortField};

use crate::error::Result;

/// Turns columns into comparable, hashable rows and back: any number of columns, none included (every row is then the
/// same, one byte).
pub(crate) struct RowCodec {
    converter: RowConverter,
    /// No columns: a constant column stands in.
    empty: bool,
}

impl std::fmt::Debug for RowCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCodec")
            .field("empty", &self.empty)
            .finish_non_exhaustive()
    }
}

impl RowCodec {
    pub(crate) fn new(types: &[DataType]) -> Result<RowCodec> {
        RowCodec::with_fields(types.iter().map(|t| SortField::new(t.clone())).collect())
    }

    /// A codec of fields with their sort options (descending, nulls first): rows then compare as the order says.
    pub(crate) fn with_fields(fields: Vec<SortField>) -> Result<RowCodec> {
        let empty = fields.is_empty();
        let fields = if empty {
            vec![SortField::new(DataType::Int8)]
        } else {
            fields
        };
        Ok(RowCodec {
            converter: RowConverter::new(fields)?,
            empty,
        })
    }

    /// The rows of `columns` (`rows` of them: a codec without columns needs the count).
    pub(crate) fn rows(&self, columns: &[ArrayRef], rows: usize) -> Result<Rows> {
        if self.empty {
            let dummy: ArrayRef = Arc::new(Int8Array::from(vec![0i8; rows]));
            return Ok(self.converter.convert_columns(&[dummy])?);
        }
        Ok(self.converter.convert_columns(columns)?)
    }

    /// The columns of `rows` (none for a codec without columns).
    pub(crate) fn decode<'a>(
        &self,
        rows: impl IntoIterator<Item = Row<'a>>,
    ) -> Result<Vec<ArrayRef>> {
        let columns = self.converter.convert_rows(rows)?;
        Ok(if self.empty { Vec::new() } else { columns })
    }

    /// An empty set of rows of this codec, to push rows into.
    pub(crate) fn empty_rows(&self) -> Rows {
        self.converter.empty_rows(0, 0)
    }

    /// Reads stored bytes back as rows of this codec.
    pub(crate) fn parser(&self) -> RowParser {
        self.converter.parser()
    }
}

/// Keys interned as dense ids, in the order first seen: a key's id never changes while the index lives.
pub(crate) struct KeyIndex {
    codec: RowCodec,
    keys: Rows,
    hashes: Vec<u64>,
    table: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl KeyIndex {
    pub(crate) fn new(codec: RowCodec) -> KeyIndex {
        let keys = codec.empty_rows();
        KeyIndex {
            codec,
            keys,
            hashes: Vec::new(),
            table: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    /// Keys interned.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    pub(crate) fn codec(&self) -> &RowCodec {
        &self.codec
    }

    /// The id of every row of `columns`, each key added when new. Returns the ids and how many keys were new.
    pub(crate) fn intern(&mut self, columns: &[ArrayRef], rows: usize) -> Result<Vec<u32>> {
        let converted = self.codec.rows(columns, rows)?;
        Ok(self.intern_rows(&converted))
    }

    /// The id of every row of `rows` (rows of this index's codec), each key added when new.
    pub(crate) fn intern_rows(&mut self, rows: &Rows) -> Vec<u32> {
        let mut ids = Vec::with_capacity(rows.num_rows());
        for row in rows {
            ids.push(self.intern_one(row));
        }
        ids
    }

    /// The id of one row of this index's codec, added when new.
    pub(crate) fn intern_one(&mut self, row: Row<'_>) -> u32 {
        let bytes = row.data();
        let h = std::hash::BuildHasher::hash_one(&self.hasher, bytes);
        let (keys, hashes) = (&self.keys, &self.hashes);
        if let Some(&id) = self.table.find(h, |&id| {
            hashes[id as usize] == h && keys.row(id as usize).data() == bytes
        }) {
            return id;
        }
        let id = self.hashes.len() as u32;
        self.keys.push(row);
        self.hashes.push(h);
        let hashes = &self.hashes;
        self.table.insert_unique(h, id, |&id| hashes[id as usize]);
        id
    }

    /// The id of every row of `columns` that is a key already (`None` for the others); nothing is added.
    pub(crate) fn find(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<u32>>> {
        let converted = self.codec.rows(columns, rows)?;
        Ok(converted.iter().map(|row| self.find_one(row)).collect())
    }

    pub(crate) fn find_one(&self, row: Row<'_>) -> Option<u32> {
        let bytes = row.data();
        let h = std::hash::BuildHasher::hash_one(&self.hasher, bytes);
        self.table
            .find(h, |&id| {
                self.hashes[id as usize] == h && self.keys.row(id as usize).data() == bytes
            })
            .copied()
    }

    /// The columns of the keys `ids`, in that order.
    pub(crate) fn columns(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        self.codec
            .decode(ids.iter().map(|&id| self.keys.row(id as usize)))
    }

    /// Bytes held: the keys, their hashes and the table.
    pub(crate) fn bytes(&self) -> usize {
        self.keys.size() + self.hashes.len() * 8 + self.table.capacity() * 5
    }

    /// Forgets every key.
    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.hashes.clear();
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    #[test]
    fn keys_get_the_same_id_every_time_and_decode_back() {
        let mut index =
            KeyIndex::new(RowCodec::new(&[DataType::Utf8, DataType::Int64]).expect("codec"));
        let names: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            None,
            Some("a"),
            Some("b"),
        ]));
        let numbers: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 1, 2]));
        let ids = index
            .intern(&[names.clone(), numbers.clone()], 4)
            .expect("intern");
        assert_eq!(ids, vec![0, 1, 0, 2]);
        assert_eq!(index.len(), 3);
        let again = index.intern(&[names, numbers], 4).expect("intern");
        assert_eq!(again, ids);
        let other: ArrayRef = Arc::new(StringArray::from(vec![Some("b"), Some("c")]));
        let two: ArrayRef = Arc::new(Int64Array::from(vec![2, 2]));
        assert_eq!(
            index.find(&[other, two], 2).expect("find"),
            vec![Some(2), None]
        );
        let columns = index.columns(&[2, 1]).expect("decode");
        assert_eq!(
            columns[0].as_ref(),
            &StringArray::from(vec![Some("b"), None]) as &dyn datafusion::arrow::array::Array
        );
    }

    #[test]
    fn a_codec_without_columns_has_one_key() {
        let mut index = KeyIndex::new(RowCodec::new(&[]).expect("codec"));
        assert_eq!(index.intern(&[], 3).expect("intern"), vec![0, 0, 0]);
        assert!(index.columns(&[0]).expect("decode").is_empty());
    }
}
