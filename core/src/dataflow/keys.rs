//! Rows as comparable bytes ([`RowCodec`]), and keys interned as dense ids ([`KeyIndex`]): the groups of an aggregate,
//! the keys of a join, the rows of an integrated result.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int8Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::row::{Row, RowConverter, RowParser, Rows, SortField};

use super::chunked::Chunked;

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

/// True for the types a key of integers holds exactly as an `i64`.
fn integer_like(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Time32(_)
            | DataType::Time64(_)
    )
}

/// How keys are held: as integers (every column integer-like, up to 8 of them: no encoding to compare or hash), or
/// as encoded rows.
enum Store {
    Ints {
        types: Vec<DataType>,
        /// Each key's values, `types.len()` per key (0 where null).
        values: Chunked<i64>,
        /// Each key's nulls, a bit per column.
        nulls: Chunked<u8>,
        /// A key of one column: the id of NULL (kept out of the table, so the table compares values alone).
        null_id: Option<u32>,
    },
    Rows {
        codec: RowCodec,
        parser: RowParser,
        keys: RowArena,
    },
}

/// Encoded rows in blocks that are never reallocated once full-sized (as [`Chunked`] holds its elements): a key
/// table's rows grow without being copied.
#[derive(Default)]
struct RowArena {
    blocks: Vec<Vec<u8>>,
    /// Each row's block, start and length.
    spans: Chunked<[u32; 3]>,
}

impl RowArena {
    /// Bytes a block holds (a longer row gets a block of its own); the first block grows to it as a `Vec` does.
    const BLOCK: usize = 1 << 20;

    #[inline]
    fn push(&mut self, row: &[u8]) {
        let full = self
            .blocks
            .last()
            .is_none_or(|b| b.len() + row.len() > b.capacity() && b.capacity() >= Self::BLOCK);
        if full {
            self.blocks.push(if self.blocks.is_empty() {
                Vec::new()
            } else {
                Vec::with_capacity(Self::BLOCK.max(row.len()))
            });
        }
        let b = self.blocks.len() - 1;
        let block = &mut self.blocks[b];
        let start = block.len();
        block.extend_from_slice(row);
        self.spans.push([b as u32, start as u32, row.len() as u32]);
    }

    #[inline]
    fn get(&self, id: usize) -> &[u8] {
        let [b, start, len] = self.spans[id];
        &self.blocks[b as usize][start as usize..(start + len) as usize]
    }

    fn size(&self) -> usize {
        self.blocks.iter().map(Vec::capacity).sum::<usize>() + self.spans.capacity() * 12
    }

    fn clear(&mut self) {
        self.blocks.clear();
        self.spans.clear();
    }
}

/// Keys interned as dense ids, in the order first seen: a key's id never changes while the index lives.
pub(crate) struct KeyIndex {
    store: Store,
    hashes: Chunked<u64>,
    table: IdTable,
    hasher: hashbrown::DefaultHashBuilder,
}

/// The ids of a [`KeyIndex`] by their keys' hashes, grown a little at a time. A hash table that outgrows itself moves
/// every entry at once: a live append waited 50-100 ms each time the table of a view keyed by order (a million orders
/// and more) doubled. Past [`IdTable::GROW_APART`] ids, a full table is instead replaced by one twice its size that
/// takes the new ids, and the ids of the old one move into it a few per insert; until they all have, a key not in the
/// new table is looked up in the old one too.
#[derive(Default)]
struct IdTable {
    table: hashbrown::HashTable<u32>,
    /// The table being emptied into `table`, while it is.
    growing: Option<Box<Growing>>,
}

/// A table being emptied into a bigger one.
struct Growing {
    old: hashbrown::HashTable<u32>,
    /// Its ids below this are in the new table too (an id is in at most one table otherwise: the new ones are added
    /// to the new table alone).
    moved: u32,
    /// The ids when it was replaced: the ones that may be in it.
    end: u32,
}

impl IdTable {
    /// Tables smaller than this grow at once (as hash tables do): moving them takes well under a millisecond.
    const GROW_APART: usize = 1 << 16;
    /// Ids moved from the old table per insert: it is empty before the new table is full.
    const MOVE_PER_INSERT: u32 = 4;

