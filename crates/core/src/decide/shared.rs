//! [`Shared`]: a value many [`Observed`](super::Observed) hold at once, copied only when one
//! of them changes it.
//!
//! What is observed of a cluster (its members' health, their sites, its quarantines) is
//! the same for every instance of the cluster at one moment. With 1,000 members and 10,000
//! instances, a copy per instance is 10 million member verdicts; shared, it is 1,000.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A value behind an [`Arc`], read through it and copied on the first write (see
/// [`Arc::make_mut`]): a clone of an `Observed` shares it, and a change to one clone is
/// never seen by another.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// Both hold the very same value (neither has written to it since they were cloned).
    pub fn same(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Self(Arc::new(value))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, V> FromIterator<V> for Shared<T>
where
    T: FromIterator<V>,
{
    fn from_iter<I: IntoIterator<Item = V>>(iter: I) -> Self {
        Self(Arc::new(iter.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::Shared;
    use std::collections::BTreeMap;

    #[test]
    fn a_clone_shares_until_one_writes_and_the_write_is_its_own() {
        let a: Shared<BTreeMap<&str, u32>> = [("n1", 1), ("n2", 2)].into_iter().collect();
        let mut b = a.clone();
        assert!(Shared::same(&a, &b));
        b.insert("n1", 10);
        assert!(!Shared::same(&a, &b));
        assert_eq!(a.get("n1"), Some(&1));
        assert_eq!(b.get("n1"), Some(&10));
        assert_eq!(b.get("n2"), Some(&2));
    }
}
