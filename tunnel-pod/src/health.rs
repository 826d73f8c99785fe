//! Tunnel health checks in the manner of Magic WAN, sans-IO: the prober decides when to send a
//! probe and what state the tunnel is in; the dataplane sends and receives the packets.
//!
//! - Reply style (default): we send an ICMP echo *reply* from the target to our own tunnel
//!   address. The customer's router decapsulates it and routes it back through the tunnel, so the
//!   check works with routers that do not answer pings.
//! - Request style: an echo *request* from our tunnel address to the target; its reply returns.
//!
//! States follow Magic WAN's published thresholds: **down** when all of the most recent
//! max(3, probes per second) probes failed; **degraded** when the loss window (5 minutes) holds
//! at least 2 failures and at least 0.1 % loss; **healthy** otherwise.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::config::HealthCheckType;
use crate::wire::{icmp, ipv4};

/// A probe not answered within this time has failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Magic WAN's loss window for the degraded state.
pub const LOSS_WINDOW: Duration = Duration::from_secs(300);
const MAGIC: &[u8; 4] = b"MTHC";
/// Length of the probe's inner IPv4 packet: IP + ICMP header + magic + nonce.
pub const PROBE_LEN: usize = ipv4::HEADER_LEN + icmp::HEADER_LEN + 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No probe has been answered or has timed out yet.
    Unknown,
    Healthy,
    Degraded,
    Down,
}

impl State {
    pub const ALL: [State; 4] = [State::Unknown, State::Healthy, State::Degraded, State::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Healthy => "healthy",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }

    /// Magic WAN keeps routing over a degraded tunnel; only down takes it out.
    pub fn is_up(self) -> bool {
        matches!(self, State::Healthy | State::Degraded)
    }
}

/// What the probe packets look like for this tunnel.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    pub style: HealthCheckType,
    /// Our tunnel interface address.
    pub local: Ipv4Addr,
    /// The address probed (reply style: the source the reply appears to come from).
    pub target: Ipv4Addr,
    pub identifier: u16,
    /// Random per process, so that our probes are told apart from anyone else's echo traffic.
    pub nonce: [u8; 8],
    pub ttl: u8,
}

impl ProbeSpec {
    /// Writes probe number `seq` as an inner IPv4 packet into `buf[..PROBE_LEN]`.
    pub fn emit(&self, seq: u16, buf: &mut [u8]) -> Option<usize> {
        let (src, dst, msg_type) = match self.style {
            HealthCheckType::Reply => (self.target, self.local, icmp::ECHO_REPLY),
            HealthCheckType::Request => (self.local, self.target, icmp::ECHO_REQUEST),
        };
        let mut data = [0u8; 12];
        data[..4].copy_from_slice(MAGIC);
        data[4..].copy_from_slice(&self.nonce);
        let echo = icmp::EchoRepr {
            msg_type,
            identifier: self.identifier,
            sequence: seq,
            data: &data,
        };
        let ip = ipv4::Repr {
            src,
            dst,
            protocol: ipv4::PROTO_ICMP,
            ttl: self.ttl,
            payload_len: echo.buffer_len(),
        };
        let b = buf.get_mut(..ip.buffer_len())?;
        ip.emit(b).ok()?;
        echo.emit(b.get_mut(ipv4::HEADER_LEN..)?).ok()?;
        Some(ip.buffer_len())
    }

    /// The sequence number when `packet` is the return of one of our probes.
    ///
    /// Parsed with our `wire/` views, not etherparse: this runs for every ICMP packet the tunnel
    /// receives, and the same checks written with etherparse's slices took 2–4× as long
    /// (criterion `benches/probe_parse.rs`: 14 vs 28 ns for our probe, 9 vs 33 ns for someone's
    /// ping; BENCHMARKS.md, issue #12). etherparse checks these packets in the tests instead
    /// (`tests/etherparse_agree.rs`).
    pub fn match_return(&self, packet: &[u8]) -> Option<u16> {
        let ip = ipv4::Packet::new_checked(packet).ok()?;
        if ip.protocol() != ipv4::PROTO_ICMP || ip.dst_addr() != self.local {
            return None;
        }
        let echo = icmp::Echo::new_checked(ip.payload()).ok()?;
        let data = echo.data();
        let ours = echo.msg_type() == icmp::ECHO_REPLY
            && echo.identifier() == self.identifier
            && data.get(..4) == Some(&MAGIC[..])
            && data.get(4..12) == Some(&self.nonce[..])
            && echo.verify_checksum();
        ours.then(|| echo.sequence())
    }
}

