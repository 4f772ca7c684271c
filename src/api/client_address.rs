//! The client's address behind proxies: what the login throttle counts and the logs show.
//!
//! `X-Forwarded-For` and `Forwarded` are only hints a peer writes; anyone can send them. They are
//! read only when the peer itself is a trusted proxy (`TRUSTED_PROXIES`), only the one header
//! those proxies write (`FORWARDED_HEADER`: a balancer that appends to `X-Forwarded-For` passes a
//! client's own `Forwarded` through untouched, so following whichever is present would let the
//! client choose), and then from the right: each trusted hop vouches for the address to its left,
//! so the first address from the right that is not a trusted proxy is the client. What a client
//! wrote further left is never believed.
use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, header::FORWARDED};

use crate::config::{ForwardedHeader, TrustedProxies};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address the request came from, as far as trusted proxies vouch for it.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> IpAddr {
    // `::ffff:10.0.0.1` (a dual-stack listener) is the IPv4 peer `10.0.0.1` to the CIDRs.
    let peer = peer.to_canonical();
    let is_trusted = |address: &IpAddr| proxies.nets.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = match proxies.header {
        ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
        ForwardedHeader::Forwarded => forwarded_for(headers),
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            // A hop we cannot read (obfuscated, `unknown`, no `for=`, garbage): the last address
            // vouched for is as far as the chain can be followed.
            None => break,
            Some(address) => {
                client = address.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
        }
    }
    client
}

/// The comma-separated entries of every instance of a header, left to right, each read on its
/// own: one byte a proxy would not write spoils its entry, not the whole line.
fn entries(
    headers: &HeaderMap,
    name: impl axum::http::header::AsHeaderName,
) -> Vec<Option<String>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value: &HeaderValue| value.as_bytes().split(|byte| *byte == b','))
        .map(|entry| {
            std::str::from_utf8(entry)
                .ok()
                .map(|text| text.trim().to_string())
        })
        .collect()
}

/// Every `X-Forwarded-For` entry, left to right, across repeated headers.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    entries(headers, X_FORWARDED_FOR)
        .into_iter()
        .map(|entry| entry.and_then(|entry| parse_node(&entry)))
        .collect()
}

/// The `for=` of every `Forwarded` element (RFC 7239), left to right; an element without one is
/// a hop that cannot be read.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    entries(headers, FORWARDED)
        .into_iter()
        .map(|element| {
            element?.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
                    .flatten()
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
    use crate::config::parse::trusted_proxies as parse_trusted;

    fn reading(header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            nets: parse_trusted("10.0.0.0/8, 192.168.1.1").expect("valid"),
            header,
        }
    }

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

    fn proxies() -> TrustedProxies {
        reading(ForwardedHeader::XForwardedFor)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            client_address(ip("203.0.113.9"), &spoofed, &proxies()),
            ip("203.0.113.9")
        );
        let nobody = TrustedProxies::default();
        assert_eq!(
            client_address(ip("10.0.0.2"), &spoofed, &nobody),
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
        let standard = reading(ForwardedHeader::Forwarded);
        assert_eq!(
            client_address(ip("10.0.0.1"), &forwarded, &standard),
            ip("2001:db8::17")
        );
        // An element the proxy wrote without `for=` is a hop it did not vouch for.
        let no_for = headers(&[("forwarded", "for=6.6.6.6, proto=https;by=10.0.0.1")]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &no_for, &standard),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn only_the_header_the_proxies_write_is_read() {
        // A balancer that appends to X-Forwarded-For passes the client's own Forwarded along.
        let both = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &both, &proxies()),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &both, &reading(ForwardedHeader::Forwarded)),
            ip("6.6.6.6")
        );
    }

    #[test]
    fn a_dual_stack_listener_sees_ipv4_peers_as_the_cidrs_name_them() {
        let chain = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), &chain, &proxies()),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("::ffff:203.0.113.9"), &chain, &proxies()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn an_unreadable_hop_stops_the_chain_at_the_last_vouched_address() {
        let hidden = headers(&[("forwarded", "for=198.51.100.7, for=_hidden, for=10.0.0.5")]);
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                &hidden,
                &reading(ForwardedHeader::Forwarded)
            ),
            ip("10.0.0.5")
        );
        // A byte a proxy would not write spoils its own entry only.
        let mut odd = HeaderMap::new();
        odd.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"6.6.6.\xff, 198.51.100.7").expect("a header value"),
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &odd, &proxies()),
            ip("198.51.100.7")
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
