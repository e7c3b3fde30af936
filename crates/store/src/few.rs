//! A map for the few entries a batch usually changes: a single publish
//! changes one stream of one origin, a batch or a catch-up a few or many.

use std::collections::HashMap;
use std::hash::Hash;

use smallvec::SmallVec;

/// A map with more entries than this is hashed; one with fewer is searched
/// in order.
const IN_PLACE: usize = 8;

/// A map that keeps up to [`IN_PLACE`] entries in place and searches them
/// in order, so that the one entry of a single publish costs neither an
/// allocation nor a hash; it moves them to a hash map when more come.
/// Iteration order is unspecified.
#[derive(Debug)]
pub(crate) enum FewMap<K, V> {
    InPlace(SmallVec<[(K, V); 1]>),
    Hashed(HashMap<K, V>),
}

impl<K, V> Default for FewMap<K, V> {
    fn default() -> Self {
        FewMap::InPlace(SmallVec::new())
    }
}

impl<K: Eq + Hash, V> FewMap<K, V> {
    /// The value of `key`, inserted from `make` when missing.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if let FewMap::InPlace(entries) = self
            && entries.len() >= IN_PLACE
            && !entries.iter().any(|(k, _)| *k == key)
        {
            let map: HashMap<K, V> = std::mem::take(entries).into_iter().collect();
            *self = FewMap::Hashed(map);
        }
        match self {
            FewMap::InPlace(entries) => {
                let i = match entries.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        entries.push((key, make()));
                        entries.len() - 1
                    }
                };
                &mut entries[i].1
            }
            FewMap::Hashed(map) => map.entry(key).or_insert_with(make),
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        match self {
            FewMap::InPlace(entries) => entries.is_empty(),
            FewMap::Hashed(map) => map.is_empty(),
        }
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (few, many) = match self {
            FewMap::InPlace(entries) => (Some(entries.iter().map(|(k, v)| (k, v))), None),
            FewMap::Hashed(map) => (None, Some(map.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

impl<K, V> IntoIterator for FewMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::iter::Chain<
        std::iter::Flatten<std::option::IntoIter<smallvec::IntoIter<[(K, V); 1]>>>,
        std::iter::Flatten<std::option::IntoIter<std::collections::hash_map::IntoIter<K, V>>>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        let (few, many) = match self {
            FewMap::InPlace(entries) => (Some(entries.into_iter()), None),
            FewMap::Hashed(map) => (None, Some(map.into_iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_each_key_once_in_place_and_hashed() {
        let mut m: FewMap<u32, u32> = FewMap::default();
        assert!(m.is_empty());
        for round in 0..3 {
            for k in 0..20 {
                let made = std::cell::Cell::new(false);
                *m.get_or_insert_with(k, || {
                    made.set(true);
                    0
                }) += 1;
                assert_eq!(made.get(), round == 0, "key {k} round {round}");
                let in_place = matches!(m, FewMap::InPlace(_));
                assert_eq!(in_place, k < IN_PLACE as u32 && round == 0, "key {k}");
            }
        }
        let mut all: Vec<(u32, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort();
        assert_eq!(all, (0..20).map(|k| (k, 3)).collect::<Vec<_>>());
        let mut owned: Vec<(u32, u32)> = m.into_iter().collect();
        owned.sort();
        assert_eq!(owned, all);
    }
}