/// True for an ICMP echo addressed to the peer's own tunnel address: the peer's reply-style
/// probe, which a router sends straight back through the tunnel. `wire/`, not etherparse, for
/// the reason given at [`ProbeSpec::match_return`] (here 3 vs 16 ns).
pub fn is_peer_probe(packet: &[u8], peer: Ipv4Addr) -> bool {
    let Ok(ip) = ipv4::Packet::new_checked(packet) else {
        return false;
    };
    ip.protocol() == ipv4::PROTO_ICMP
        && ip.dst_addr() == peer
        && icmp::Echo::new_checked(ip.payload()).is_ok()
}

/// What the prober wants from the I/O shell at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// Send the probe with this sequence number now.
    pub send: Option<u16>,
    /// Probes that timed out during this poll.
    pub lost: u32,
    /// Call `poll` again no later than this.
    pub next: Instant,
}

/// The probe schedule and the record of outcomes.
#[derive(Debug)]
pub struct Prober {
    interval: Duration,
    window: Duration,
    down_after: usize,
    next_send: Instant,
    next_seq: u16,
    pending: VecDeque<(u16, Instant)>,
    /// Outcomes (time resolved, success) inside the loss window, oldest first.
    results: VecDeque<(Instant, bool)>,
    failures: usize,
}

impl Prober {
    pub fn new(per_second: u32, window: Duration, now: Instant) -> Self {
        let per_second = per_second.max(1);
        Prober {
            interval: Duration::from_secs(1) / per_second,
            window,
            down_after: (per_second as usize).max(3),
            next_send: now,
            next_seq: 0,
            pending: VecDeque::new(),
            results: VecDeque::new(),
            failures: 0,
        }
    }

    pub fn poll(&mut self, now: Instant) -> Poll {
        let mut lost = 0;
        while let Some(&(_, sent)) = self.pending.front() {
            if now.duration_since(sent) < PROBE_TIMEOUT {
                break;
            }
            self.pending.pop_front();
            self.record(now, false);
            lost += 1;
        }
        self.forget_before(now);
        let send = if now >= self.next_send {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            self.pending.push_back((seq, now));
            // Keep the schedule, but after a late poll start afresh rather than burst to catch up.
            self.next_send += self.interval;
            if self.next_send <= now {
                self.next_send = now + self.interval;
            }
            Some(seq)
        } else {
            None
        };
        let timeout = self.pending.front().map(|&(_, t)| t + PROBE_TIMEOUT);
        let next = timeout.map_or(self.next_send, |t| t.min(self.next_send));
        Poll { send, lost, next }
    }

    /// Records the return of probe `seq`; its round-trip time when it was still pending.
    pub fn on_return(&mut self, seq: u16, now: Instant) -> Option<Duration> {
        let i = self.pending.iter().position(|&(s, _)| s == seq)?;
        let (_, sent) = self.pending.remove(i)?;
        self.record(now, true);
        Some(now.duration_since(sent))
    }

    fn record(&mut self, now: Instant, ok: bool) {
        self.results.push_back((now, ok));
        if !ok {
            self.failures += 1;
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&(t, ok)) = self.results.front() {
            if now.duration_since(t) <= self.window && self.results.len() <= 36_000 {
                break;
            }
            self.results.pop_front();
            if !ok {
                self.failures -= 1;
            }
        }
    }

