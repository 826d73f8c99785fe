//! Traffic selector narrowing (RFC 7296 §2.9): the responder answers with the intersection of
//! what the initiator proposed and what its policy allows.

use std::net::IpAddr;

use super::TrafficSelector;

/// The intersection of two selectors, if they share any traffic. Selectors of different
/// families or unknown types never intersect.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    let (
        TrafficSelector::Range {
            ip_protocol: pa,
            start_port: sa,
            end_port: ea,
            start: a0,
            end: a1,
        },
        TrafficSelector::Range {
            ip_protocol: pb,
            start_port: sb,
            end_port: eb,
            start: b0,
            end: b1,
        },
    ) = (a, b)
    else {
        return None;
    };
    let ip_protocol = match (*pa, *pb) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = (*sa).max(*sb);
    let end_port = (*ea).min(*eb);
    if start_port > end_port {
        return None;
    }
    let start = max_ip(*a0, *b0)?;
    let end = min_ip(*a1, *b1)?;
    if !le(start, end)? {
        return None;
    }
    Some(TrafficSelector::Range {
        ip_protocol,
        start_port,
        end_port,
        start,
        end,
    })
}

fn le(a: IpAddr, b: IpAddr) -> Option<bool> {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => Some(x <= y),
        (IpAddr::V6(x), IpAddr::V6(y)) => Some(x <= y),
        _ => None,
    }
}

fn max_ip(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    Some(if le(a, b)? { b } else { a })
}

fn min_ip(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    Some(if le(a, b)? { a } else { b })
}

fn is_v6(ts: &TrafficSelector) -> bool {
    matches!(
        ts,
        TrafficSelector::Range {
            start: IpAddr::V6(_),
            ..
        }
    )
}

/// At most this many selectors per side in what we answer.
pub const MAX_TS: usize = 16;

/// Narrows the peer's selectors to `allowed`: every non-empty pairwise intersection, without
/// duplicates; IPv6 ones only when no IPv4 one remains (the dataplane is IPv4). Empty: the
/// caller answers TS_UNACCEPTABLE.
pub fn narrow(offered: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for o in offered {
        for a in allowed {
            if let Some(i) = intersect(o, a)
                && !out.contains(&i)
                && out.len() < MAX_TS
            {
                out.push(i);
            }
        }
    }
    if out.iter().any(|t| !is_v6(t)) {
        out.retain(|t| !is_v6(t));
    }
    out
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs)]
mod tests {
    use super::*;
    use crate::core::any_ipv4;

    fn r(p: u8, s: &str, e: &str, ps: u16, pe: u16) -> TrafficSelector {
        TrafficSelector::Range {
            ip_protocol: p,
            start_port: ps,
            end_port: pe,
            start: s.parse().unwrap(),
            end: e.parse().unwrap(),
        }
    }

    #[test]
    fn narrowing() {
        let any = any_ipv4();
        let net = r(0, "10.0.0.0", "10.0.0.255", 0, 65535);
        assert_eq!(narrow(&[any.clone()], &[any.clone()]), vec![any.clone()]);
        assert_eq!(narrow(&[any.clone()], &[net.clone()]), vec![net.clone()]);
        assert_eq!(
            narrow(&[r(6, "10.0.0.128", "10.1.0.0", 80, 80)], &[net.clone()]),
            vec![r(6, "10.0.0.128", "10.0.0.255", 80, 80)]
        );
        assert!(narrow(&[r(0, "10.0.1.0", "10.0.1.255", 0, 65535)], &[net.clone()]).is_empty());
        assert!(
            intersect(
                &r(6, "0.0.0.0", "1.0.0.0", 0, 9),
                &r(17, "0.0.0.0", "1.0.0.0", 0, 9)
            )
            .is_none()
        );
        assert!(
            intersect(
                &r(0, "0.0.0.0", "1.0.0.0", 0, 9),
                &r(0, "0.0.0.0", "1.0.0.0", 10, 19)
            )
            .is_none()
        );
        let v6 = r(0, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, 65535);
        // IPv6 dropped when IPv4 remains, kept when alone.
        assert_eq!(
            narrow(&[v6.clone(), any.clone()], &[any.clone(), v6.clone()]),
            vec![any.clone()]
        );
        assert_eq!(narrow(&[v6.clone()], &[v6.clone()]), vec![v6.clone()]);
        assert!(narrow(&[v6.clone()], &[any.clone()]).is_empty());
    }
}
