//! Initiator mode (`ipsec.initiate: true`): when to dial the router, as a sans-IO policy.
//!
//! The IKE core can initiate ([`ike::core::Endpoint::initiate`]) and retransmits its own
//! requests (IKE_SA_INIT five times over 15.5 s, then [`ike::core::Event::PeerDead`]); what it
//! does not decide is *when* to start an IKE SA. The [`Dialer`] does, from the core's view of
//! its SAs ([`View`]) and the clock, both passed in:
//!
//! - the first dial right at start; IKE_SA_INIT goes to `customerEndpoint:500` and the core
//!   moves to 4500 after it (it forces NAT-T, RFC 7296 §2.23);
//! - never a second dial while one is in flight, while an IKE SA is established (whoever
//!   initiated it), or while the router's own IKE_SA_INIT is half-way (it is dialing us);
//! - a dial that fails waits before the next: exponential back-off with jitter, 1 s doubling to
//!   30 s when the router did not answer, 10 s doubling to 5 min when it refused us
//!   (AUTHENTICATION_FAILED, NO_PROPOSAL_CHOSEN: a configuration error that retrying fast
//!   cannot mend); a success resets both;
//! - a lost IKE SA (DPD failure, a Delete from the router, expiry) is dialed again after
//!   about 1 s.
//!
//! States are types: [`State`] holds only what each state needs, transitions consume it.
//!
//! Collisions: when the router initiates too, two IKE SAs can come up at about the same time.
//! Our core sends INITIAL_CONTACT in every IKE_AUTH it initiates, and a peer that honours it
//! (strongSwan does, so does our core as responder) silently drops its older IKE SAs with us
//! when it gets one (RFC 7296 §2.4). So:
//! - the router's IKE SA comes up while our IKE_SA_INIT is still unanswered: the shell
//!   abandons that dial (no IKE_AUTH, so no INITIAL_CONTACT that would make the router drop
//!   the SA it just made);
//! - both IKE_AUTH crossed (each end had sent its own before the other's arrived):
//!   INITIAL_CONTACT came too early to drop anything on either end, both SAs exist on both.
//!   [`Lineages`] follows the IKE SAs born from IKE_AUTH through their rekeys; when a second one
//!   is established, the one whose highest SPI is the lower of the two is deleted — both ends
//!   know all four SPIs, so two tunnel-pods in initiator mode delete the same one (RFC 7296
//!   §2.8.1's lowest-nonce rule, with SPIs).

use std::time::{Duration, Instant};

/// Back-off after a dial the router did not answer: doubled per failure, at most `MAX`.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Back-off after a dial the router refused (authentication, proposals).
pub const REFUSED_FIRST: Duration = Duration::from_secs(10);
pub const REFUSED_MAX: Duration = Duration::from_secs(300);
/// After a lost IKE SA: dial again this soon (less up to a quarter, as jitter).
pub const REDIAL: Duration = Duration::from_secs(1);
/// A dial that is due while the router's own IKE_SA_INIT is half-way waits this long.
pub const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// How one dial ended; a bounded set, the `result` label of `magictunnel_ike_dials_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Established,
    /// No answer to IKE_SA_INIT or IKE_AUTH (the core gave up retransmitting).
    Timeout,
    AuthFailed,
    NoProposal,
    /// Any other error notification, or a response the core dropped.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Established,
        Outcome::Timeout,
        Outcome::AuthFailed,
        Outcome::NoProposal,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Timeout => "timeout",
            Outcome::AuthFailed => "auth_failed",
            Outcome::NoProposal => "no_proposal",
            Outcome::Error => "error",
        }
    }

    /// The router answered and said no: a configuration mismatch.
    pub fn refused(self) -> bool {
        matches!(self, Outcome::AuthFailed | Outcome::NoProposal)
    }
}

/// What the core holds, as far as dialing cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// An IKE SA is established (either role).
    pub established: bool,
    /// One of our IKE_SA_INIT / IKE_AUTH exchanges is in flight.
    pub dialing: bool,
    /// The router's IKE_SA_INIT was answered and its IKE_AUTH is awaited.
    pub peer_dialing: bool,
}