    pub fn state(&self) -> State {
        let total = self.results.len();
        if total == 0 {
            return State::Unknown;
        }
        let recent_all_failed = self
            .results
            .iter()
            .rev()
            .take(self.down_after)
            .all(|&(_, ok)| !ok);
        if recent_all_failed {
            // Too few probes yet to call it down.
            return if total >= self.down_after {
                State::Down
            } else {
                State::Unknown
            };
        }
        // Magic WAN: degraded at ≥ 0.1 % loss with at least two failures in the window.
        if self.failures >= 2 && self.failures * 1000 >= total {
            return State::Degraded;
        }
        State::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(style: HealthCheckType) -> ProbeSpec {
        ProbeSpec {
            style,
            local: Ipv4Addr::new(10, 0, 0, 0),
            target: Ipv4Addr::new(10, 0, 0, 1),
            identifier: 0xbeef,
            nonce: *b"12345678",
            ttl: 64,
        }
    }

    #[test]
    fn reply_style_probe_comes_back_as_is() {
        let s = spec(HealthCheckType::Reply);
        let mut buf = [0u8; PROBE_LEN];
        assert_eq!(s.emit(7, &mut buf), Some(PROBE_LEN));
        // The customer's router only routes it: the same packet returns.
        assert_eq!(s.match_return(&buf), Some(7));
        // To the peer it is a probe to reflect.
        assert!(is_peer_probe(&buf, s.local));
        assert!(!is_peer_probe(&buf, s.target));
    }

    #[test]
    fn request_style_matches_only_the_reply() {
        let s = spec(HealthCheckType::Request);
        let mut buf = [0u8; PROBE_LEN];
        s.emit(3, &mut buf).unwrap();
        assert_eq!(
            s.match_return(&buf),
            None,
            "our own request is not a return"
        );
        // What a router answering the ping sends back.
        let mut reply = buf;
        reply[12..16].copy_from_slice(&[10, 0, 0, 1]);
        reply[16..20].copy_from_slice(&[10, 0, 0, 0]);
        reply[20] = icmp::ECHO_REPLY;
        reply[22..24].fill(0);
        let c = crate::wire::checksum::checksum(&reply[20..]);
        reply[22..24].copy_from_slice(&c.to_be_bytes());
        assert_eq!(s.match_return(&reply), Some(3));
        let mut other_nonce = reply;
        other_nonce[35] ^= 1;
        assert_eq!(s.match_return(&other_nonce), None);
    }

    /// Drives a prober at `rate` for `secs`, answering probes when `up(t)` says so.
    fn run(p: &mut Prober, start: Instant, from_ms: u64, to_ms: u64, up: bool) -> Vec<State> {
        let mut states = Vec::new();
        for ms in (from_ms..to_ms).step_by(10) {
            let now = start + Duration::from_millis(ms);
            let poll = p.poll(now);
            if let (Some(seq), true) = (poll.send, up) {
                p.on_return(seq, now + Duration::from_millis(5)).unwrap();
            }
            if states.last() != Some(&p.state()) {
                states.push(p.state());
            }
        }
        states
    }

    #[test]
    fn healthy_down_degraded_healthy() {
        let t0 = Instant::now();
        let mut p = Prober::new(10, Duration::from_secs(10), t0);
        assert_eq!(p.state(), State::Unknown);
        assert_eq!(run(&mut p, t0, 0, 2_000, true), vec![State::Healthy]);
        let outage = run(&mut p, t0, 2_000, 5_000, false);
        assert_eq!(outage.last(), Some(&State::Down));
        // Down needs max(3, rate) = 10 consecutive failures: one second of probes plus timeout.
        let back = run(&mut p, t0, 5_000, 20_000, true);
        assert_eq!(
            back,
            vec![State::Degraded, State::Healthy],
            "window of 10 s forgets the outage"
        );
    }

    #[test]
    fn one_loss_is_not_degraded_two_are() {
        let t0 = Instant::now();
        let mut p = Prober::new(1, LOSS_WINDOW, t0);
        let mut now = t0;
        for i in 0..100 {
            let poll = p.poll(now);
            if let Some(seq) = poll.send
                && i != 50
                && i != 60
            {
                p.on_return(seq, now).unwrap();
            }
            now += Duration::from_secs(1);
            if i == 55 {
                p.poll(now);
                assert_eq!(p.state(), State::Healthy, "a single failure");
            }
        }
        p.poll(now);
        assert_eq!(p.state(), State::Degraded);
    }

    #[test]
    fn late_and_unknown_returns_are_ignored() {
        let t0 = Instant::now();
        let mut p = Prober::new(5, LOSS_WINDOW, t0);
        let seq = p.poll(t0).send.unwrap();
        assert_eq!(p.on_return(seq.wrapping_add(9), t0), None);
        let later = t0 + Duration::from_secs(2);
        let poll = p.poll(later);
        assert_eq!(poll.lost, 1);
        assert_eq!(p.on_return(seq, later), None, "already counted as lost");
    }

    #[test]
    fn results_are_bounded() {
        let t0 = Instant::now();
        let mut p = Prober::new(10, Duration::from_secs(86_400), t0);
        for ms in (0..3_700_000u64).step_by(100) {
            let now = t0 + Duration::from_millis(ms);
            if let Some(seq) = p.poll(now).send {
                p.on_return(seq, now);
            }
        }
        assert!(p.results.len() <= 36_001);
    }
}
