//! The client's address behind proxies: what the login throttle counts and the logs show.
//!
//! `X-Forwarded-For` and `Forwarded` are only hints a peer writes; anyone can send them. They are
//! read only when the peer itself is a trusted proxy (`TRUSTED_PROXIES`), and then from the right:
//! each trusted hop vouches for the address to its left, so the first address from the right that
//! is not a trusted proxy is the client. What a client wrote further left is never believed.
use std::net::IpAddr;

use axum::http::{HeaderMap, header::FORWARDED};
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address the request came from, as far as trusted proxies vouch for it.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    // `Forwarded` is the standard; a proxy that writes it is the one to follow.
    let hops = if headers.contains_key(FORWARDED) {
        forwarded_for(headers)
    } else {
        x_forwarded_for(headers)
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            // A hop we cannot read (obfuscated, `unknown`, garbage): the last address vouched
            // for is as far as the chain can be followed.
            None => break,
            Some(address) => {
                client = *address;
                if !is_trusted(address) {
                    break;
                }
            }
        }
    }
    client
}

/// Every `X-Forwarded-For` entry, left to right, across repeated headers.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(|entry| parse_node(entry.trim()))
        .collect()
}

/// Every `for=` of `Forwarded` (RFC 7239), left to right, across elements and repeated headers.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("for=\u{0}").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711` or a bare IPv6 address.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::config::parse_trusted_proxies as parse_trusted;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn proxies() -> Vec<IpNet> {
        parse_trusted("10.0.0.0/8, 192.168.1.1").expect("valid")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            client_address(ip("203.0.113.9"), &spoofed, &proxies()),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &spoofed, &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        // The client forged the leftmost entry; the proxies appended what they saw.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(
            client_address(ip("192.168.1.1"), &chain, &proxies()),
            ip("198.51.100.7")
        );
        let repeated = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:5123"),
        ]);
        assert_eq!(
            client_address(ip("10.9.9.9"), &repeated, &proxies()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_is_read_with_quotes_ports_and_ipv6() {
        let forwarded = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::17]:4711";proto=https, for=10.0.0.5;by=10.0.0.1"#,
        )]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &forwarded, &proxies()),
            ip("2001:db8::17")
        );
    }

    #[test]
    fn an_unreadable_hop_stops_the_chain_at_the_last_vouched_address() {
        let hidden = headers(&[("forwarded", "for=198.51.100.7, for=_hidden, for=10.0.0.5")]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &hidden, &proxies()),
            ip("10.0.0.5")
        );
        let garbage = headers(&[("x-forwarded-for", "198.51.100.7, not-an-ip")]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &garbage, &proxies()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &proxies()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_list_refuses_what_is_not_an_address() {
        assert!(parse_trusted("10.0.0.0/8,fd00::/8, 127.0.0.1").is_ok());
        assert_eq!(parse_trusted("").map(|list| list.len()), Ok(0));
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("proxy.local").is_err());
    }
}
