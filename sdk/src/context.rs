//! [`Context`]: who is calling — the client connection a hook runs for.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// The client connection a hook is called for, as the host describes it on every call.
///
/// A `Context` is rebuilt from the host's input on each call: it is a snapshot, and the
/// only state a plugin keeps per connection is in its *attributes* (see
/// [`set_attr`](Context::set_attr)), which the host stores and passes back on every later
/// call for the same connection.
#[derive(Debug, Clone, Default)]
pub struct Context {
    conn_id: u64,
    db: u32,
    peer: String,
    user: String,
    attrs: BTreeMap<String, String>,
    changes: RefCell<Vec<(String, String)>>,
}

impl Context {
    /// A context with these fields (the SDK decodes it from the host's input; plugin
    /// tests on the host build their own). `user` is `""` for a connection nobody has
    /// authenticated.
    pub fn new(
        conn_id: u64,
        db: u32,
        peer: impl Into<String>,
        user: impl Into<String>,
        attrs: BTreeMap<String, String>,
    ) -> Self {
        Context {
            conn_id,
            db,
            peer: peer.into(),
            user: user.into(),
            attrs,
            changes: RefCell::new(Vec::new()),
        }
    }

    /// This context with `user` as its user (and its `user` attribute), for tests.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self.attrs.insert("user".to_owned(), self.user.clone());
        self
    }

    /// This context with one more received attribute, for tests.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attrs.insert(key.into(), value.into());
        self
    }

    /// The connection's id, unique per proxy process.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
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

    /// Whether the connection has a user (see [`user`](Context::user)).
    pub fn is_authenticated(&self) -> bool {
        !self.user.is_empty()
    }

    /// The value of a connection attribute as the host passed it in, if set.
    ///
    /// Attributes set with [`set_attr`](Context::set_attr) during this call are not seen
    /// here: they reach the host when the hook returns and come back on the next call.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }

    /// All connection attributes as the host passed them in.
    pub fn received_attrs(&self) -> &BTreeMap<String, String> {
        &self.attrs
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

    pub(crate) fn take_attr_changes(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.changes.borrow_mut())
    }
}
