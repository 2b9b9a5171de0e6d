//! [`Context`]: who is calling — the client connection a hook runs for. In a plugin the
//! SDK keeps one and decodes every call into it, reusing its buffers.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::same_bytes;

/// The last [`Context::user_id`] handed out.
static LAST_USER_ID: AtomicU64 = AtomicU64::new(0);

/// The id of `user`: 0 for no user, else a new one.
fn new_user_id(user: &str) -> u64 {
    if user.is_empty() {
        0
    } else {
        LAST_USER_ID.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The client connection a hook is called for, as the host describes it on every call.
///
/// A `Context` is rewritten from the host's input on each call: it is a snapshot, and the
/// only state a plugin keeps per connection is in its *attributes* (see
/// [`set_attr`](Context::set_attr)), which the host stores and passes back on every later
/// call for the same connection. Reading it never allocates.
#[derive(Clone, Default)]
pub struct Context {
    conn_id: u64,
    db: u32,
    /// The RESP version of the connection's replies: 2 or 3.
    protocol: u8,
    peer: String,
    user: String,
    /// Equal in two contexts only if their users are equal (see [`Context::user_id`]).
    user_id: u64,
    /// The attributes the host passed in, in its order.
    attrs: Vec<(String, String)>,
    /// Attribute buffers not in use, kept for their capacity.
    spare: Vec<(String, String)>,
    changes: RefCell<Vec<(String, String)>>,
    /// Whether `changes` is not empty, checked after every command without a borrow.
    changed: Cell<bool>,
}

impl Context {
    /// A context with every field empty, as the SDK keeps before the first call.
    pub(crate) const fn empty() -> Context {
        Context {
            conn_id: 0,
            db: 0,
            protocol: 2,
            peer: String::new(),
            user: String::new(),
            user_id: 0,
            attrs: Vec::new(),
            spare: Vec::new(),
            changes: RefCell::new(Vec::new()),
            changed: Cell::new(false),
        }
    }

    /// A context with these fields (the SDK decodes it from the host's input; plugin
    /// tests on the host build their own). `user` is `""` for a connection nobody has
    /// authenticated. `attrs` is any list of `(key, value)` pairs, e.g. a
    /// `BTreeMap<String, String>`.
    pub fn new(
        conn_id: u64,
        db: u32,
        peer: impl Into<String>,
        user: impl Into<String>,
        attrs: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let user = user.into();
        let mut ctx = Context {
            conn_id,
            db,
            peer: peer.into(),
            user_id: new_user_id(&user),
            user,
            ..Context::default()
        };
        for (k, v) in attrs {
            ctx.put_attr(k, v);
        }
        ctx
    }

    /// This context with `user` as its user (and its `user` attribute), for tests.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self.user_id = new_user_id(&self.user);
        self.put_attr("user".to_owned(), self.user.clone());
        self
    }

    /// This context with one more received attribute, for tests.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.put_attr(key.into(), value.into());
        self
    }

    fn put_attr(&mut self, key: String, value: String) {
        match self.attrs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((key, value)),
        }
    }

    /// Starts decoding into this context: sets the fixed fields, empties the attributes
    /// (keeping their buffers) and the changes of the last call.
    pub(crate) fn start_decode(&mut self, conn_id: u64, db: u32, peer: &str, user: &str) {
        self.conn_id = conn_id;
        self.db = db;
        self.peer.clear();
        self.peer.push_str(peer);
        if !same_bytes(self.user.as_bytes(), user.as_bytes()) {
            self.user.clear();
            self.user.push_str(user);
            self.user_id = new_user_id(user);
        }
        self.spare.append(&mut self.attrs);
        self.clear_changes();
    }

    /// Forgets the attribute changes of the last call (for a call whose context is the
    /// last one's, not decoded again).
    pub(crate) fn clear_changes(&mut self) {
        self.changes.get_mut().clear();
        self.changed.set(false);
    }

    /// Appends a decoded attribute, into spare buffers if there are some.
    pub(crate) fn push_decoded_attr(&mut self, key: &str, value: &str) {
        let (mut k, mut v) = self.spare.pop().unwrap_or_default();
        k.clear();
        k.push_str(key);
        v.clear();
        v.push_str(value);
        self.attrs.push((k, v));
    }

    /// The connection's id, unique per proxy process.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The RESP version the connection's replies are in (`HELLO 3` makes it 3): 2 or 3.
    /// A [`Verdict::reply`](crate::Verdict::reply) in either version is delivered in this
    /// one (the proxy converts RESP3 types for a RESP2 client, and RESP2 nulls for a RESP3
    /// one), so a plugin needs this only to answer in the richer form when it can.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// This context with `protocol` (2 or 3) as its protocol, for tests.
    pub fn with_protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    pub(crate) fn set_protocol(&mut self, protocol: u8) {
        self.protocol = protocol;
    }

    /// The database the connection has `SELECT`ed (0 unless it did).
    pub fn db(&self) -> u32 {
        self.db
    }

    /// The client's address, e.g. `"127.0.0.1:53211"`.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The authenticated user: `""` until a plugin sets the `user` attribute or the client
    /// authenticates with the proxy password (then `"default"`).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// A number standing for [`user`](Context::user): two contexts (or the contexts of two
    /// calls) with the same id have the same user; 0 is no user. The SDK keeps a user's id
    /// from call to call while the user stays the same, so a plugin can key what it works
    /// out per user by it and check it with one comparison (as [`ByName::of_user`] does).
    /// Contexts with the same user may still have different ids.
    ///
    /// [`ByName::of_user`]: crate::ByName::of_user
    pub fn user_id(&self) -> u64 {
        self.user_id
    }

    /// Whether the connection has a user (see [`user`](Context::user)).
    pub fn is_authenticated(&self) -> bool {
        !self.user.is_empty()
    }

    /// The value of a connection attribute as the host passed it in, if set.
    ///
    /// Attributes set with [`set_attr`](Context::set_attr) during this call are not seen
    /// here: they reach the host when the hook returns and come back on the next call.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All connection attributes as the host passed them in, as `(key, value)` pairs.
    pub fn received_attrs(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets a connection attribute. The change travels with this hook's verdict (whatever
    /// the verdict is) and the host passes the attribute back on every later call for this
    /// connection, to every plugin of the chain.
    ///
    /// Setting `user` authenticates the connection as that user: the proxy no longer asks
    /// for its own password, and [`user`](Context::user) returns it on later calls.
    /// An empty `value` removes the attribute (see [`remove_attr`](Context::remove_attr)).
    pub fn set_attr(&self, key: impl Into<String>, value: impl Into<String>) {
        self.changes.borrow_mut().push((key.into(), value.into()));
        self.changed.set(true);
    }

    /// Removes a connection attribute (sends it with an empty value).
    pub fn remove_attr(&self, key: impl Into<String>) {
        self.set_attr(key, "");
    }

    /// The attribute changes made with [`set_attr`](Context::set_attr) during this call,
    /// in order (what the SDK sends with the verdict; tests assert on it).
    pub fn attr_changes(&self) -> Vec<(String, String)> {
        self.changes.borrow().clone()
    }

    /// Whether a hook set or removed an attribute during this call.
    #[inline(always)]
    pub(crate) fn has_changes(&self) -> bool {
        self.changed.get()
    }

    /// The changes of this call, for encoding the verdict.
    pub(crate) fn changes(&self) -> std::cell::Ref<'_, Vec<(String, String)>> {
        self.changes.borrow()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("conn_id", &self.conn_id)
            .field("db", &self.db)
            .field("peer", &self.peer)
            .field("user", &self.user)
            .field("attrs", &self.attrs)
            .field("changes", &self.changes.borrow())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_again_keeps_no_attribute_or_change_of_the_last_call() {
        let mut ctx = Context::default();
        ctx.start_decode(1, 2, "1.2.3.4:5", "alice");
        ctx.push_decoded_attr("user", "alice");
        ctx.push_decoded_attr("tenant", "t1");
        ctx.set_attr("seen", "1");
        assert_eq!(ctx.attr("tenant"), Some("t1"));

        ctx.start_decode(3, 0, "p", "");
        ctx.push_decoded_attr("x", "y");
        assert_eq!(
            (ctx.conn_id(), ctx.db(), ctx.peer(), ctx.user()),
            (3, 0, "p", "")
        );
        assert_eq!(ctx.attr("tenant"), None);
        assert_eq!(ctx.attr("user"), None);
        assert_eq!(ctx.received_attrs().collect::<Vec<_>>(), [("x", "y")]);
        assert!(ctx.attr_changes().is_empty());
        assert!(!ctx.is_authenticated());
    }

    #[test]
    fn test_builders_replace_an_attribute_of_the_same_key() {
        let ctx = Context::default()
            .with_attr("user", "bob")
            .with_user("alice")
            .with_attr("tenant", "t1")
            .with_attr("tenant", "t2");
        assert_eq!(ctx.user(), "alice");
        assert_eq!(ctx.attr("user"), Some("alice"));
        assert_eq!(ctx.attr("tenant"), Some("t2"));
        assert_eq!(ctx.received_attrs().len(), 2);
    }
}
