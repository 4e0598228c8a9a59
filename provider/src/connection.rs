//! The provider's one connection to its host: opened on first use,
//! waking the host when the provider block says how, through `kvmhost`'s
//! [`HostHandle`]; and the resources' calls over it, their failures made
//! diagnostics.

use std::sync::Arc;

use kvmhost::libvirt::handle::{Connection, HostAddress, HostHandle, OpenError};
use kvmhost::libvirt::{Error as HostError, Host};
use kvmhost::wake::WakeOpenError;
use tfplugin::{Diagnostic, Diagnostics};
use tokio::sync::RwLock;

use crate::diagnostics::{fail, to_diag};

/// State shared by the provider and its resources.
///
/// Terraform configures the provider after the resources exist, and many
/// plans never touch the host: the connection is opened on first use so
/// that only hosts a plan touches are contacted (and woken).
#[derive(Default)]
pub struct Shared {
    handle: RwLock<Option<Arc<HostHandle>>>,
}

impl Shared {
    /// Records where the host is; a connection to an earlier address is
    /// dropped.
    pub async fn configure(&self, address: HostAddress) {
        *self.handle.write().await = Some(Arc::new(HostHandle::new(address)));
    }

    /// The open connection, opening (and waking the host) on first use.
    pub async fn host(&self) -> Result<Connection, Diagnostic> {
        let handle = self.handle.read().await.clone().ok_or_else(|| {
            Diagnostic::root_short("The libvirt provider was used before it was configured")
        })?;
        handle
            .connect()
            .await
            .map_err(|e| open_diag(e, handle.address()))
    }
}

/// Why the host could not be reached, as a diagnostic. Errors here
/// surface inside resource operations, where the provider's attributes
/// have no path: they are reported without one.
fn open_diag(e: OpenError, address: &HostAddress) -> Diagnostic {
    match e {
        OpenError::Connect(e) => {
            Diagnostic::root("Cannot connect to the libvirt host", e.to_string())
        }
        OpenError::Wake(WakeOpenError::Send(e)) => {
            Diagnostic::root("Cannot send the wake packet", e.to_string())
        }
        OpenError::Wake(e) => {
            let sent_to = address
                .wake
                .as_ref()
                .and_then(|w| w.targets.first())
                .map(|t| format!(" (wake packets to {} for {})", t.to, t.mac))
                .unwrap_or_default();
            Diagnostic::root("The libvirt host did not wake up", format!("{e}{sent_to}"))
        }
        OpenError::Task(e) => Diagnostic::root("Connecting to libvirt failed", e.to_string()),
    }
}

impl Shared {
    /// [`Shared::host`], its failure added to `diags`.
    pub async fn connect(&self, diags: &mut Diagnostics) -> Option<Connection> {
        self.host().await.map_err(|d| diags.add_error(d)).ok()
    }

    /// Runs `f` on the host; its error becomes a diagnostic saying
    /// `summary`, on `attr` unless the error names its own field.
    pub async fn call<T: Send + 'static>(
        &self,
        diags: &mut Diagnostics,
        summary: &str,
        attr: Option<&str>,
        f: impl FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
    ) -> Option<T> {
        let host = self.connect(diags).await?;
        match blocking(&host, f).await {
            Ok(v) => Some(v),
            Err(e) => fail(diags, to_diag(summary, &e, attr)),
        }
    }

    /// Reads a resource back with `f`: `Some(None)` when it is gone from the
    /// host (Terraform then plans to create it again).
    pub async fn read_back<T: Send + 'static>(
        &self,
        diags: &mut Diagnostics,
        summary: &str,
        f: impl FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
    ) -> Option<Option<T>> {
        let host = self.connect(diags).await?;
        match blocking(&host, f).await {
            Ok(v) => Some(Some(v)),
            Err(e) if e.is_not_found() => Some(None),
            Err(e) => fail(diags, to_diag(summary, &e, None)),
        }
    }

    /// Deletes with `f`; what is already gone counts as deleted, so a
    /// destroy after a removal outside Terraform succeeds.
    pub async fn delete(
        &self,
        diags: &mut Diagnostics,
        summary: &str,
        f: impl FnOnce(&Host) -> Result<(), HostError> + Send + 'static,
    ) -> Option<()> {
        self.read_back(diags, summary, f).await.map(|_| ())
    }

    /// Looks up what `terraform import` names with `f`; a failure says
    /// which ids the `what` takes (`hint`).
    pub async fn import<T: Send + 'static>(
        &self,
        diags: &mut Diagnostics,
        what: &str,
        hint: &str,
        f: impl FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
    ) -> Option<T> {
        let host = self.connect(diags).await?;
        match blocking(&host, f).await {
            Ok(v) => Some(v),
            Err(e) => fail(
                diags,
                Diagnostic::root(format!("Cannot import the {what}"), format!("{e}; {hint}")),
            ),
        }
    }
}

/// Runs a blocking libvirt call on tokio's blocking pool
/// ([`Connection::run`]); a panic in it goes on here.
pub async fn blocking<T: Send + 'static>(
    conn: &Connection,
    f: impl FnOnce(&Host) -> T + Send + 'static,
) -> T {
    conn.run(f).await.unwrap_or_else(|e| e.resume())
}
