//! The Traffic Selector payload body (RFC 7296 §3.13): TSi and TSr share it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::emit::Emitter;
use super::{Error, Reader, Result, TrafficSelector, TsType};

/// TS Type, IP Protocol ID (or whatever an unknown type keeps there), Selector Length.
const SELECTOR_HEADER: usize = 4;
/// Header, two ports, two IPv4 addresses.
const V4_LEN: usize = 16;
/// Header, two ports, two IPv6 addresses.
const V6_LEN: usize = 40;

/// Parses a TS payload body: Number of TSs, three reserved bytes, then exactly that many
/// selectors (`Malformed` if the count disagrees).
pub(crate) fn parse(body: &[u8]) -> Result<Vec<TrafficSelector>> {
    let mut r = Reader::new(body);
    let declared = usize::from(r.u8()?);
    let _reserved = r.take(3)?;
    let mut selectors = Vec::new();
    while !r.is_empty() {
        if selectors.len() >= declared {
            return Err(Error::Malformed);
        }
        let ts_type = TsType(r.u8()?);
        let second = r.u8()?;
        let len = usize::from(r.u16()?);
        let rest_len = len.checked_sub(SELECTOR_HEADER).ok_or(Error::BadLength)?;
        let rest = r.take(rest_len).map_err(|_| Error::BadLength)?;
        let addr_len = match ts_type {
            TsType::TS_IPV4_ADDR_RANGE if len == V4_LEN => 4,
            TsType::TS_IPV6_ADDR_RANGE if len == V6_LEN => 16,
            TsType::TS_IPV4_ADDR_RANGE | TsType::TS_IPV6_ADDR_RANGE => {
                return Err(Error::BadLength);
            }
            _ => {
                let mut body = Vec::with_capacity(rest.len().saturating_add(1));
                body.push(second);
                body.extend_from_slice(rest);
                selectors.push(TrafficSelector::Unknown { ts_type, body });
                continue;
            }
        };
        let mut s = Reader::new(rest);
        let start_port = s.u16()?;
        let end_port = s.u16()?;
        let start = addr(s.take(addr_len)?)?;
        let end = addr(s.take(addr_len)?)?;
        s.finish()?;
        selectors.push(TrafficSelector::Range {
            ip_protocol: second,
            start_port,
            end_port,
            start,
            end,
        });
    }
    if selectors.len() != declared {
        return Err(Error::Malformed);
    }
    Ok(selectors)
}

fn addr(b: &[u8]) -> Result<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(Error::BadLength)
    }
}

/// Appends a TS payload body. A range whose two addresses are of different families cannot
/// be expressed and clears `ok`. An `Unknown` selector is written as its TS Type, the first
/// byte of `body` in the second octet (0 if `body` is empty), the Selector Length, and the rest
/// of `body`: byte for byte what `parse` read.
pub(crate) fn emit(selectors: &[TrafficSelector], e: &mut Emitter<'_>) {
    e.size_u8(selectors.len());
    e.bytes(&[0, 0, 0]);
    for ts in selectors {
        let start = e.out.len();
        match ts {
            TrafficSelector::Range {
                ip_protocol,
                start_port,
                end_port,
                start: first,
                end: last,
            } => {
                let ts_type = match (first, last) {
                    (IpAddr::V4(_), IpAddr::V4(_)) => TsType::TS_IPV4_ADDR_RANGE,
                    (IpAddr::V6(_), IpAddr::V6(_)) => TsType::TS_IPV6_ADDR_RANGE,
                    _ => {
                        e.ok = false;
                        TsType::TS_IPV4_ADDR_RANGE
                    }
                };
                e.u8(ts_type.0);
                e.u8(*ip_protocol);
                let len = e.begin_len16();
                e.u16(*start_port);
                e.u16(*end_port);
                for a in [first, last] {
                    match a {
                        IpAddr::V4(a) => e.bytes(&a.octets()),
                        IpAddr::V6(a) => e.bytes(&a.octets()),
                    }
                }
                e.end_len16(len, start);
            }
            TrafficSelector::Unknown { ts_type, body } => {
                let (second, rest) = body.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
                e.u8(ts_type.0);
                e.u8(second);
                let len = e.begin_len16();
                e.bytes(rest);
                e.end_len16(len, start);
            }
        }
    }
}
