//! What counts as activity: one type per `monitor` kind, each answering
//! "was there activity since you were last asked?".

#[cfg(feature = "libvirt")]
mod libvirt;
mod load;
mod net;
mod process;
mod tcp;
mod users;

#[cfg(feature = "libvirt")]
pub use libvirt::LibvirtMonitor;
pub use load::LoadMonitor;
pub use net::{local_macs, PortListener, PortMonitor};
pub use process::ProcessMonitor;
pub use tcp::TcpMonitor;
pub use users::UsersMonitor;

use crate::config::MonitorSpec;

/// Why a monitor cannot start or cannot tell whether there was activity.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A file or folder under /proc cannot be read.
    #[error("reading {path}: {source}")]
    Proc {
        /// What was read.
        path: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A /proc file does not look as the kernel writes it.
    #[error("unexpected {path} contents: {text:?}")]
    ProcFormat {
        /// The file.
        path: &'static str,
        /// What it held.
        text: String,
    },
    /// None of the connection tables could be read.
    #[error("cannot read /proc/net/tcp")]
    NoTcpTable,
    /// The listener's UDP port cannot be bound (in use, or privileged).
    #[error("monitor {kind} port {port}: cannot listen on UDP port {port}: {source}")]
    Bind {
        /// The listener, as the config names it.
        kind: &'static str,
        /// The port.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
    /// The listener's thread cannot be started.
    #[error("monitor {kind} port {port}: {source}")]
    Thread {
        /// The listener, as the config names it.
        kind: &'static str,
        /// The port.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
    /// libvirt cannot be reached or answered with an error.
    #[cfg(feature = "libvirt")]
    #[error("{0}")]
    Libvirt(#[from] kvmhost::libvirt::Error),
    /// A `monitor libvirt` line in a powernapd built without libvirt.
    #[error(
        "monitor libvirt {uri}: this powernapd was built without libvirt; \
         build it with the default features to watch VMs"
    )]
    NoLibvirt {
        /// The line's URI.
        uri: String,
    },
}

/// A source of activity.
pub trait Monitor: Send {
    /// How the config names it, for logs.
    fn describe(&self) -> String;

    /// True when there was activity since the last call. An error means
    /// the monitor could not tell; the daemon then counts it as activity,
    /// so a broken check never powers a busy machine off.
    fn check(&mut self) -> Result<bool, MonitorError>;
}

/// Starts the monitor a config line asks for (listeners bind their port
/// now, so a port in use is reported at startup).
pub fn start(spec: &MonitorSpec) -> Result<Box<dyn Monitor>, MonitorError> {
    Ok(match spec {
        MonitorSpec::Process(re) => Box::new(ProcessMonitor::new(re.clone())),
        MonitorSpec::Users { max_idle } => Box::new(UsersMonitor::new(*max_idle)),
        MonitorSpec::Powerwake { port } => {
            Box::new(PortMonitor::start(PortListener::Powerwake, *port)?)
        }
        MonitorSpec::Wol { port } => Box::new(PortMonitor::start(PortListener::Wol, *port)?),
        MonitorSpec::Udp { port } => Box::new(PortMonitor::start(PortListener::Udp, *port)?),
        MonitorSpec::Tcp { port } => Box::new(TcpMonitor::new(*port)),
        MonitorSpec::Load { threshold } => Box::new(LoadMonitor::new(*threshold)),
        #[cfg(feature = "libvirt")]
        MonitorSpec::Libvirt { uri } => Box::new(LibvirtMonitor::new(uri.clone())),
        #[cfg(not(feature = "libvirt"))]
        MonitorSpec::Libvirt { uri } => return Err(MonitorError::NoLibvirt { uri: uri.clone() }),
    })
}