    #[inline]
    fn find(&self, hash: u64, mut eq: impl FnMut(&u32) -> bool) -> Option<&u32> {
        let found = self.table.find(hash, &mut eq);
        match &self.growing {
            Some(growing) if found.is_none() => growing.old.find(hash, eq),
            _ => found,
        }
    }

    /// Adds `id` (new), whose hash is `hashes[id]`.
    #[inline]
    fn insert_unique(&mut self, hash: u64, id: u32, hashes: &Chunked<u64>) {
        if self.growing.is_none()
            && self.table.len() == self.table.capacity()
            && self.table.len() >= Self::GROW_APART
        {
            let bigger = hashbrown::HashTable::with_capacity(self.table.capacity() * 2);
            self.growing = Some(Box::new(Growing {
                old: std::mem::replace(&mut self.table, bigger),
                moved: 0,
                end: id,
            }));
        }
        self.table
            .insert_unique(hash, id, |&id| hashes[id as usize]);
        if self.growing.is_some() {
            self.move_some(hashes);
        }
    }

    fn move_some(&mut self, hashes: &Chunked<u64>) {
        let Some(growing) = &mut self.growing else {
            return;
        };
        for _ in 0..Self::MOVE_PER_INSERT {
            if growing.moved >= growing.end {
                self.growing = None;
                return;
            }
            let id = growing.moved;
            growing.moved += 1;
            let hash = hashes[id as usize];
            if growing.old.find(hash, |&other| other == id).is_some() {
                self.table
                    .insert_unique(hash, id, |&id| hashes[id as usize]);
            }
        }
    }

    fn capacity(&self) -> usize {
        self.table.capacity() + self.growing.as_ref().map_or(0, |g| g.old.capacity())
    }

    fn clear(&mut self) {
        *self = IdTable::default();
    }
}

