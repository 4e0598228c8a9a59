//! Virtual networks: NAT, routed, isolated, or a host bridge.

use std::net::Ipv4Addr;

use super::error::{lv, Error, Result};
use super::xml::{child, child_attr, child_text, children, esc, parse};
use super::Host;

/// How a network reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Masqueraded behind the host.
    #[default]
    Nat,
    /// Routed without NAT.
    Route,
    /// A bridge that already exists on the host.
    Bridge,
    /// No forwarding at all.
    None,
}

impl NetworkMode {
    /// libvirt's name.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Nat => "nat",
            NetworkMode::Route => "route",
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
        }
    }

    /// Parses libvirt's name; `field` names the input in the error.
    pub fn parse(s: &str, field: &'static str) -> Result<NetworkMode> {
        match s {
            "nat" => Ok(NetworkMode::Nat),
            "route" => Ok(NetworkMode::Route),
            "bridge" => Ok(NetworkMode::Bridge),
            "none" => Ok(NetworkMode::None),
            other => Err(Error::Invalid {
                field,
                message: format!("unknown network mode '{other}': use nat, route, bridge or none"),
            }),
        }
    }
}

/// A network definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkDef {
    /// Name, unique on the host.
    pub name: String,
    /// UUID; libvirt assigns one when absent.
    pub uuid: Option<String>,
    /// Forwarding mode.
    pub mode: NetworkMode,
    /// Bridge device name (required for [`NetworkMode::Bridge`]).
    pub bridge: Option<String>,
    /// DNS domain handed to guests.
    pub domain: Option<String>,
    /// IPv4 subnets in CIDR form, e.g. "10.17.3.0/24"; the host takes
    /// the first address.
    pub addresses: Vec<String>,
    /// Serve DHCP on the subnets.
    pub dhcp: bool,
    /// Serve DNS to guests.
    pub dns: bool,
}

fn cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::Invalid {
        field: "addresses",
        message: format!("'{s}' is not an IPv4 subnet like 10.17.3.0/24"),
    };
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(Error::Invalid {
            field: "addresses",
            message: format!("'{s}': the prefix length must be between 8 and 30"),
        });
    }
    Ok((ip, len))
}

impl NetworkDef {
    /// Checks names and subnets.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains('/') {
            return Err(Error::Invalid {
                field: "name",
                message: format!("'{}' is not a valid network name", self.name),
            });
        }
        if self.mode == NetworkMode::Bridge {
            if self.bridge.is_none() {
                return Err(Error::Invalid {
                    field: "bridge",
                    message: "mode \"bridge\" needs the name of an existing host bridge".into(),
                });
            }
            if !self.addresses.is_empty() {
                return Err(Error::Invalid {
                    field: "addresses",
                    message: "mode \"bridge\" networks have no addresses of their own; remove them"
                        .into(),
                });
            }
        }
        for a in &self.addresses {
            cidr(a)?;
        }
        Ok(())
    }

    /// The network's libvirt XML.
    pub fn to_xml(&self) -> Result<String> {
        self.validate()?;
        let mut x = format!("<network><name>{}</name>", esc(&self.name));
        if let Some(u) = &self.uuid {
            x.push_str(&format!("<uuid>{}</uuid>", esc(u)));
        }
        if self.mode != NetworkMode::None {
            x.push_str(&format!("<forward mode='{}'/>", self.mode.as_str()));
        }
        if let Some(b) = &self.bridge {
            if self.mode == NetworkMode::Bridge {
                x.push_str(&format!("<bridge name='{}'/>", esc(b)));
            } else {
                x.push_str(&format!("<bridge name='{}' stp='on' delay='0'/>", esc(b)));
            }
        }
        if self.mode != NetworkMode::Bridge {
            if let Some(d) = &self.domain {
                x.push_str(&format!("<domain name='{}' localOnly='yes'/>", esc(d)));
            }
            x.push_str(&format!(
                "<dns enable='{}'/>",
                if self.dns { "yes" } else { "no" }
            ));
            for a in &self.addresses {
                let (net, len) = cidr(a)?;
                let mask = u32::MAX << (32 - len);
                let base = u32::from(net) & mask;
                let last = base | !mask;
                let host = Ipv4Addr::from(base + 1);
                x.push_str(&format!("<ip address='{host}' prefix='{len}'>"));
                if self.dhcp {
                    x.push_str(&format!(
                        "<dhcp><range start='{}' end='{}'/></dhcp>",
                        Ipv4Addr::from(base + 2),
                        Ipv4Addr::from(last - 1)
                    ));
                }
                x.push_str("</ip>");
            }
        }
        x.push_str("</network>");
        Ok(x)
    }

    /// Reads a definition back from libvirt's XML.
    pub fn from_xml(text: &str) -> Result<NetworkDef> {
        let doc = parse("network XML", text)?;
        let root = doc.root_element();
        let mode = match child_attr(root, "forward", "mode").as_deref() {
            Some("nat") => NetworkMode::Nat,
            Some("route") => NetworkMode::Route,
            Some("bridge") => NetworkMode::Bridge,
            Some(_) => NetworkMode::Nat,
            None if child(root, "forward").is_some() => NetworkMode::Nat,
            None => NetworkMode::None,
        };
        let mut addresses = Vec::new();
        let mut dhcp = false;
        for ip in children(root, "ip") {
            if ip.attribute("family").is_some_and(|f| f != "ipv4") {
                continue;
            }
            let Some(addr) = ip
                .attribute("address")
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let len: u8 = match (ip.attribute("prefix"), ip.attribute("netmask")) {
                (Some(p), _) => p.parse().unwrap_or(24),
                (None, Some(m)) => m
                    .parse::<Ipv4Addr>()
                    .map(|m| u32::from(m).count_ones() as u8)
                    .unwrap_or(24),
                _ => 24,
            };
            let base = u32::from(addr) & (u32::MAX << (32 - len));
            addresses.push(format!("{}/{len}", Ipv4Addr::from(base)));
            dhcp |= child(ip, "dhcp").is_some();
        }
        Ok(NetworkDef {
            name: child_text(root, "name").unwrap_or_default(),
            uuid: child_text(root, "uuid"),
            mode,
            bridge: child_attr(root, "bridge", "name"),
            domain: child_attr(root, "domain", "name"),
            addresses,
            dhcp,
            dns: child_attr(root, "dns", "enable").as_deref() != Some("no"),
        })
    }
}

