//! The virtual IPs on the node's interface, through netlink.

use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};

/// One interface's addresses, as the kernel has them.
pub struct Interface {
    handle: Handle,
    pub name: String,
    pub index: u32,
}

impl Interface {
    /// Opens a netlink connection and finds the interface `name`.
    pub async fn open(name: &str) -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
        tokio::spawn(connection);
        let link = handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
            .with_context(|| format!("no interface {name:?} on this node (--interface)"))?
            .with_context(|| format!("no interface {name:?} on this node (--interface)"))?;
        Ok(Self {
            handle,
            name: name.into(),
            index: link.header.index,
        })
    }

    async fn messages(&self) -> Result<Vec<(IpAddr, AddressMessage)>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute()
            .try_collect()
            .await
            .context("listing addresses")?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let ip = ip.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                Some((ip, m))
            })
            .collect())
    }

    /// The addresses on the interface.
    pub async fn addresses(&self) -> Result<Vec<IpAddr>> {
        Ok(self
            .messages()
            .await?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Adds `ip` as a host address (/32 or /128); nothing if it is there already.
    pub async fn add(&self, ip: IpAddr) -> Result<()> {
        if self.addresses().await?.contains(&ip) {
            return Ok(());
        }
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        self.handle
            .address()
            .add(self.index, ip, prefix)
            .execute()
            .await
            .with_context(|| format!("adding {ip} to {}", self.name))
    }

    /// Removes `ip`; nothing if it is not there.
    pub async fn remove(&self, ip: IpAddr) -> Result<()> {
        for (found, msg) in self.messages().await? {
            if found == ip {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .with_context(|| format!("removing {ip} from {}", self.name))?;
            }
        }
        Ok(())
    }
}
