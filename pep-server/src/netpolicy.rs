//! Which gateway addresses the server may connect to (`[fcc] allowed_networks`, `require_peer_ip`).
//!
//! `GET /v3/identity` makes the server open a TCP connection to the `ip:port` its caller names. Left
//! open, that lets any token holder reach the server's own services (loopback), the cloud metadata
//! service (link-local `169.254.169.254`) and every internal host, and the distinct error classes
//! (refused, timed out, not FCC) turn the API into a port scanner. [`NetworkPolicy::check`] decides
//! before any connection is made; a refusal names the configuration rule that refused
//! ([`Refusal::rule`]) so an operator knows what to change.
//!
//! The rules, in order:
//! 1. with `require_peer_ip = true`, the target must be the requester's own address (the gateway
//!    calls for itself);
//! 2. the target must be a unicast address (not `0.0.0.0`, `::`, multicast or broadcast);
//! 3. loopback, link-local and this server's own addresses are *special*: they are allowed only by
//!    an entry of `allowed_networks` lying inside their own range (`127.0.0.0/8` or `::1/128` for
//!    loopback, inside `169.254.0.0/16` / `fe80::/10` for link-local, the address itself as a `/32`
//!    or `/128` for another address of this host), never by a wide entry such as `10.0.0.0/8` that
//!    happens to contain them;
//! 4. any other target must lie in one of `allowed_networks` (default: RFC 1918 and ULA).
//!
//! Pure decisions over addresses; the only system call is the own-address probe (binding a UDP
//! socket to the address, which succeeds only for an address of this host and sends nothing).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The configuration rule `allowed_networks`, as named in refusals.
pub const RULE_ALLOWED_NETWORKS: &str = "fcc.allowed_networks";
/// The configuration rule `require_peer_ip`, as named in refusals.
pub const RULE_REQUIRE_PEER_IP: &str = "fcc.require_peer_ip";

/// One entry of `allowed_networks`: a CIDR network (`10.0.0.0/8`, `fd00::/8`) or a single address
/// (`192.168.1.20`, taken as `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(IpNet);

/// Why a text is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` {reason}")]
pub struct InvalidNetwork {
    text: String,
    reason: String,
}

impl Network {
    /// The network of `addr/prefix`.
    fn of(net: IpNet) -> Network {
        Network(net)
    }

    /// True when `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// True when this network lies wholly inside `outer`.
    fn is_inside(&self, outer: &IpNet) -> bool {
        outer.contains(&self.0)
    }

    /// True for a single address (`/32` or `/128`) equal to `ip`.
    fn is_host(&self, ip: IpAddr) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len() && self.0.addr() == ip
    }
}

impl FromStr for Network {
    type Err = InvalidNetwork;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| InvalidNetwork {
            text: s.chars().take(64).collect(),
            reason,
        };
        let text = s.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(text.parse::<IpAddr>().map_err(|_| {
                err("is not a CIDR network (e.g. `10.0.0.0/8`, `fd00::/8`) or an IP address".into())
            })?),
        };
        // `10.1.2.3/8` is most likely a typo for a host or a network: refuse rather than guess.
        if net.network() != net.addr() {
            return Err(err(format!(
                "has host bits set (did you mean `{}`?)",
                net.trunc()
            )));
        }
        Ok(Network(net))
    }
}

impl TryFrom<String> for Network {
    type Error = InvalidNetwork;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        n.to_string()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The default `allowed_networks`: the private ranges of RFC 1918 and the IPv6 unique local
/// addresses (RFC 4193), where factory gateways live.
pub fn default_allowed_networks() -> Vec<Network> {
    let v4 = |a, b, len| {
        Network::of(IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::new(a, b, 0, 0), len).unwrap_or_default(),
        ))
    };
    vec![
        v4(10, 0, 8),
        v4(172, 16, 12),
        v4(192, 168, 16),
        Network::of(IpNet::V6(
            ipnet::Ipv6Net::new(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7).unwrap_or_default(),
        )),
    ]
}

/// A target refused by the policy: which rule, and why in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the gateway address {target} is refused by {rule}: {reason}")]
pub struct Refusal {
    /// The configuration rule that refused (`fcc.allowed_networks`, `fcc.require_peer_ip`).
    pub rule: &'static str,
    /// The target.
    pub target: IpAddr,
    /// Why, and what would allow it.
    pub reason: String,
}

