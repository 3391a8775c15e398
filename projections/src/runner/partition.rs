//! Partitions of a projection by aggregate id: each partition is a runner of its own (its
//! own checkpoint, worker and, on a cluster, owner) that applies the events of its aggregates
//! and passes over the others, so one projection's load spreads over workers and nodes while
//! the events of one aggregate stay in order (they all go to one partition).

use std::fmt;

use uuid::Uuid;

use crate::storage::StorageError;

/// Partition `index` of `count`: the aggregates whose id falls in it.
///
/// An aggregate's partition is the XOR of its id's two 64-bit halves (big-endian), modulo the
/// count: stable across processes, versions and languages, and even for random or
/// time-ordered ids.
///
/// ```
/// use projections::runner::Partition;
///
/// let partitions: Vec<Partition> = Partition::all(4).unwrap().collect();
/// let aggregate = uuid::Uuid::new_v4();
/// // Every aggregate is in exactly one partition.
/// assert_eq!(partitions.iter().filter(|p| p.contains(aggregate)).count(), 1);
/// assert_eq!(partitions[2].name_for("orders"), "orders#2/4");
/// assert!(Partition::new(4, 4).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    index: u32,
    count: u32,
}

impl Partition {
    /// Partition `index` (from 0) of `count` (at least 1, at most 4096).
    pub fn new(index: u32, count: u32) -> Result<Self, StorageError> {
        if count == 0 || count > 4096 || index >= count {
            return Err(StorageError::Invalid {
                what: "partition",
                reason: format!(
                    "{index} of {count}: the count must be 1 to 4096 and the index below it"
                ),
            });
        }
        Ok(Self { index, count })
    }

    /// Every partition of `count`, in order.
    pub fn all(count: u32) -> Result<impl Iterator<Item = Self>, StorageError> {
        Self::new(0, count)?;
        Ok((0..count).map(move |index| Self { index, count }))
    }

    /// Its index, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many partitions the projection has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The partition of `aggregate` among `count`.
    pub fn of(aggregate: Uuid, count: u32) -> u32 {
        let (high, low) = aggregate.as_u64_pair();
        // `count` is at least 1 for every partition built through `new`.
        u32::try_from((high ^ low) % u64::from(count.max(1))).unwrap_or(0)
    }

    /// Whether the events of `aggregate` belong to this partition.
    pub fn contains(&self, aggregate: Uuid) -> bool {
        Self::of(aggregate, self.count) == self.index
    }

    /// The name of this partition of projection `base`: `base#index/count`. Its checkpoint,
    /// dead letters, worker and lease go by it.
    pub fn name_for(&self, base: &str) -> String {
        format!("{base}#{}/{}", self.index, self.count)
    }

    /// The projection and partition a name stands for, if it is a partition's name.
    pub(crate) fn parse(name: &str) -> Option<(&str, Self)> {
        let (base, tail) = name.rsplit_once('#')?;
        let (index, count) = tail.split_once('/')?;
        let partition = Self::new(index.parse().ok()?, count.parse().ok()?).ok()?;
        Some((base, partition))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {} of {}", self.index, self.count)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        let partition = Partition::new(3, 8).unwrap();
        let name = partition.name_for("order#totals");
        assert_eq!(Partition::parse(&name), Some(("order#totals", partition)));
        assert_eq!(Partition::parse("orders"), None);
        assert_eq!(Partition::parse("orders#9/8"), None);
    }

    #[test]
    fn aggregates_spread_over_partitions() {
        let mut counts = [0_u32; 4];
        for _ in 0..4000 {
            counts[Partition::of(Uuid::new_v4(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
