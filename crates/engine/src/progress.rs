//! Progress reporting: the engine says how far it got; the caller decides how to show it.

/// Receives progress of a long operation. Implementations must be cheap: `advance` is called
/// once per chunk.
pub trait Progress: Send + Sync {
    /// The operation starts; `total` bytes are expected.
    fn start(&self, total: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The operation ended.
    fn finish(&self);
}