/// What kind of special address a target is (rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    Loopback,
    LinkLocal,
    Own,
}

/// The gateway network policy of one server.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    allowed: Vec<Network>,
    require_peer_ip: bool,
}

impl NetworkPolicy {
    /// The policy of `[fcc]`.
    pub fn new(allowed: Vec<Network>, require_peer_ip: bool) -> NetworkPolicy {
        NetworkPolicy {
            allowed,
            require_peer_ip,
        }
    }

    /// Decides whether the server may connect to `target` for a request from `peer` (the
    /// requester's address; `None` when there is none, e.g. a library caller).
    pub fn check(&self, target: SocketAddr, peer: Option<IpAddr>) -> Result<(), Refusal> {
        let ip = target.ip().to_canonical();
        let refuse = |rule, reason: String| Refusal {
            rule,
            target: ip,
            reason,
        };
        if self.require_peer_ip && peer.map(|p| p.to_canonical()) != Some(ip) {
            let from =
                peer.map_or_else(|| "no address".to_owned(), |p| p.to_canonical().to_string());
            return Err(refuse(
                RULE_REQUIRE_PEER_IP,
                format!(
                    "the ip must be the requester's own address ({from}): a gateway asks for itself"
                ),
            ));
        }
        if !is_unicast(ip) {
            return Err(refuse(
                RULE_ALLOWED_NETWORKS,
                "not a unicast address (unspecified, multicast or broadcast)".to_owned(),
            ));
        }
        match special(ip) {
            Some(kind) => {
                if self
                    .allowed
                    .iter()
                    .any(|n| n.contains(ip) && lists_special(n, kind, ip))
                {
                    Ok(())
                } else {
                    Err(refuse(RULE_ALLOWED_NETWORKS, special_reason(kind)))
                }
            }
            None if self.allowed.iter().any(|n| n.contains(ip)) => Ok(()),
            None => Err(refuse(
                RULE_ALLOWED_NETWORKS,
                format!("outside the allowed networks ({})", self.allowed_list()),
            )),
        }
    }

