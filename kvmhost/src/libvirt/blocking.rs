//! What can go wrong running a blocking libvirt call from async code
//! (see [`super::handle::Connection::run`]).

/// A blocking host call that did not return: it panicked, or the runtime
/// was shutting down and dropped it. The text is tokio's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(#[from] tokio::task::JoinError);

impl TaskError {
    /// Whether the call panicked (rather than being dropped at shutdown).
    pub fn is_panic(&self) -> bool {
        self.0.is_panic()
    }

    /// Goes on with the call's panic on the awaiting task, as if the call
    /// had run there. A call dropped at shutdown panics with tokio's
    /// message.
    pub fn resume(self) -> ! {
        std::panic::resume_unwind(self.0.into_panic())
    }
}
