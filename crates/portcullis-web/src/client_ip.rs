//! The address a request comes from. `X-Forwarded-For` and `Forwarded` are believed only when
//! the connection comes from a configured proxy; otherwise anyone could rotate them to escape
//! a per-address limit (RFC 9700 §4.13).

use std::net::IpAddr;

use actix_web::{HttpMessage as _, HttpRequest};

/// An address range: an address and the number of leading bits that must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// `192.0.2.10`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{raw:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{raw:?} has a prefix length outside 0 to {max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.addr), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A request's client address, once worked out.
#[derive(Clone, Copy)]
struct ClientIp(Option<IpAddr>);

/// The one forwarding header the proxies set. Only it is read: a proxy that appends to
/// `X-Forwarded-For` usually passes a client's own `Forwarded` through untouched, and the
/// client would choose its address if that were believed (and the other way round).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`.
    Forwarded,
}

impl ForwardedHeader {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!(
                "{other:?} is not a forwarding header; use \"x-forwarded-for\" or \"forwarded\""
            )),
        }
    }
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    pub ranges: Vec<IpRange>,
    pub header: ForwardedHeader,
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// The client's address, worked out once per request and kept in its extensions: the
    /// rate limiter, the sign-in throttle and the audit trail all ask.
    pub fn of(&self, req: &HttpRequest) -> Option<IpAddr> {
        if let Some(&ClientIp(ip)) = req.extensions().get::<ClientIp>() {
            return ip;
        }
        let ip = self.client_ip(req);
        req.extensions_mut().insert(ClientIp(ip));
        ip
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    /// address in the forwarding chain that is not one of our proxies.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = canonical(req.peer_addr()?.ip());
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut chain = forwarded_chain(req, self.header);
        // Walk back from the hop nearest to us; the first untrusted one is the client.
        while let Some(hop) = chain.pop() {
            if !self.trusts(hop) {
                return Some(hop);
            }
        }
        Some(peer)
    }
}

/// The addresses in the configured header, client first. An unparsable entry ends the chain
/// there: what is left of it cannot be trusted.
fn forwarded_chain(req: &HttpRequest, header: ForwardedHeader) -> Vec<IpAddr> {
    let headers = req.headers();
    let mut chain = Vec::new();
    if header == ForwardedHeader::Forwarded {
        let forwarded: Vec<&str> = headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .collect();
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let for_value = element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.eq_ignore_ascii_case("for")
                    .then_some(v.trim().trim_matches('"'))
            });
            match for_value.and_then(parse_node) {
                Some(ip) => chain.push(ip),
                None => chain.clear(),
            }
        }
        return chain;
    }
    for entry in headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        match parse_node(entry.trim()) {
            Some(ip) => chain.push(ip),
            None => chain.clear(),
        }
    }
    chain
}

/// `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok().map(canonical);
    }
    raw.rsplit_once(':')?.0.parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains(ip("10.1.2.3")));
        assert!(!r.contains(ip("11.0.0.1")));
        assert!(r.contains(ip("::ffff:10.9.9.9")), "mapped IPv4");
        assert!(IpRange::parse("::1").unwrap().contains(ip("::1")));
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("203.0.113.9"))
        );
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(IpRange::parse("proxy.local").is_err());
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let xff = TrustedProxies {
            ranges: vec![IpRange::parse("127.0.0.1").unwrap()],
            header: ForwardedHeader::XForwardedFor,
        };
        let rfc = TrustedProxies {
            header: ForwardedHeader::Forwarded,
            ..xff.clone()
        };
        let with = |trusted: &TrustedProxies, peer: &str, headers: &[(&str, &str)]| {
            let mut req = TestRequest::default().peer_addr(format!("{peer}:5000").parse().unwrap());
            for (k, v) in headers {
                req = req.insert_header((*k, *v));
            }
            trusted
                .client_ip(&req.to_http_request())
                .unwrap()
                .to_string()
        };
        let from = |peer: &str, headers: &[(&str, &str)]| with(&xff, peer, headers);
        // Only the configured header: a client's own `Forwarded` passed through a proxy that
        // sets X-Forwarded-For chooses nothing, and the other way round.
        assert_eq!(
            from(
                "127.0.0.1",
                &[
                    ("forwarded", "for=6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.7")
                ]
            ),
            "198.51.100.7"
        );
        assert_eq!(
            with(
                &rfc,
                "127.0.0.1",
                &[
                    ("forwarded", "for=198.51.100.8"),
                    ("x-forwarded-for", "6.6.6.6")
                ]
            ),
            "198.51.100.8"
        );
        let from_rfc = |peer: &str, headers: &[(&str, &str)]| with(&rfc, peer, headers);
        // An untrusted peer cannot choose its address.
        assert_eq!(
            from("203.0.113.5", &[("x-forwarded-for", "1.2.3.4")]),
            "203.0.113.5"
        );
        // Through our proxy: the nearest address it saw.
        assert_eq!(
            from("127.0.0.1", &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]),
            "198.51.100.7"
        );
        assert_eq!(
            from_rfc(
                "127.0.0.1",
                &[("forwarded", "for=\"[2001:db8::1]:443\";proto=https")]
            ),
            "2001:db8::1"
        );
        assert_eq!(
            from_rfc("127.0.0.1", &[("forwarded", "for=198.51.100.9:4711")]),
            "198.51.100.9"
        );
        // Nothing forwarded, or garbage: the proxy itself.
        assert_eq!(from("127.0.0.1", &[]), "127.0.0.1");
        assert_eq!(
            from("127.0.0.1", &[("x-forwarded-for", "not an ip")]),
            "127.0.0.1"
        );
    }
}
