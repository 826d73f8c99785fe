//! What a shell in initiator mode needs when the peer dials at the same time: to give up its
//! own IKE_SA_INIT in flight, and to end one IKE SA by its SPIs (a duplicate), keeping the
//! other.

use ring::rand::SecureRandom;
use std::time::Instant;

use super::ike_sa::{Ctx, IkeSa, State};
use super::{DeleteReason, Endpoint, Output};

impl Endpoint {
    /// Ends the established IKE SA with these SPIs now: one INFORMATIONAL Delete sent without
    /// waiting for its answer (as [`Endpoint::close`] does for all), its Child SAs retired, the
    /// SA forgotten. For a duplicate the peer may already have dropped (INITIAL_CONTACT), so
    /// nothing waits on an answer that may never come. `false` when no established SA has them.
    pub fn delete_ike_sa(
        &mut self,
        now: Instant,
        spis: (u64, u64),
        rng: &dyn SecureRandom,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(ours) = self
            .sas
            .iter()
            .find(|(_, s)| (s.spi_i, s.spi_r) == spis && matches!(s.state, State::Established(_)))
            .map(|(k, _)| *k)
        else {
            return false;
        };
        let config = self.config().clone();
        let ike_spis = self.sas.keys().copied().collect();
        let esp_spis = self.sas.values().flat_map(IkeSa::child_spis).collect();
        let mut ctx = Ctx {
            now,
            rng,
            config: &config,
            out,
            ike_spis,
            esp_spis,
        };
        let Some(mut sa) = self.sas.remove(&ours) else {
            return false;
        };
        sa.send_delete_now(&mut ctx);
        let _ = sa.end(&mut ctx, DeleteReason::Closed);
        true
    }

    /// Forgets our IKE_SA_INITs still unanswered (IKE_AUTH not sent): nothing is sent, the
    /// peer's half-open state times out. Returns how many there were.
    pub fn abandon_initiations(&mut self) -> usize {
        let ours: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, s)| s.initiator && matches!(s.state, State::InitSent(_)))
            .map(|(k, _)| *k)
            .collect();
        for k in &ours {
            self.sas.remove(k);
        }
        ours.len()
    }
}