impl KeyIndex {
    /// An index of keys of `types` (none: one key, the empty one).
    pub(crate) fn new(types: &[DataType]) -> Result<KeyIndex> {
        let store = if !types.is_empty() && types.len() <= 8 && types.iter().all(integer_like) {
            Store::Ints {
                types: types.to_vec(),
                values: Chunked::new(),
                nulls: Chunked::new(),
                null_id: None,
            }
        } else {
            let codec = RowCodec::new(types)?;
            Store::Rows {
                parser: codec.parser(),
                codec,
                keys: RowArena::default(),
            }
        };
        Ok(KeyIndex {
            store,
            hashes: Chunked::new(),
            table: IdTable::default(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        })
    }

    /// Keys interned.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The id of every row of `columns` (`rows` of them), each key added when new.
    pub(crate) fn intern(&mut self, columns: &[ArrayRef], rows: usize) -> Result<Vec<u32>> {
        Ok(self
            .lookup(columns, rows)?
            .into_iter()
            .map(|id| id.expect("interned"))
            .collect())
    }

    /// The id of every row of `columns` that is a key already (`None` for the others); nothing is added.
    pub(crate) fn find(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<u32>>> {
        match &self.store {
            Store::Ints { .. } => self.find_ints(columns, rows),
            Store::Rows { .. } => self.find_rows(columns, rows),
        }
    }

    fn find_rows(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<u32>>> {
        let Store::Rows { codec, keys, .. } = &self.store else {
            unreachable!("called for rows")
        };
        let converted = codec.rows(columns, rows)?;
        Ok(converted
            .iter()
            .map(|row| {
                let bytes = row.data();
                let h = std::hash::BuildHasher::hash_one(&self.hasher, bytes);
                self.table
                    .find(h, |&id| {
                        self.hashes[id as usize] == h && keys.get(id as usize) == bytes
                    })
                    .copied()
            })
            .collect())
    }

    fn find_ints(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<u32>>> {
        let Store::Ints {
            types,
            values,
            nulls,
            null_id,
        } = &self.store
        else {
            unreachable!("called for integers")
        };
        let width = types.len();
        let ints = as_ints(columns)?;
        let arrays: Vec<&Int64Array> = ints
            .iter()
            .map(AsArray::as_primitive::<Int64Type>)
            .collect();
        let mut key = vec![0i64; width];
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let mask = read_key(&arrays, i, &mut key);
            if width == 1 && mask != 0 {
                out.push(*null_id);
                continue;
            }
            let h = hash_key(&self.hasher, &key, mask);
            out.push(
                self.table
                    .find(h, |&id| {
                        let id = id as usize;
                        nulls[id] == mask && same_key(values, id, &key)
                    })
                    .copied(),
            );
        }
        Ok(out)
    }

    /// Looks every row up, adding the new ones.
    fn lookup(&mut self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<u32>>> {
        match &mut self.store {
            Store::Ints {
                types,
                values,
                nulls,
                null_id,
            } => {
                let width = types.len();
                let ints = as_ints(columns)?;
                let arrays: Vec<&Int64Array> = ints
                    .iter()
                    .map(AsArray::as_primitive::<Int64Type>)
                    .collect();
                let mut out = Vec::with_capacity(rows);
                if width == 1 && arrays[0].null_count() == 0 {
                    // One integer column without nulls: the common key (an id), hashed and compared as it is.
                    for &v in arrays[0].values() {
                        let h = hash_int(&self.hasher, v);
                        let stored = &*values;
                        if let Some(&id) = self.table.find(h, |&id| stored[id as usize] == v) {
                            out.push(Some(id));
                            continue;
                        }
                        let id = self.hashes.len() as u32;
                        values.push(v);
                        nulls.push(0);
                        self.hashes.push(h);
                        self.table.insert_unique(h, id, &self.hashes);
                        out.push(Some(id));
                    }
                    return Ok(out);
                }
                let mut key = vec![0i64; width];
                for i in 0..rows {
                    let mask = read_key(&arrays, i, &mut key);
                    if width == 1 && mask != 0 {
                        // NULL, kept out of the table.
                        let id = *null_id.get_or_insert_with(|| {
                            values.push(0);
                            nulls.push(1);
                            self.hashes.push(0);
                            (self.hashes.len() - 1) as u32
                        });
                        out.push(Some(id));
                        continue;
                    }
                    let h = hash_key(&self.hasher, &key, mask);
                    let (values_now, nulls_now) = (&*values, &*nulls);
                    let found = self.table.find(h, |&id| {
                        let id = id as usize;
                        nulls_now[id] == mask && same_key(values_now, id, &key)
                    });
                    if let Some(&id) = found {
                        out.push(Some(id));
                        continue;
                    }
                    let id = self.hashes.len() as u32;
                    values.extend_from_slice(&key);
                    nulls.push(mask);
                    self.hashes.push(h);
                    self.table.insert_unique(h, id, &self.hashes);
                    out.push(Some(id));
                }
                Ok(out)
            }
            Store::Rows { codec, keys, .. } => {
                let converted = codec.rows(columns, rows)?;
                let mut out = Vec::with_capacity(rows);
                for row in &converted {
                    let bytes = row.data();
                    let h = std::hash::BuildHasher::hash_one(&self.hasher, bytes);
                    let (hashes, stored) = (&self.hashes, &*keys);
                    if let Some(&id) = self.table.find(h, |&id| {
                        hashes[id as usize] == h && stored.get(id as usize) == bytes
                    }) {
                        out.push(Some(id));
                        continue;
                    }
                    let id = self.hashes.len() as u32;
                    keys.push(bytes);
                    self.hashes.push(h);
                    self.table.insert_unique(h, id, &self.hashes);
                    out.push(Some(id));
                }
                Ok(out)
            }
        }
    }

    /// The columns of the keys `ids`, in that order.
    pub(crate) fn columns(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        match &self.store {
            Store::Rows {
                codec,
                parser,
                keys,
            } => codec.decode(ids.iter().map(|&id| parser.parse(keys.get(id as usize)))),
            Store::Ints {
                types,
                values,
                nulls,
                ..
            } => {
                let width = types.len();
                types
                    .iter()
                    .enumerate()
                    .map(|(c, t)| {
                        let column: Int64Array = ids
                            .iter()
                            .map(|&id| {
                                let id = id as usize;
                                (nulls[id] & (1 << c) == 0).then(|| values[id * width + c])
                            })
                            .collect();
                        let column: ArrayRef = Arc::new(column);
                        Ok(if t == &DataType::Int64 {
                            column
                        } else {
                            cast(&column, t)?
                        })
                    })
                    .collect()
            }
        }
    }

    /// Bytes held: the keys, their hashes and the table.
    pub(crate) fn bytes(&self) -> usize {
        let keys = match &self.store {
            Store::Rows { keys, .. } => keys.size(),
            Store::Ints { values, nulls, .. } => values.len() * 8 + nulls.len(),
        };
        keys + self.hashes.len() * 8 + self.table.capacity() * 5
    }

    /// Forgets every key.
    pub(crate) fn clear(&mut self) {
        match &mut self.store {
            Store::Rows { keys, .. } => keys.clear(),
            Store::Ints {
                values,
                nulls,
                null_id,
                ..
            } => {
                values.clear();
                nulls.clear();
                *null_id = None;
            }
        }
        self.hashes.clear();
        self.table.clear();
    }
}

/// True when the key stored at `id` (of `key.len()` values) is `key`.
#[inline]
fn same_key(values: &Chunked<i64>, id: usize, key: &[i64]) -> bool {
    let width = key.len();
    key.iter()
        .enumerate()
        .all(|(c, v)| values[id * width + c] == *v)
}

/// Integer columns as `Int64` (their values exactly).
fn as_ints(columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|c| {
            Ok(if c.data_type() == &DataType::Int64 {
                c.clone()
            } else {
                cast(c, &DataType::Int64)?
            })
        })
        .collect()
}

/// The hash of a key of one integer without a null (as [`hash_key`] would give it).
fn hash_int(hasher: &hashbrown::DefaultHashBuilder, value: i64) -> u64 {
    std::hash::BuildHasher::hash_one(hasher, value)
}

/// The hash of a key of integers and its nulls.
fn hash_key(hasher: &hashbrown::DefaultHashBuilder, key: &[i64], mask: u8) -> u64 {
    if let ([value], 0) = (key, mask) {
        return hash_int(hasher, *value);
    }
    let mut state = std::hash::BuildHasher::build_hasher(hasher);
    for value in key {
        std::hash::Hasher::write_i64(&mut state, *value);
    }
    std::hash::Hasher::write_u8(&mut state, mask);
    std::hash::Hasher::finish(&state)
}

/// Row `i`'s key into `key` (0 where null); returns its nulls, a bit per column.
fn read_key(columns: &[&Int64Array], i: usize, key: &mut [i64]) -> u8 {
    let mut mask = 0u8;
    for (c, values) in columns.iter().enumerate() {
        if values.is_null(i) {
            mask |= 1 << c;
            key[c] = 0;
        } else {
            key[c] = values.value(i);
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringArray;

    use super::*;

    #[test]
    fn keys_get_the_same_id_every_time_and_decode_back() {
        for types in [
            vec![DataType::Utf8, DataType::Int64],
            vec![DataType::Int32, DataType::Int64],
        ] {
            let mut index = KeyIndex::new(&types).expect("index");
            let first: ArrayRef = if types[0] == DataType::Utf8 {
                Arc::new(StringArray::from(vec![
                    Some("1"),
                    None,
                    Some("1"),
                    Some("2"),
                ]))
            } else {
                Arc::new(datafusion::arrow::array::Int32Array::from(vec![
                    Some(1),
                    None,
                    Some(1),
                    Some(2),
                ]))
            };
            let numbers: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 1, 2]));
            let ids = index
                .intern(&[first.clone(), numbers.clone()], 4)
                .expect("intern");
            assert_eq!(ids, vec![0, 1, 0, 2]);
            assert_eq!(index.len(), 3);
            let again = index.intern(&[first.clone(), numbers], 4).expect("intern");
            assert_eq!(again, ids);
            let other = first.slice(2, 2);
            let two: ArrayRef = Arc::new(Int64Array::from(vec![1, 3]));
            assert_eq!(
                index.find(&[other, two], 2).expect("find"),
                vec![Some(0), None]
            );
            let columns = index.columns(&[2, 1]).expect("decode");
            assert_eq!(columns[0].data_type(), &types[0]);
            assert_eq!(columns[0].null_count(), 1);
            assert!(columns[0].is_null(1));
            assert_eq!(
                columns[1].as_primitive::<Int64Type>().values().to_vec(),
                vec![2, 1]
            );
        }
    }

    #[test]
    fn one_integer_column_keeps_null_apart_from_zero() {
        let mut index = KeyIndex::new(&[DataType::Int64]).expect("index");
        let first: ArrayRef = Arc::new(Int64Array::from(vec![0, 5, 0]));
        assert_eq!(index.intern(&[first], 3).expect("intern"), vec![0, 1, 0]);
        let nulls: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(0), None, Some(7)]));
        assert_eq!(
            index
                .intern(std::slice::from_ref(&nulls), 4)
                .expect("intern"),
            vec![2, 0, 2, 3]
        );
        assert_eq!(
            index.find(&[nulls], 4).expect("find"),
            vec![Some(2), Some(0), Some(2), Some(3)]
        );
        let columns = index.columns(&[2, 0, 3]).expect("decode");
        assert!(columns[0].is_null(0));
        assert_eq!(columns[0].as_primitive::<Int64Type>().value(1), 0);
        assert_eq!(columns[0].as_primitive::<Int64Type>().value(2), 7);
    }

    #[test]
    fn an_index_without_columns_has_one_key() {
        let mut index = KeyIndex::new(&[]).expect("index");
        assert_eq!(index.intern(&[], 3).expect("intern"), vec![0, 0, 0]);
        assert!(index.columns(&[0]).expect("decode").is_empty());
    }

    /// Past 65,536 keys the table grows a little at a time: every key keeps its id, and is found, before, while and
    /// after its ids move to the bigger table, for each way keys are held (one integer with NULLs, strings).
    #[test]
    fn keys_keep_their_ids_while_the_table_grows_apart() {
        for types in [vec![DataType::Int64], vec![DataType::Utf8]] {
            let mut index = KeyIndex::new(&types).expect("index");
            let column = |from: i64, to: i64| -> ArrayRef {
                if types[0] == DataType::Int64 {
                    Arc::new(
                        (from..to)
                            .map(|v| (v % 1000 != 999).then_some(v))
                            .collect::<Int64Array>(),
                    )
                } else {
                    Arc::new(StringArray::from_iter_values(
                        (from..to).map(|v| format!("k{v}")),
                    ))
                }
            };
            let mut expected: Vec<u32> = Vec::new();
            let mut next = 0u32;
            let mut null_id = None;
            for v in 0..400_000i64 {
                if types[0] == DataType::Int64 && v % 1000 == 999 {
                    expected.push(*null_id.get_or_insert_with(|| {
                        next += 1;
                        next - 1
                    }));
                } else {
                    expected.push(next);
                    next += 1;
                }
            }
            // Interned 10,000 at a time, each step with keys seen before; every id checked at every step, so some
            // steps fall while the ids move.
            let mut moving_seen = false;
            for step in 0..40i64 {
                let (from, to) = (step * 10_000, (step + 1) * 10_000);
                let ids = index.intern(&[column(from, to)], 10_000).expect("intern");
                assert_eq!(ids, expected[from as usize..to as usize]);
                moving_seen |= index.table.growing.is_some();
                let back = (step * 7_919) % to;
                let again = index
                    .intern(&[column(back, back + 500)], 500)
                    .expect("again");
                assert_eq!(again, expected[back as usize..back as usize + 500]);
                let found = index.find(&[column(back, back + 500)], 500).expect("find");
                assert!(
                    found
                        .iter()
                        .zip(&expected[back as usize..])
                        .all(|(f, e)| *f == Some(*e))
                );
                assert_eq!(
                    index.find(&[column(to, to + 1)], 1).expect("find"),
                    vec![None]
                );
            }
            assert!(moving_seen, "{types:?}: no step fell while the table grew");
            let found = index.find(&[column(0, 400_000)], 400_000).expect("find");
            assert!(found.iter().zip(&expected).all(|(f, e)| *f == Some(*e)));
            assert_eq!(index.len(), next as usize);
        }
    }
}
