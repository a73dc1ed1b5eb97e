//! Keeps user-supplied URLs away from the operator's own network.
//!
//! Two checks, because either alone can be bypassed: URLs whose host is an IP literal are checked
//! before every request and on every redirect hop; host names are checked by the DNS resolver the
//! HTTP client connects with, on the addresses it is about to use (so a name that resolves to a
//! public address once and to 127.0.0.1 the next time — DNS rebinding — is still refused).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::error::ProviderError;

/// Which kinds of non-public address the operator allows outgoing requests to reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPolicy {
    /// 127.0.0.0/8, ::1 (tests and single-host installs).
    pub allow_loopback: bool,
    /// RFC 1918, 100.64.0.0/10 (CGNAT), fc00::/7 (unique local).
    pub allow_private: bool,
    /// 169.254.0.0/16 (including cloud metadata endpoints), fe80::/10.
    pub allow_link_local: bool,
}

impl AddressPolicy {
    /// Public addresses only: the default for anything a user typed.
    pub fn public_only() -> Self {
        Self::default()
    }

    pub fn with_loopback() -> Self {
        Self {
            allow_loopback: true,
            ..Self::default()
        }
    }

    /// `Err` with the reason when `ip` may not be reached.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        let class = classify(ip);
        let allowed = match class {
            AddressClass::Public => true,
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private => self.allow_private,
            AddressClass::LinkLocal => self.allow_link_local,
            AddressClass::Unspecified | AddressClass::Multicast | AddressClass::Reserved => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(format!("{ip} is a {} address", class.describe()))
        }
    }

    /// Checks scheme and, when the host is an IP literal, the address itself.
    pub fn check_url(&self, url: &Url) -> Result<(), ProviderError> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(ProviderError::Blocked {
                    detail: format!("scheme {other:?} is not allowed"),
                });
            }
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(ProviderError::invalid("URL has no host")),
        };
        self.check_ip(ip)
            .map_err(|detail| ProviderError::Blocked { detail })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Unspecified,
    Multicast,
    Reserved,
}

impl AddressClass {
    fn describe(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
        }
    }
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private()
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
    {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_broadcast()
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || ip.is_documentation()
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    // Addresses that carry an IPv4 address inside are judged by that address: ::ffff:127.0.0.1
    // reaches the same socket as 127.0.0.1.
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if seg[0] & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
        // fec0::/10 (deprecated site-local) is routed like link-local in practice.
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 || seg[0] == 0x0100 && seg[1..4] == [0, 0, 0] {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let tail = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some(mapped);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks), but not :: and ::1.
    if seg[..6] == [0; 6] && (seg[6] != 0 || seg[7] > 1) {
        return Some(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4] {
        return Some(tail);
    }
    // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    None
}

/// The resolver's error, found again in reqwest's error chain to tell "blocked" from "no such host".
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("address blocked by policy: {0}")]
    Blocked(String),
    #[error("host name did not resolve: {0}")]
    NotFound(String),
}

/// A DNS resolver that drops every address the policy forbids; when none is left the connection
/// fails with [`ResolveError::Blocked`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: AddressPolicy,
}

impl GuardedResolver {
    pub fn new(policy: AddressPolicy) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup_host = host.clone();
            let resolved: Vec<SocketAddr> = tokio::task::spawn_blocking(move || {
                (lookup_host.as_str(), 0u16)
                    .to_socket_addrs()
                    .map(Iterator::collect)
            })
            .await
            .map_err(|e| {
                Box::new(ResolveError::NotFound(e.to_string()))
                    as Box<dyn std::error::Error + Send + Sync>
            })?
            .map_err(|e| {
                Box::new(ResolveError::NotFound(format!("{host}: {e}")))
                    as Box<dyn std::error::Error + Send + Sync>
            })?;
            let mut refused = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(addr.ip()) {
                    Ok(()) => true,
                    Err(reason) => {
                        refused.push(reason);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let detail = if refused.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host}: {}", refused.join(", "))
                };
                let err: Box<dyn std::error::Error + Send + Sync> = if refused.is_empty() {
                    Box::new(ResolveError::NotFound(detail))
                } else {
                    Box::new(ResolveError::Blocked(detail))
                };
                return Err(err);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_the_ranges_that_matter() {
        assert_eq!(class("8.8.8.8"), AddressClass::Public);
        assert_eq!(class("2606:4700::1111"), AddressClass::Public);
        assert_eq!(class("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("127.255.1.2"), AddressClass::Loopback);
        assert_eq!(class("::1"), AddressClass::Loopback);
        assert_eq!(class("10.1.2.3"), AddressClass::Private);
        assert_eq!(class("172.16.0.1"), AddressClass::Private);
        assert_eq!(class("172.31.255.255"), AddressClass::Private);
        assert_eq!(class("172.32.0.1"), AddressClass::Public);
        assert_eq!(class("192.168.1.1"), AddressClass::Private);
        assert_eq!(class("100.64.0.1"), AddressClass::Private);
        assert_eq!(class("fc00::1"), AddressClass::Private);
        assert_eq!(class("fd12:3456::1"), AddressClass::Private);
        assert_eq!(class("169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(class("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(class("0.0.0.0"), AddressClass::Unspecified);
        assert_eq!(class("::"), AddressClass::Unspecified);
        assert_eq!(class("224.0.0.1"), AddressClass::Multicast);
        assert_eq!(class("ff02::1"), AddressClass::Multicast);
        assert_eq!(class("255.255.255.255"), AddressClass::Reserved);
    }

    #[test]
    fn ipv6_forms_carrying_ipv4_are_judged_by_the_ipv4() {
        assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(class("::10.0.0.1"), AddressClass::Private);
        assert_eq!(class("64:ff9b::192.168.0.1"), AddressClass::Private);
        assert_eq!(class("2002:7f00:1::"), AddressClass::Loopback);
        assert_eq!(class("::ffff:8.8.8.8"), AddressClass::Public);
    }

    #[test]
    fn url_check_refuses_literals_and_odd_schemes() {
        let policy = AddressPolicy::public_only();
        for url in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.1/",
            "file:///etc/passwd",
            "gopher://example.org/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert!(
                matches!(
                    policy.check_url(&parsed),
                    Err(ProviderError::Blocked { .. })
                ),
                "{url} should be blocked"
            );
        }
        assert!(
            policy
                .check_url(&Url::parse("https://example.org/cal").unwrap())
                .is_ok()
        );
        assert!(
            AddressPolicy::with_loopback()
                .check_url(&Url::parse("http://127.0.0.1:1/").unwrap())
                .is_ok()
        );
        assert!(
            AddressPolicy::with_loopback()
                .check_url(&Url::parse("http://10.0.0.1/").unwrap())
                .is_err()
        );
    }
}