impl View {
    /// From the core's `status()`.
    pub fn of(sas: &[ike::core::IkeSaStatus]) -> View {
        View {
            established: sas.iter().any(|s| s.state == "established"),
            dialing: sas
                .iter()
                .any(|s| s.initiator && matches!(s.state, "init_sent" | "auth_sent")),
            peer_dialing: sas.iter().any(|s| s.state == "await_auth"),
        }
    }
}

/// Waiting to dial at `at`; `after` is the failure that set the wait (none: first dial, or
/// after a lost SA).
#[derive(Debug)]
pub struct Waiting {
    at: Instant,
    after: Option<Outcome>,
}

/// An IKE_SA_INIT of ours is in flight since `since`.
#[derive(Debug)]
pub struct Dialing {
    since: Instant,
}

/// An IKE SA is established since `since`.
#[derive(Debug)]
pub struct Up {
    since: Instant,
}

#[derive(Debug)]
pub enum State {
    Waiting(Waiting),
    Dialing(Dialing),
    Up(Up),
}

/// The dial policy of one tunnel. See the module docs.
#[derive(Debug)]
pub struct Dialer {
    /// `None` only while a transition is in progress.
    state: Option<State>,
    /// Failed dials since the last success (sets the back-off).
    failures: u32,
    /// Dials started in all.
    dials: u64,
    last: Option<Outcome>,
}

impl Dialer {
    /// Dials at once.
    pub fn new(now: Instant) -> Dialer {
        Dialer {
            state: Some(State::Waiting(Waiting {
                at: now,
                after: None,
            })),
            failures: 0,
            dials: 0,
            last: None,
        }
    }

    fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    /// When [`Dialer::poll`] may next start a dial.
    pub fn due(&self) -> Option<Instant> {
        match self.state() {
            Some(State::Waiting(w)) => Some(w.at),
            _ => None,
        }
    }

    /// `true`: initiate now (the dialer is then `Dialing`).
    pub fn poll(&mut self, now: Instant, view: View) -> bool {
        let Some(state) = self.state.take() else {
            return false;
        };
        let (next, dial) = match state {
            State::Waiting(_) if view.established => (State::Up(Up { since: now }), false),
            State::Waiting(w) if now < w.at => (State::Waiting(w), false),
            // The router is dialing us, or a dial is already out: not now, look again later.
            State::Waiting(w) if view.dialing || view.peer_dialing => (
                State::Waiting(Waiting {
                    at: later(now, LOOK_AGAIN),
                    after: w.after,
                }),
                false,
            ),
            State::Waiting(_) => (State::Dialing(Dialing { since: now }), true),
            other => (other, false),
        };
        self.state = Some(next);
        if dial {
            self.dials = self.dials.saturating_add(1);
        }
        dial
    }

    /// After the core has run: follows what became of the dial or the SA. `hint` says why a
    /// dial failed when the core told (an event in this step); `jitter` is a random number.
    /// Returns how a dial ended, once per dial.
    pub fn update(
        &mut self,
        now: Instant,
        view: View,
        hint: Option<Outcome>,
        jitter: u64,
    ) -> Option<Outcome> {
        let state = self.state.take()?;
        let (next, ended) = match state {
            State::Dialing(_) if view.established => {
                self.failures = 0;
                (State::Up(Up { since: now }), Some(Outcome::Established))
            }
            State::Dialing(_) if !view.dialing => {
                let outcome = hint
                    .filter(|h| *h != Outcome::Established)
                    .unwrap_or(Outcome::Timeout);
                self.failures = self.failures.saturating_add(1);
                let wait = backoff(outcome, self.failures, jitter);
                (
                    State::Waiting(Waiting {
                        at: later(now, wait),
                        after: Some(outcome),
                    }),
                    Some(outcome),
                )
            }
            State::Up(_) if !view.established && !view.dialing => {
                // Lost (DPD, the router's Delete, expiry): dial again soon.
                self.failures = 0;
                (
                    State::Waiting(Waiting {
                        at: later(now, jittered(REDIAL, jitter)),
                        after: None,
                    }),
                    None,
                )
            }
            State::Waiting(_) if view.established => {
                // The router dialed us.
                self.failures = 0;
                (State::Up(Up { since: now }), None)
            }
            other => (other, None),
        };
        self.state = Some(next);
        if ended.is_some() {
            self.last = ended;
        }
        ended
    }

