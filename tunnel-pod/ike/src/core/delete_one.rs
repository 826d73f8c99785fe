//! Deleting one IKE SA by its SPIs: what a shell needs to end a duplicate left by two
//! simultaneous initiations (both ends dialed), keeping the other.

use ring::rand::SecureRandom;
use std::time::Instant;

use super::Endpoint;
use super::Output;
use super::ike_sa::{Ctx, IkeSa, Req, State};

impl Endpoint {
    /// Deletes the established IKE SA with these SPIs (and so its Child SAs): an INFORMATIONAL
    /// Delete that waits for its answer and is retransmitted, as [`Endpoint::delete_ike`] does
    /// for all. `false` when no established SA has them.
    pub fn delete_ike_sa(
        &mut self,
        now: Instant,
        spis: (u64, u64),
        rng: &dyn SecureRandom,
        out: &mut Vec<Output>,
    ) -> bool {
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
        let Some(sa) = self
            .sas
            .values_mut()
            .find(|s| (s.spi_i, s.spi_r) == spis && matches!(s.state, State::Established(_)))
        else {
            return false;
        };
        sa.request(&mut ctx, Req::DeleteIke);
        true
    }
}
