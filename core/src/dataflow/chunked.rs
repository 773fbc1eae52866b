//! A growable array that never moves what it holds ([`Chunked`]), for state kept per group or per key.
//!
//! A `Vec` that outgrows its allocation copies every element into one twice the size, and a fresh allocation is
//! paged in as it is written: a live append waited 30-240 ms each time the state of a view of a million orders or
//! more doubled (its groups' rows, their last values, their keys' hashes). Here the elements live in chunks of
//! [`CHUNK`] that are allocated whole and never reallocated (only the first grows as a `Vec` does, so a small state
//! stays small): growing costs what writing the new elements costs.

use std::ops::{Index, IndexMut};

const SHIFT: u32 = 16;
/// Elements per chunk.
pub(crate) const CHUNK: usize = 1 << SHIFT;
const MASK: usize = CHUNK - 1;

/// A growable array in chunks of [`CHUNK`] elements.
#[derive(Clone, Debug)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Elements it has room for without allocating.
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        self.open_chunk().push(value);
        self.len += 1;
    }

    /// The chunk the next element goes into, added when the last one is full: the first chunk grows as a `Vec`
    /// does, the next ones are allocated whole.
    #[inline]
    fn open_chunk(&mut self) -> &mut Vec<T> {
        let chunk = self.len >> SHIFT;
        if chunk == self.chunks.len() {
            self.chunks.push(if chunk == 0 {
                Vec::new()
            } else {
                Vec::with_capacity(CHUNK)
            });
        }
        &mut self.chunks[chunk]
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Drops the elements from `n` on.
    pub(crate) fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        let kept = n.div_ceil(CHUNK);
        self.chunks.truncate(kept);
        if let Some(last) = self.chunks.last_mut() {
            last.truncate(n - (kept - 1) * CHUNK);
        }
        self.len = n;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flatten()
    }
}

impl<T: Clone> Chunked<T> {
    /// Grows to `n` elements (filled with `value`) or drops those past `n`.
    pub(crate) fn resize(&mut self, n: usize, value: T) {
        if n <= self.len {
            self.truncate(n);
            return;
        }
        while self.len < n {
            let missing = n - self.len;
            let last = self.open_chunk();
            let take = missing.min(CHUNK - last.len());
            last.resize(last.len() + take, value.clone());
            self.len += take;
        }
    }
}

impl<T: Copy> Chunked<T> {
    /// Appends a slice's elements.
    pub(crate) fn extend_from_slice(&mut self, values: &[T]) {
        for &v in values {
            self.push(v);
        }
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> SHIFT][i & MASK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> SHIFT][i & MASK]
    }
}

impl<'a, T> IntoIterator for &'a mut Chunked<T> {
    type Item = &'a mut T;
    type IntoIter = std::iter::Flatten<std::slice::IterMut<'a, Vec<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter_mut().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Across chunk boundaries, it holds what a `Vec` holds through pushes, resizes, truncations and writes; and
    /// growing never moves an element (a chunk once allocated whole keeps its address).
    #[test]
    fn it_holds_what_a_vec_holds_and_never_moves_an_element() {
        let mut chunked = Chunked::new();
        let mut vec = Vec::new();
        for i in 0..(CHUNK as u64 + 10) {
            chunked.push(i);
            vec.push(i);
        }
        let second: *const u64 = &raw const chunked[CHUNK + 1];
        chunked.resize(3 * CHUNK + 7, 5);
        vec.resize(3 * CHUNK + 7, 5);
        assert_eq!(&raw const chunked[CHUNK + 1], second, "an element moved");
        for i in (0..vec.len()).step_by(997) {
            chunked[i] += 1;
            vec[i] += 1;
        }
        assert_eq!(chunked.iter().copied().collect::<Vec<_>>(), vec);
        chunked.truncate(CHUNK);
        vec.truncate(CHUNK);
        assert_eq!(chunked.len(), CHUNK);
        assert_eq!(chunked.iter().copied().collect::<Vec<_>>(), vec);
        chunked.resize(CHUNK + 3, 9);
        vec.resize(CHUNK + 3, 9);
        assert_eq!(chunked.iter().copied().collect::<Vec<_>>(), vec);
        chunked.clear();
        assert_eq!(chunked.len(), 0);
    }
}