    /// Failed dials since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// For `/status`: `{"state": "backoff", "nextInSeconds": 4, "attempts": 3, …}`.
    pub fn status(&self, now: Instant) -> serde_json::Value {
        let mut v = serde_json::json!({
            "attempts": self.failures,
            "dials": self.dials,
            "lastResult": self.last.map(Outcome::as_str),
        });
        let (state, extra) = match self.state() {
            Some(State::Waiting(w)) => (
                if w.after.is_some() {
                    "backoff"
                } else {
                    "waiting"
                },
                Some((
                    "nextInSeconds",
                    w.at.saturating_duration_since(now).as_secs_f64().ceil() as u64,
                )),
            ),
            Some(State::Dialing(d)) => (
                "dialing",
                Some((
                    "sinceSeconds",
                    now.saturating_duration_since(d.since).as_secs(),
                )),
            ),
            Some(State::Up(u)) => (
                "established",
                Some((
                    "sinceSeconds",
                    now.saturating_duration_since(u.since).as_secs(),
                )),
            ),
            None => ("unknown", None),
        };
        if let Some(m) = v.as_object_mut() {
            m.insert("state".into(), state.into());
            if let Some((k, x)) = extra {
                m.insert(k.into(), x.into());
            }
        }
        v
    }
}

/// The wait after the `failures`-th failed dial in a row ending with `outcome`: the first step
/// doubled per failure, capped, less up to a quarter at random (so that many tunnels that lost
/// their router together do not dial in lockstep).
pub fn backoff(outcome: Outcome, failures: u32, jitter: u64) -> Duration {
    let (first, max) = if outcome.refused() {
        (REFUSED_FIRST, REFUSED_MAX)
    } else {
        (RETRY_FIRST, RETRY_MAX)
    };
    let doublings = failures.saturating_sub(1).min(16);
    let step = first.saturating_mul(1u32 << doublings).min(max);
    jittered(step, jitter)
}

/// `d` less up to a quarter of it.
fn jittered(d: Duration, jitter: u64) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let span = (ms / 4).saturating_add(1);
    Duration::from_millis(ms.saturating_sub(jitter.checked_rem(span).unwrap_or(0)))
}

fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// The IKE SAs that came from IKE_SA_INIT + IKE_AUTH (either role), each followed through its
/// rekeys by its current SPIs. Two alive at once are duplicates (a dial collision).
#[derive(Debug, Default)]
pub struct Lineages {
    live: Vec<(u64, u64)>,
}

impl Lineages {
    /// An IKE SA established by IKE_AUTH. Returns the SPIs of the SA to delete when this makes
    /// two: the one whose highest SPI is lower (the same choice on both ends).
    pub fn established(&mut self, spis: (u64, u64)) -> Option<(u64, u64)> {
        if self.live.contains(&spis) {
            return None;
        }
        self.live.push(spis);
        if self.live.len() < 2 {
            return None;
        }
        let loser = self
            .live
            .iter()
            .copied()
            .min_by_key(|(i, r)| (*i).max(*r))?;
        self.live.retain(|s| *s != loser);
        Some(loser)
    }

    /// An IKE SA was rekeyed: the lineage goes on under the new SPIs.
    pub fn rekeyed(&mut self, old: (u64, u64), new: (u64, u64)) {
        for s in &mut self.live {
            if *s == old {
                *s = new;
            }
        }
    }