    fn allowed_list(&self) -> String {
        if self.allowed.is_empty() {
            return "none".to_owned();
        }
        self.allowed
            .iter()
            .map(Network::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

fn special(ip: IpAddr) -> Option<Special> {
    if ip.is_loopback() {
        return Some(Special::Loopback);
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if link_local {
        return Some(Special::LinkLocal);
    }
    is_own_address(ip).then_some(Special::Own)
}

/// True when `ip` is an address of this host: binding a socket to it succeeds only then. Nothing
/// is sent; the socket is closed at once.
fn is_own_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// True when entry `n` is specific enough to allow the special address `ip` (rule 3).
fn lists_special(n: &Network, kind: Special, ip: IpAddr) -> bool {
    let inside = |text: &str| text.parse::<IpNet>().is_ok_and(|outer| n.is_inside(&outer));
    match kind {
        Special::Loopback => inside("127.0.0.0/8") || inside("::1/128"),
        Special::LinkLocal => inside("169.254.0.0/16") || inside("fe80::/10"),
        Special::Own => n.is_host(ip),
    }
}

fn special_reason(kind: Special) -> String {
    match kind {
        Special::Loopback => "a loopback address (this server's own services); allowed only when \
             fcc.allowed_networks lists a network inside 127.0.0.0/8 or ::1"
            .to_owned(),
        Special::LinkLocal => "a link-local address (where cloud metadata services live); allowed \
             only when fcc.allowed_networks lists a network inside 169.254.0.0/16 or fe80::/10"
            .to_owned(),
        Special::Own => "an address of this server; allowed only when fcc.allowed_networks lists \
             it as a single address (/32 or /128)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nets: &[&str], require_peer_ip: bool) -> NetworkPolicy {
        NetworkPolicy::new(
            nets.iter().map(|n| n.parse().unwrap()).collect(),
            require_peer_ip,
        )
    }

    fn target(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 7777)
    }

    #[test]
    fn networks_parse_and_refuse_nonsense() {
        assert_eq!(
            "10.0.0.0/8".parse::<Network>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.168.1.20".parse::<Network>().unwrap().to_string(),
            "192.168.1.20/32"
        );
        assert_eq!("::1".parse::<Network>().unwrap().to_string(), "::1/128");
        for bad in ["", "10.0.0.0/33", "ten", "10.0.0.0/", "fd00::/129"] {
            let e = bad.parse::<Network>().unwrap_err().to_string();
            assert!(e.contains("is not a CIDR network"), "{bad}: {e}");
        }
        let e = "10.1.2.3/8".parse::<Network>().unwrap_err().to_string();
        assert!(
            e.contains("host bits set") && e.contains("10.0.0.0/8"),
            "{e}"
        );
    }

    #[test]
    fn the_default_admits_private_ranges_only() {
        let p = NetworkPolicy::new(default_allowed_networks(), false);
        for ok in [
            "10.1.2.3",
            "172.16.0.9",
            "172.31.255.254",
            "192.168.0.7",
            "fd12:3456::1",
        ] {
            assert_eq!(p.check(target(ok), None), Ok(()), "{ok}");
        }
        for (bad, needle) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            (
                "8.8.8.8",
                "outside the allowed networks (10.0.0.0/8, 172.16.0.0/12",
            ),
            ("172.32.0.1", "outside"),
            ("0.0.0.0", "not a unicast"),
            ("224.0.0.1", "not a unicast"),
            ("255.255.255.255", "not a unicast"),
            ("::", "not a unicast"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            let e = p.check(target(bad), None).unwrap_err();
            assert_eq!(e.rule, RULE_ALLOWED_NETWORKS, "{bad}");
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn special_addresses_need_an_entry_of_their_own() {
        // A wide entry containing link-local or loopback does not open them.
        let wide = policy(&["0.0.0.0/0", "::/0"], false);
        assert!(wide.check(target("8.8.8.8"), None).is_ok());
        for special in ["127.0.0.1", "169.254.169.254", "::1", "fe80::1"] {
            assert!(wide.check(target(special), None).is_err(), "{special}");
        }
        let listed = policy(&["127.0.0.0/8", "::1", "169.254.10.0/24"], false);
        assert!(listed.check(target("127.0.0.2"), None).is_ok());
        assert!(listed.check(target("::1"), None).is_ok());
        assert!(listed.check(target("169.254.10.5"), None).is_ok());
        assert!(listed.check(target("169.254.169.254"), None).is_err());
    }

    #[test]
    fn require_peer_ip_wants_the_requesters_address() {
        let p = policy(&["127.0.0.0/8"], true);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.check(target("127.0.0.1"), Some(peer)).is_ok());
        // An IPv4-mapped peer is the same address.
        assert!(
            p.check(
                target("127.0.0.1"),
                Some("::ffff:127.0.0.1".parse().unwrap())
            )
            .is_ok()
        );
        let e = p.check(target("127.0.0.2"), Some(peer)).unwrap_err();
        assert_eq!(e.rule, RULE_REQUIRE_PEER_IP);
        assert!(
            e.to_string()
                .contains("requester's own address (127.0.0.1)"),
            "{e}"
        );
        assert_eq!(
            p.check(target("127.0.0.1"), None).unwrap_err().rule,
            RULE_REQUIRE_PEER_IP
        );
        // The allowlist still applies to the requester's own address.
        let p = policy(&["10.0.0.0/8"], true);
        assert_eq!(
            p.check(target("127.0.0.1"), Some(peer)).unwrap_err().rule,
            RULE_ALLOWED_NETWORKS
        );
    }

    #[test]
    fn the_servers_own_addresses_need_a_host_entry() {
        // Every machine with IPv4 can bind some non-loopback address only when it has one; the
        // probe itself is checked on loopback addresses, which are always this host's.
        assert!(is_own_address("127.0.0.1".parse().unwrap()));
        assert!(!is_own_address("192.0.2.1".parse().unwrap()));
        let n: Network = "10.0.0.5".parse().unwrap();
        assert!(lists_special(&n, Special::Own, "10.0.0.5".parse().unwrap()));
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(!lists_special(
            &n,
            Special::Own,
            "10.0.0.5".parse().unwrap()
        ));
    }
}
