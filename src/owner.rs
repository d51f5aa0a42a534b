//! Who a request acts for: the resolver shared by the layer and the management API.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;

/// Decides which owner a request acts for, from its head.
///
/// The same resolver is given to [`ConversationLayer`](crate::ConversationLayer) and
/// to the management service, so both see the same conversations. It returns `None`
/// for the shared space (the default, when no resolver is set); `Some("")` means the
/// shared space too. A conversation created under one owner is invisible to every other.
///
/// # Example
///
/// ```
/// use tower_conversations::OwnerResolver;
///
/// #[derive(Clone)]
/// struct UserId(String); // set by your auth layer as a request extension
///
/// let owners = OwnerResolver::new(|parts: &http::request::Parts| {
///     parts.extensions.get::<UserId>().map(|user| user.0.clone())
/// });
/// let (parts, _) = http::Request::new(()).into_parts();
/// assert_eq!(owners.resolve(&parts), "");
/// ```
#[derive(Clone)]
pub struct OwnerResolver(Option<Arc<ResolveFn>>);

type ResolveFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

impl OwnerResolver {
    /// A resolver from a function of the request head.
    pub fn new(resolve: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(resolve)))
    }

    /// Everyone in one shared space: the default.
    pub fn shared() -> Self {
        Self(None)
    }

    /// The owner for this request; `""` for the shared space.
    pub fn resolve(&self, parts: &Parts) -> String {
        self.0
            .as_ref()
            .and_then(|resolve| resolve(parts))
            .unwrap_or_default()
    }
}

impl Default for OwnerResolver {
    fn default() -> Self {
        Self::shared()
    }
}

impl fmt::Debug for OwnerResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.0.is_some() { "custom" } else { "shared" };
        f.debug_tuple("OwnerResolver").field(&kind).finish()
    }
}