    /// Keeps only the lineages whose SA still exists.
    pub fn retain(&mut self, exists: impl Fn((u64, u64)) -> bool) {
        self.live.retain(|s| exists(*s));
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: View = View {
        established: false,
        dialing: false,
        peer_dialing: false,
    };
    const DIALING: View = View {
        dialing: true,
        ..IDLE
    };
    const UP: View = View {
        established: true,
        ..IDLE
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Dials when due, then fails the dial with `outcome` right away; returns the wait set.
    fn fail_once(d: &mut Dialer, now: Instant, outcome: Outcome, jitter: u64) -> Duration {
        assert!(d.poll(now, IDLE), "due at {now:?}");
        assert_eq!(
            d.update(now, DIALING, None, jitter),
            None,
            "still in flight"
        );
        assert_eq!(d.update(now, IDLE, Some(outcome), jitter), Some(outcome));
        d.due().expect("waiting").saturating_duration_since(now)
    }

    #[test]
    fn dials_at_once_and_never_twice_while_in_flight_or_up() {
        let t0 = Instant::now();
        let mut d = Dialer::new(t0);
        assert_eq!(d.due(), Some(t0));
        assert!(d.poll(t0, IDLE));
        // In flight: no second dial, whatever the clock says.
        assert!(!d.poll(t0 + secs(5), DIALING));
        assert_eq!(d.due(), None);
        assert_eq!(d.update(t0 + secs(1), DIALING, None, 0), None);
        assert_eq!(
            d.update(t0 + secs(1), UP, None, 0),
            Some(Outcome::Established)
        );
        assert_eq!(d.status(t0 + secs(3))["state"], "established");
        for t in 2..100 {
            assert!(!d.poll(t0 + secs(t), UP));
            assert_eq!(d.update(t0 + secs(t), UP, None, 0), None);
        }
        assert_eq!(d.status(t0)["dials"], 1);
    }

    #[test]
    fn timeouts_back_off_exponentially_to_the_cap_with_jitter() {
        let t0 = Instant::now();
        let mut d = Dialer::new(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let w = fail_once(&mut d, now, Outcome::Timeout, 0);
            waits.push(w.as_secs());
            // Not a moment before it is due.
            assert!(!d.poll(now + w - Duration::from_millis(1), IDLE));
            now += w;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(d.failures(), 8);
        let s = d.status(now - secs(10));
        assert_eq!(
            (s["state"].as_str(), s["attempts"].as_u64()),
            (Some("backoff"), Some(8))
        );
        assert_eq!(s["nextInSeconds"], 10);
        assert_eq!(s["lastResult"], "timeout");
        // Jitter takes off at most a quarter, never adds.
        for j in [1u64, 777, 7_499, 7_500, u64::MAX] {
            let w = backoff(Outcome::Timeout, 4, j);
            assert!(w <= secs(8) && w >= secs(6), "{w:?}");
        }
        assert_ne!(
            backoff(Outcome::Timeout, 4, 1234),
            backoff(Outcome::Timeout, 4, 4321)
        );
    }

    #[test]
    fn refusals_back_off_slower_and_success_resets() {
        let t0 = Instant::now();
        let mut d = Dialer::new(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for outcome in [
            Outcome::AuthFailed,
            Outcome::AuthFailed,
            Outcome::NoProposal,
            Outcome::AuthFailed,
            Outcome::AuthFailed,
            Outcome::AuthFailed,
        ] {
            let w = fail_once(&mut d, now, outcome, 0);
            waits.push(w.as_secs());
            now += w;
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300]);
        // In one hour a router refusing us sees at most this many dials: no tight loop.
        let mut dials = 6;
        let end = t0 + secs(3600);
        while now < end {
            now += fail_once(&mut d, now, Outcome::AuthFailed, 99);
            dials += 1;
        }
        assert!(dials <= 16, "{dials} dials in an hour");
        // A success resets the back-off: the next loss redials within a second.
        assert!(d.poll(now, IDLE));
        assert_eq!(d.update(now, UP, None, 0), Some(Outcome::Established));
        assert_eq!(d.failures(), 0);
        assert_eq!(d.update(now + secs(60), IDLE, None, 0), None);
        let redial = d
            .due()
            .expect("redial")
            .saturating_duration_since(now + secs(60));
        assert!(redial <= REDIAL, "{redial:?}");
        assert_eq!(d.status(now + secs(60))["state"], "waiting");
        now += secs(61);
        assert_eq!(fail_once(&mut d, now, Outcome::Timeout, 0), secs(1));
    }

    #[test]
    fn lost_sa_is_redialed_after_dpd_or_a_delete() {
        let t0 = Instant::now();
        let mut d = Dialer::new(t0);
        assert!(d.poll(t0, IDLE));
        d.update(t0, UP, None, 0);
        // DPD failed (or the router deleted the SA): nothing left.
        assert_eq!(d.update(t0 + secs(50), IDLE, None, 0), None);
        let at = d.due().expect("waiting");
        assert!(at > t0 + secs(50) && at <= t0 + secs(51));
        assert!(!d.poll(at - Duration::from_millis(1), IDLE));
        assert!(d.poll(at, IDLE));
        // An IKE rekey (old gone, new up in the same step) is not a loss.
        d.update(at, UP, None, 0);
        assert_eq!(d.update(at + secs(9), UP, None, 0), None);
        assert_eq!(d.due(), None);
    }

    #[test]
    fn the_routers_own_dial_is_not_crossed() {
        let t0 = Instant::now();
        let mut d = Dialer::new(t0);
        let peer = View {
            peer_dialing: true,
            ..IDLE
        };
        // Its IKE_SA_INIT is answered and its IKE_AUTH awaited: we wait, and look again a
        // second later (not at once: the shell sleeps until `due`).
        assert!(!d.poll(t0, peer));
        assert_eq!(d.due(), Some(t0 + LOOK_AGAIN));
        assert!(!d.poll(t0 + secs(1), peer));
        // It made it: up without a dial of ours, and nothing counted.
        assert_eq!(d.update(t0 + secs(1), UP, None, 0), None);
        assert!(!d.poll(t0 + secs(2), UP));
        assert_eq!(d.status(t0)["dials"], 0);
        // A dial that ends while the router's SA came up counts as established.
        let mut d = Dialer::new(t0);
        assert!(d.poll(t0, IDLE));
        let both = View {
            established: true,
            dialing: true,
            peer_dialing: false,
        };
        assert_eq!(d.update(t0, both, None, 0), Some(Outcome::Established));
    }

    #[test]
    fn an_unexplained_end_of_a_dial_is_a_timeout() {
        let t0 = Instant::now();
        let mut d = Dialer::new(t0);
        assert!(d.poll(t0, IDLE));
        assert_eq!(d.update(t0, IDLE, None, 0), Some(Outcome::Timeout));
        assert!(d.poll(t0 + secs(1), IDLE));
        assert_eq!(
            d.update(t0 + secs(1), IDLE, Some(Outcome::Established), 0),
            Some(Outcome::Timeout),
            "a hint cannot claim success the core does not show"
        );
    }

    #[test]
    fn duplicates_keep_the_same_sa_on_both_ends() {
        let a = (0x10, 0x9000);
        let b = (0x8000, 0x20);
        // One end sees a first, the other b first: both delete b (its highest SPI, 0x8000, is
        // below a's 0x9000).
        let mut x = Lineages::default();
        assert_eq!(x.established(a), None);
        assert_eq!(x.established(a), None, "the same SA twice is no duplicate");
        assert_eq!(x.established(b), Some(b));
        let mut y = Lineages::default();
        assert_eq!(y.established(b), None);
        assert_eq!(y.established(a), Some(b));
        assert_eq!((x.len(), y.len()), (1, 1));
        // A rekey continues the lineage: its new SPIs are no duplicate.
        let a2 = (0x11, 0x1);
        x.rekeyed(a, a2);
        x.retain(|s| s == a2);
        assert_eq!(x.len(), 1);
        assert_eq!(x.established((0x5, 0x6)), Some((0x5, 0x6)));
        x.retain(|_| false);
        assert!(x.is_empty());
    }
}
