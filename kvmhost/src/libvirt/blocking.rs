//! The async face over [`Host`]: every libvirt call blocks on libvirt's C
//! library, so async callers run it on tokio's blocking pool, here, in one
//! place.

use std::sync::Arc;

use super::Host;

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

impl Host {
    /// Runs `f` with this host on tokio's blocking pool and waits for it
    /// without blocking the runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use kvmhost::libvirt::Host;
    /// let host = Arc::new(Host::open("qemu:///system")?);
    /// let info = host.run_blocking(|h| h.node_info()).await??;
    /// println!("{} CPUs", info.cpus);
    /// # Ok(()) }
    /// ```
    pub async fn run_blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, TaskError>
    where
        T: Send + 'static,
        F: FnOnce(&Host) -> T + Send + 'static,
    {
        let host = self.clone();
        Ok(tokio::task::spawn_blocking(move || f(&host)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_call_runs_on_another_thread_and_its_value_comes_back() {
        let host = Arc::new(Host::open("test:///default").unwrap());
        let here = std::thread::current().id();
        let (cpus, there) = host
            .run_blocking(|h| (h.node_info().map(|i| i.cpus), std::thread::current().id()))
            .await
            .unwrap();
        assert!(cpus.unwrap() > 0);
        assert_ne!(here, there);
    }

    #[tokio::test]
    async fn a_panicking_call_is_an_error_that_can_be_resumed() {
        let host = Arc::new(Host::open("test:///default").unwrap());
        let e = host
            .run_blocking(|_| -> u32 { panic!("boom") })
            .await
            .unwrap_err();
        assert!(e.is_panic());
        let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.resume()));
        let payload = resumed.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    }
}
