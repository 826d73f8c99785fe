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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two selectors as RFC 7296 §3.13.1 lays them out: TCP 192.0.2.0–192.0.2.255 port 443,
    /// and any protocol over 2001:db8::/32's first and last address, all ports.
    #[rustfmt::skip]
    const TS: &[u8] = &[
        0x02, 0x00, 0x00, 0x00,
        // type 7, TCP, length 16, ports 443-443, 192.0.2.0 - 192.0.2.255
        0x07, 0x06, 0x00, 0x10, 0x01, 0xbb, 0x01, 0xbb,
        0xc0, 0x00, 0x02, 0x00, 0xc0, 0x00, 0x02, 0xff,
        // type 8, any, length 40, ports 0-65535, 2001:db8:: - 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff
        0x08, 0x00, 0x00, 0x28, 0x00, 0x00, 0xff, 0xff,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];

    fn expected() -> Vec<TrafficSelector> {
        vec![
            TrafficSelector::Range {
                ip_protocol: 6,
                start_port: 443,
                end_port: 443,
                start: "192.0.2.0".parse().unwrap(),
                end: "192.0.2.255".parse().unwrap(),
            },
            TrafficSelector::Range {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start: "2001:db8::".parse().unwrap(),
                end: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            },
        ]
    }

    fn emit_vec(ts: &[TrafficSelector]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut e = Emitter::new(&mut out);
        emit(ts, &mut e);
        let ok = e.ok;
        (out, ok)
    }

    #[test]
    fn deconstruct_v4_and_v6() {
        assert_eq!(parse(TS).unwrap(), expected());
        assert_eq!(parse(&TS[..20]).map(|_| ()), Err(Error::Malformed)); // count says 2
        let mut one = TS[..20].to_vec();
        one[0] = 1;
        assert_eq!(parse(&one).unwrap(), expected()[..1]);
    }

    #[test]
    fn construct_v4_and_v6() {
        assert_eq!(emit_vec(&expected()), (TS.to_vec(), true));
    }

    #[test]
    fn selector_lengths() {
        for (at, good) in [(6usize, 16u16), (22, 40)] {
            for len in [0u16, 3, 4, good - 1, good + 1, 0xffff] {
                let mut b = TS.to_vec();
                b[at..at + 2].copy_from_slice(&len.to_be_bytes());
                assert_eq!(parse(&b), Err(Error::BadLength), "{at} {len}");
            }
        }
        // A v4 length on a v6 selector and the reverse.
        let mut b = TS.to_vec();
        b[7] = 40;
        assert_eq!(parse(&b), Err(Error::BadLength));
        let mut b = TS.to_vec();
        b[23] = 16;
        assert_eq!(parse(&b), Err(Error::BadLength));
        // Cut anywhere inside.
        for n in 1..TS.len() {
            assert!(parse(&TS[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn count_must_match() {
        for n in [0u8, 1, 3, 255] {
            let mut b = TS.to_vec();
            b[0] = n;
            assert_eq!(parse(&b), Err(Error::Malformed), "{n}");
        }
        // No selectors, none announced.
        assert_eq!(parse(&[0, 0, 0, 0]).unwrap(), vec![]);
    }

    #[test]
    fn unknown_type_round_trips() {
        // RFC 9478 TS_SECLABEL (10): type, reserved, length, a label.
        #[rustfmt::skip]
        let b: &[u8] = &[
            0x02, 0x00, 0x00, 0x00,
            0x0a, 0x00, 0x00, 0x09, b'l', b'a', b'b', b'e', b'l',
            0x07, 0x00, 0x00, 0x10, 0x00, 0x00, 0xff, 0xff, 10, 0, 0, 0, 10, 0, 0, 255,
        ];
        let ts = parse(b).unwrap();
        assert_eq!(
            ts[0],
            TrafficSelector::Unknown {
                ts_type: TsType(10),
                body: b"\0label".to_vec()
            }
        );
        assert_eq!(emit_vec(&ts), (b.to_vec(), true));
        // An unknown type with only its header.
        let b: &[u8] = &[1, 0, 0, 0, 0xee, 0x05, 0x00, 0x04];
        let ts = parse(b).unwrap();
        assert_eq!(
            ts,
            vec![TrafficSelector::Unknown {
                ts_type: TsType(0xee),
                body: vec![5]
            }]
        );
        assert_eq!(emit_vec(&ts), (b.to_vec(), true));
    }

    #[test]
    fn mixed_families_cannot_be_written() {
        let ts = TrafficSelector::Range {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: "192.0.2.1".parse().unwrap(),
            end: "2001:db8::1".parse().unwrap(),
        };
        assert!(!emit_vec(&[ts]).1);
        assert!(!emit_vec(&vec![expected()[0].clone(); 256]).1);
    }
}
