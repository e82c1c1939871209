//! Telling the link that a virtual IP moved here: a gratuitous ARP for IPv4, an unsolicited
//! neighbour advertisement for IPv6 (RFC 5227, RFC 4861 § 7.2.6), so that neighbours and
//! switches send to this node's MAC at once rather than when their caches expire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use pnet_datalink::{Channel, MacAddr, NetworkInterface};
use pnet_packet::MutablePacket;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{MutableNeighborAdvertPacket, NdpOptionTypes};
use pnet_packet::icmpv6::{Icmpv6Packet, Icmpv6Types, checksum};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::MutableIpv6Packet;

const ETHERNET: usize = 14;
const ARP: usize = 28;
const IPV6: usize = 40;
/// A neighbour advertisement (24 bytes) with one target link-layer address option (8).
const NA: usize = 32;

/// A gratuitous ARP request for `ip` from `mac`: sender and target address both `ip`,
/// broadcast.
pub fn gratuitous_arp(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; ETHERNET + ARP];
    let mut eth = MutableEthernetPacket::new(&mut frame).expect("frame sized for ethernet");
    eth.set_destination(MacAddr::broadcast());
    eth.set_source(mac);
    eth.set_ethertype(EtherTypes::Arp);
    let mut arp = MutableArpPacket::new(eth.payload_mut()).expect("frame sized for ARP");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperations::Request);
    arp.set_sender_hw_addr(mac);
    arp.set_sender_proto_addr(ip);
    arp.set_target_hw_addr(MacAddr::zero());
    arp.set_target_proto_addr(ip);
    frame
}

/// An unsolicited neighbour advertisement for `ip` from `mac` to all nodes (ff02::1), with
/// the override flag and the target link-layer address.
pub fn unsolicited_na(mac: MacAddr, ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut frame = vec![0u8; ETHERNET + IPV6 + NA];
    let mut eth = MutableEthernetPacket::new(&mut frame).expect("frame sized for ethernet");
    eth.set_destination(MacAddr::new(0x33, 0x33, 0, 0, 0, 1));
    eth.set_source(mac);
    eth.set_ethertype(EtherTypes::Ipv6);
    let mut ip6 = MutableIpv6Packet::new(eth.payload_mut()).expect("frame sized for IPv6");
    ip6.set_version(6);
    ip6.set_payload_length(NA as u16);
    ip6.set_next_header(IpNextHeaderProtocols::Icmpv6);
    ip6.set_hop_limit(255);
    ip6.set_source(ip);
    ip6.set_destination(all_nodes);
    let mut na = MutableNeighborAdvertPacket::new(ip6.payload_mut()).expect("sized for NA");
    na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
    // Override: replace what caches hold for this address.
    na.set_flags(0x20);
    na.set_target_addr(ip);
    let body = ip6.payload_mut();
    body[24] = NdpOptionTypes::TargetLLAddr.0;
    body[25] = 1;
    body[26..32].copy_from_slice(&mac.octets());
    let sum = checksum(
        &Icmpv6Packet::new(body).expect("sized for ICMPv6"),
        &ip,
        &all_nodes,
    );
    body[2..4].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// Sends `count` announcements of `ip` on `interface`, 100 ms apart (neighbours may miss one).
pub async fn announce(interface: &str, ip: IpAddr, count: u32) -> Result<()> {
    let interface = interface.to_string();
    tokio::task::spawn_blocking(move || send(&interface, ip, count))
        .await
        .context("announce task")?
}

fn send(name: &str, ip: IpAddr, count: u32) -> Result<()> {
    let iface: NetworkInterface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no interface {name:?}"))?;
    let Some(mac) = iface.mac else {
        bail!("interface {name:?} has no MAC address to announce");
    };
    let frame = match ip {
        IpAddr::V4(v4) => gratuitous_arp(mac, v4),
        IpAddr::V6(v6) => unsolicited_na(mac, v6),
    };
    let Channel::Ethernet(mut tx, _rx) = pnet_datalink::channel(&iface, Default::default())
        .with_context(|| format!("raw socket on {name} (needs CAP_NET_RAW)"))?
    else {
        bail!("interface {name:?} is not an Ethernet link");
    };
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        tx.send_to(&frame, None)
            .with_context(|| format!("no frame sent on {name}"))?
            .with_context(|| format!("sending the announcement of {ip} on {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::Packet;
    use pnet_packet::arp::ArpPacket;
    use pnet_packet::ethernet::EthernetPacket;
    use pnet_packet::icmpv6::ndp::NeighborAdvertPacket;
    use pnet_packet::ipv6::Ipv6Packet;

    const MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0a);

    #[test]
    fn a_gratuitous_arp_says_the_address_is_at_this_mac() {
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 10));
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination(), MacAddr::broadcast());
        assert_eq!(eth.get_ethertype(), EtherTypes::Arp);
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_sender_hw_addr(), MAC);
        assert_eq!(arp.get_sender_proto_addr(), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(arp.get_target_proto_addr(), Ipv4Addr::new(192, 0, 2, 10));
    }

    #[test]
    fn an_unsolicited_advertisement_overrides_and_checks_out() {
        let ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let frame = unsolicited_na(MAC, ip);
        let eth = EthernetPacket::new(&frame).unwrap();
        let ip6 = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!(ip6.get_hop_limit(), 255);
        let na = NeighborAdvertPacket::new(ip6.payload()).unwrap();
        assert_eq!(na.get_target_addr(), ip);
        assert_eq!(na.get_flags() & 0x20, 0x20, "override flag");
        assert_eq!(
            &ip6.payload()[24..26],
            &[2, 1],
            "target link-layer address option"
        );
        assert_eq!(&ip6.payload()[26..32], &MAC.octets());
        // The checksum verifies: recomputed over the packet as sent it comes out the same.
        let icmp = Icmpv6Packet::new(ip6.payload()).unwrap();
        assert_eq!(
            checksum(&icmp, &ip, &ip6.get_destination()),
            na.get_checksum()
        );
        assert_ne!(na.get_checksum(), 0);
    }
}
