//! [`ByName`]: a table of per-user (or per-tenant) settings for the lookup a plugin makes on
//! every call, which remembers the last name it was asked for.

use std::cell::Cell;
use std::fmt;

use crate::Context;
use crate::wire::same_bytes;

/// A table from names to values, looked up by the connection's user on every call.
///
/// A connection asks for its own user call after call, so the table remembers the last name
/// it was asked for and where that name is: a repeated lookup costs one comparison of the
/// name, not a search of the table. A different name is found by binary search. Lookups
/// never allocate.
///
/// ```
/// use tessera_sdk::ByName;
/// let prefixes: ByName<String> = [("alice", "t1:"), ("bob", "t2:")]
///     .into_iter()
///     .map(|(k, v)| (k.to_owned(), v.to_owned()))
///     .collect();
/// assert_eq!(prefixes.get("bob").map(String::as_str), Some("t2:"));
/// assert_eq!(prefixes.get("carol"), None);
/// ```
#[derive(Clone)]
pub struct ByName<T> {
    /// Sorted by name, names unique.
    entries: Vec<(String, T)>,
    /// The last lookup: the index of its entry in `entries` (`usize::MAX`: no entry) and
    /// the name's length; the name itself is the entry's (or in `missed`).
    last: Cell<(usize, usize)>,
    /// The last name looked up that has no entry (`last` then says `usize::MAX`).
    missed: std::cell::RefCell<String>,
    /// The last [`of_user`](ByName::of_user): the context's user id (0: none yet) and the
    /// index of its entry (`usize::MAX`: no entry).
    last_user: Cell<(u64, usize)>,
}

const NONE: usize = usize::MAX;

impl<T> ByName<T> {
    /// The value for the connection's user ([`Context::user`]), if the table has one. For
    /// the user of the last call this is one comparison of [`Context::user_id`]s: the
    /// lookup to make on every command.
    #[inline]
    pub fn of_user(&self, ctx: &Context) -> Option<&T> {
        let id = ctx.user_id();
        let (last, at) = self.last_user.get();
        if id == last && id != 0 {
            return self.entries.get(at).map(|(_, v)| v);
        }
        self.of_new_user(ctx)
    }

    #[inline(never)]
    fn of_new_user(&self, ctx: &Context) -> Option<&T> {
        let found = self.get(ctx.user());
        let (at, _) = self.last.get();
        self.last_user.set((ctx.user_id(), at));
        found
    }

    /// The value for `name`, if the table has one.
    pub fn get(&self, name: &str) -> Option<&T> {
        let (at, len) = self.last.get();
        if len == name.len() {
            if at != NONE {
                let (k, v) = &self.entries[at];
                if same_bytes(k.as_bytes(), name.as_bytes()) {
                    return Some(v);
                }
            } else if same_bytes(self.missed.borrow().as_bytes(), name.as_bytes()) {
                return None;
            }
        }
        let found = self.entries.binary_search_by(|(k, _)| k.as_str().cmp(name));
        match found {
            Ok(i) => {
                self.last.set((i, name.len()));
                Some(&self.entries[i].1)
            }
            Err(_) => {
                let mut missed = self.missed.borrow_mut();
                missed.clear();
                missed.push_str(name);
                self.last.set((NONE, name.len()));
                None
            }
        }
    }

    /// The number of names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no name.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names and values, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &T)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<T> Default for ByName<T> {
    fn default() -> Self {
        ByName {
            entries: Vec::new(),
            last: Cell::new((NONE, usize::MAX)),
            missed: Default::default(),
            last_user: Cell::new((0, NONE)),
        }
    }
}

/// A later value for the same name replaces an earlier one.
impl<T> FromIterator<(String, T)> for ByName<T> {
    fn from_iter<I: IntoIterator<Item = (String, T)>>(iter: I) -> Self {
        let mut entries: Vec<(String, T)> = Vec::new();
        for (k, v) in iter {
            match entries.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => entries.push((k, v)),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        ByName {
            entries,
            ..ByName::default()
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ByName<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ByName<u32> {
        [("bob", 2), ("alice", 1), ("al", 3), ("bob", 4)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn lookups_in_any_order_give_each_name_its_value() {
        let t = table();
        assert_eq!(t.len(), 3);
        let names = [
            "alice", "alice", "al", "bob", "x", "x", "alicf", "", "bob", "al", "ali",
        ];
        let want = [
            Some(1),
            Some(1),
            Some(3),
            Some(4),
            None,
            None,
            None,
            None,
            Some(4),
            Some(3),
            None,
        ];
        for (name, want) in names.iter().zip(want) {
            assert_eq!(t.get(name).copied(), want, "{name}");
        }
        assert_eq!(
            t.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(),
            [("al", 3), ("alice", 1), ("bob", 4)]
        );
        assert!(ByName::<u32>::default().get("").is_none());
    }

    #[test]
    fn a_repeated_lookup_does_not_allocate() {
        let t = table();
        t.get("nobody");
        t.get("alice");
        let (v, n) = crate::testing::count_allocations(|| t.get("alice").copied());
        assert_eq!((v, n), (Some(1), 0));
        let (v, n) = crate::testing::count_allocations(|| t.get("bob").copied());
        assert_eq!((v, n), (Some(4), 0));
        let (v, n) = crate::testing::count_allocations(|| t.get("nobody").is_none());
        assert_eq!((v, n), (true, 0));
    }

    #[test]
    fn of_user_follows_the_user_of_each_context() {
        let t = table();
        let alice = Context::default().with_user("alice");
        let bob = Context::default().with_user("bob");
        let nobody = Context::default();
        let carol = Context::default().with_user("carol");
        for (ctx, want) in [
            (&alice, Some(1)),
            (&alice, Some(1)),
            (&bob, Some(4)),
            (&nobody, None),
            (&carol, None),
            (&carol, None),
            (&alice, Some(1)),
            (&nobody, None),
            (&bob, Some(4)),
        ] {
            assert_eq!(t.of_user(ctx).copied(), want, "{:?}", ctx.user());
        }
        let (v, n) = crate::testing::count_allocations(|| t.of_user(&bob).copied());
        assert_eq!((v, n), (Some(4), 0));
    }
}
