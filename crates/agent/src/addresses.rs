//! The virtual IPs on the node's interface, through netlink.
//!
//! Every address the agent brings up carries a marker, the address protocol (`IFA_PROTO`)
//! [`MARK`]: it lets an agent that lost its state file recognise the addresses an earlier
//! agent brought up, and take down those no longer granted, without ever touching an address
//! someone else added. A protocol was chosen over an IPv4 label (`<ifname>:kfo`) because it
//! works for both families and does not lengthen the interface's name past the kernel's 15
//! characters. Kernels older than 5.18 ignore it; the agent then relies on its state file
//! alone.

use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};

/// The address protocol (`IFA_PROTO`) of every address the agent brings up: outside the
/// kernel's own values (1 to 3) and the small numbers other tools are likely to pick.
pub const MARK: u8 = 241;

/// One address on the interface, as the kernel lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnLink {
    pub ip: IpAddr,
    pub prefix: u8,
    /// It carries [`MARK`]: an agent brought it up.
    pub marked: bool,
}

impl OnLink {
    /// A /32 or /128: the only kind of address the agent brings up.
    pub fn is_host(&self) -> bool {
        self.prefix == host_prefix(self.ip)
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

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

    async fn messages(&self) -> Result<Vec<(OnLink, AddressMessage)>> {
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
                let marked = m
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Protocol(p) if u8::from(*p) == MARK));
                let on_link = OnLink {
                    ip,
                    prefix: m.header.prefix_len,
                    marked,
                };
                Some((on_link, m))
            })
            .collect())
    }

    /// The addresses on the interface.
    pub async fn addresses(&self) -> Result<Vec<OnLink>> {
        Ok(self.messages().await?.into_iter().map(|(a, _)| a).collect())
    }

    /// Adds `ip` as a host address (/32 or /128) carrying [`MARK`]. Fails if it is there
    /// already: an address the agent did not add is not its to take over.
    pub async fn add(&self, ip: IpAddr) -> Result<()> {
        let mut request = self.handle.address().add(self.index, ip, host_prefix(ip));
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(MARK)));
        request
            .execute()
            .await
            .with_context(|| format!("adding {ip} to {}", self.name))
    }

    /// Removes the host address `ip` (/32 or /128); nothing if it is not there. The same
    /// address with another prefix is not the agent's and stays.
    pub async fn remove(&self, ip: IpAddr) -> Result<()> {
        for (found, msg) in self.messages().await? {
            if found.ip == ip && found.is_host() {
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