/// A network as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    /// The definition, as libvirt completed it (bridge name, UUID).
    pub def: NetworkDef,
    /// Started.
    pub active: bool,
    /// Started when libvirtd starts.
    pub autostart: bool,
}

impl Host {
    fn lookup_network(&self, id: &str) -> Result<virt::network::Network> {
        let ctx = format!("look up network '{id}'");
        if id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4 {
            if let Ok(n) = self.raw().lookup_network_by_uuid_string(id) {
                return Ok(n);
            }
        }
        self.raw()
            .lookup_network_by_name(id)
            .map_err(lv(ctx, "network", id))
    }

    /// Defines and starts a network, then sets autostart. On failure the
    /// definition is removed again. Returns the UUID.
    pub fn create_network(&self, def: &NetworkDef, autostart: bool) -> Result<String> {
        let xml = def.to_xml()?;
        let net = self
            .raw()
            .define_network_xml(&xml)
            .map_err(|e| Error::Libvirt {
                context: format!("define network '{}'", def.name),
                message: e.message().to_string(),
            })?;
        let started = net
            .create()
            .and_then(|_| net.set_autostart(autostart))
            .and_then(|_| net.uuid_string());
        match started {
            Ok(uuid) => Ok(uuid),
            Err(e) => {
                let _ = net.destroy();
                let _ = net.undefine();
                Err(Error::Libvirt {
                    context: format!("start network '{}'", def.name),
                    message: e.message().to_string(),
                })
            }
        }
    }

    /// The network's definition and state (by UUID or name).
    pub fn network(&self, id: &str) -> Result<NetworkStatus> {
        let net = self.lookup_network(id)?;
        let fail = |e| lv(format!("read network '{id}'"), "network", id)(e);
        let xml = net.xml_desc(0).map_err(fail)?;
        Ok(NetworkStatus {
            def: NetworkDef::from_xml(&xml)?,
            active: net.is_active().map_err(fail)?,
            autostart: net.autostart().map_err(fail)?,
        })
    }

    /// Sets whether libvirtd starts the network at boot.
    pub fn set_network_autostart(&self, id: &str, on: bool) -> Result<()> {
        let net = self.lookup_network(id)?;
        net.set_autostart(on).map(|_| ()).map_err(lv(
            format!("set autostart of network '{id}'"),
            "network",
            id,
        ))
    }

    /// Stops and undefines a network.
    pub fn delete_network(&self, id: &str) -> Result<()> {
        let net = self.lookup_network(id)?;
        if net.is_active().unwrap_or(false) {
            net.destroy()
                .map_err(lv(format!("stop network '{id}'"), "network", id))?;
        }
        net.undefine()
            .map_err(lv(format!("undefine network '{id}'"), "network", id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat() -> NetworkDef {
        NetworkDef {
            name: "lab".into(),
            mode: NetworkMode::Nat,
            bridge: Some("virbr-lab".into()),
            domain: Some("lab.test".into()),
            addresses: vec!["10.17.3.0/24".into()],
            dhcp: true,
            dns: true,
            uuid: None,
        }
    }

    #[test]
    fn nat_network_xml_serves_dhcp_on_the_subnet() {
        let x = nat().to_xml().unwrap();
        assert!(x.contains("<ip address='10.17.3.1' prefix='24'><dhcp><range start='10.17.3.2' end='10.17.3.254'/>"), "{x}");
        assert_eq!(NetworkDef::from_xml(&x).unwrap(), nat());
    }

    #[test]
    fn bad_subnet_names_the_field() {
        let mut n = nat();
        n.addresses = vec!["10.17.3.0".into()];
        assert!(n
            .to_xml()
            .unwrap_err()
            .to_string()
            .starts_with("invalid addresses"));
    }

    #[test]
    fn network_lifecycle_on_the_test_driver() {
        let host = Host::open("test:///default").unwrap();
        let uuid = host.create_network(&nat(), true).unwrap();
        let st = host.network(&uuid).unwrap();
        assert!(st.active && st.autostart);
        assert_eq!(st.def.addresses, vec!["10.17.3.0/24".to_string()]);
        host.delete_network("lab").unwrap();
        assert!(host.network(&uuid).unwrap_err().is_not_found());
    }
}
