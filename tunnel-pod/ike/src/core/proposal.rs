//! SA proposals (RFC 7296 §2.7, §3.3): building ours from the allow-list, choosing from the
//! peer's. A chosen SA has exactly one transform of each type; a transform with an attribute we
//! do not understand is unusable (§3.3.6); a proposal with an unknown transform type, or missing
//! a mandatory one, is unacceptable.

use super::{Proposals, dh_name, encr_name, esp_integ_name, prf_name};
use crate::crypto::{EncrAlg, Group, IkeSuite, IntegAlg, PrfAlg};
use crate::wire::{Proposal, ProtocolId, Transform, TransformId, TransformType};

fn t(kind: TransformType, id: TransformId, key_length: Option<u16>) -> Transform {
    Transform {
        kind,
        id,
        key_length,
        other_attributes: Vec::new(),
    }
}

fn usable(tr: &Transform) -> bool {
    tr.other_attributes.is_empty()
}

fn of_type(p: &Proposal, kind: TransformType) -> impl Iterator<Item = &Transform> {
    p.transforms
        .iter()
        .filter(move |tr| tr.kind == kind && usable(tr))
}

fn known_types_only(p: &Proposal, allowed: &[TransformType]) -> bool {
    p.transforms.iter().all(|tr| allowed.contains(&tr.kind))
}

fn is_gcm(id: TransformId) -> bool {
    id == TransformId::ENCR_AES_GCM_16
}

/// The IKE SA algorithms chosen from a peer's proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeChoice {
    pub number: u8,
    pub suite: IkeSuite,
    /// The proposal's SPI (empty in IKE_SA_INIT, 8 bytes in an IKE rekey).
    pub spi: Vec<u8>,
}

/// Chooses the first of the peer's IKE proposals that our allow-list accepts. Within it, the
/// peer's order decides, except for the DH group: the group of the peer's KE payload if the
/// proposal offers it and we allow it (no INVALID_KE round trip), else our preferred one.
pub fn select_ike(
    offered: &[Proposal],
    allowed: &Proposals,
    ke_group: Option<TransformId>,
    spi_len: usize,
) -> Option<IkeChoice> {
    offered
        .iter()
        .find_map(|p| select_ike_one(p, allowed, ke_group, spi_len))
}

fn select_ike_one(
    p: &Proposal,
    allowed: &Proposals,
    ke_group: Option<TransformId>,
    spi_len: usize,
) -> Option<IkeChoice> {
    if p.protocol != ProtocolId::IKE || p.spi.len() != spi_len {
        return None;
    }
    if !known_types_only(
        p,
        &[
            TransformType::ENCR,
            TransformType::PRF,
            TransformType::INTEG,
            TransformType::DH,
        ],
    ) {
        return None;
    }
    let integs: Vec<&Transform> = of_type(p, TransformType::INTEG).collect();
    let has_integ_none = integs.iter().any(|t| t.id == TransformId::AUTH_NONE);
    let all_integ_none = integs.iter().all(|t| t.id == TransformId::AUTH_NONE);
    let (encr, integ) = of_type(p, TransformType::ENCR).find_map(|tr| {
        let alg = EncrAlg::from_transform(tr.id, tr.key_length)?;
        if !allowed.ike_encr.contains(&alg) {
            return None;
        }
        if alg.is_aead() {
            // RFC 5282 §8: with a combined-mode cipher, integrity is absent or NONE.
            (integs.is_empty() || has_integ_none || all_integ_none).then_some((alg, None))
        } else {
            let i = integs
                .iter()
                .find_map(|t| IntegAlg::from_id(t.id).filter(|a| allowed.ike_integ.contains(a)))?;
            Some((alg, Some(i)))
        }
    })?;
    let prf = of_type(p, TransformType::PRF)
        .find_map(|t| PrfAlg::from_id(t.id).filter(|a| allowed.ike_prf.contains(a)))?;
    let dh = choose_group(p, &allowed.ike_dh, ke_group)?;
    Some(IkeChoice {
        number: p.number,
        suite: IkeSuite {
            encr,
            integ,
            prf,
            dh,
        },
        spi: p.spi.clone(),
    })
}

/// The offered groups we allow: the KE payload's if among them, else our first preference.
fn choose_group(p: &Proposal, allowed: &[Group], ke_group: Option<TransformId>) -> Option<Group> {
    let offered: Vec<Group> = of_type(p, TransformType::DH)
        .filter_map(|t| Group::from_id(t.id))
        .filter(|g| allowed.contains(g))
        .collect();
    if let Some(k) = ke_group.and_then(Group::from_id)
        && offered.contains(&k)
    {
        return Some(k);
    }
    allowed.iter().find(|g| offered.contains(g)).copied()
}

/// The ESP algorithms chosen from a peer's proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspChoice {
    pub number: u8,
    pub encr: TransformId,
    pub key_bits: Option<u16>,
    pub integ: Option<TransformId>,
    /// PFS group (CREATE_CHILD_SA only).
    pub dh: Option<Group>,
    /// The SPI in the proposal: the one its sender receives on.
    pub spi: u32,
}

impl EspChoice {
    /// Keying material bytes per direction: encryption (with the GCM salt), integrity.
    pub fn key_lens(&self) -> (usize, usize) {
        let bytes = usize::from(self.key_bits.unwrap_or(0)) / 8;
        let encr = if is_gcm(self.encr) {
            bytes.saturating_add(4)
        } else {
            bytes
        };
        let integ = match self.integ {
            Some(TransformId::AUTH_HMAC_SHA2_256_128) => 32,
            Some(TransformId::AUTH_HMAC_SHA1_96) => 20,
            _ => 0,
        };
        (encr, integ)
    }

    pub fn name(&self) -> String {
        let mut s = encr_name(self.encr, self.key_bits);
        if let Some(i) = self.integ {
            s.push('/');
            s.push_str(&esp_integ_name(i));
        }
        if let Some(g) = self.dh {
            s.push('/');
            s.push_str(&dh_name(g.id()));
        }
        s
    }
}

/// How DH transforms in an ESP proposal are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pfs {
    /// IKE_AUTH: there is no KE payload; DH transforms are ignored (§1.2).
    Ignore,
    /// CREATE_CHILD_SA: a group from the allow-list, or none when the proposal allows none.
    Negotiate { ke_group: Option<TransformId> },
}

/// Chooses the first acceptable ESP proposal: tunnel-mode ESP with a 4-byte SPI, one allowed
/// encryption (with allowed integrity unless AEAD), ESN "no" (an ESN-only proposal is refused).
pub fn select_esp(offered: &[Proposal], allowed: &Proposals, pfs: Pfs) -> Option<EspChoice> {
    offered.iter().find_map(|p| select_esp_one(p, allowed, pfs))
}

fn select_esp_one(p: &Proposal, allowed: &Proposals, pfs: Pfs) -> Option<EspChoice> {
    if p.protocol != ProtocolId::ESP {
        return None;
    }
    let spi = u32::from_be_bytes(<[u8; 4]>::try_from(p.spi.as_slice()).ok()?);
    if !known_types_only(
        p,
        &[
            TransformType::ENCR,
            TransformType::INTEG,
            TransformType::DH,
            TransformType::ESN,
        ],
    ) {
        return None;
    }
    // ESN must be "no": offered explicitly, or no ESN transform at all (lenient).
    let esns: Vec<&Transform> = p
        .transforms
        .iter()
        .filter(|t| t.kind == TransformType::ESN)
        .collect();
    if !esns.is_empty()
        && !esns
            .iter()
            .any(|t| t.id == TransformId::ESN_NO && usable(t))
    {
        return None;
    }
    let integs: Vec<&Transform> = of_type(p, TransformType::INTEG).collect();
    let (encr, key_bits, integ) = of_type(p, TransformType::ENCR).find_map(|tr| {
        let key_bits = tr.key_length;
        if !allowed.esp_encr.contains(&(tr.id, key_bits)) {
            return None;
        }
        if is_gcm(tr.id) {
            let ok = integs.is_empty() || integs.iter().any(|t| t.id == TransformId::AUTH_NONE);
            ok.then_some((tr.id, key_bits, None))
        } else {
            // CBC and NULL need integrity (NULL without it protects nothing).
            let i = integs
                .iter()
                .map(|t| t.id)
                .find(|id| allowed.esp_integ.contains(id))?;
            Some((tr.id, key_bits, Some(i)))
        }
    })?;
    let dh = match pfs {
        Pfs::Ignore => None,
        Pfs::Negotiate { ke_group } => {
            let groups: Vec<&Transform> = of_type(p, TransformType::DH).collect();
            let offers_none =
                groups.is_empty() || groups.iter().any(|t| t.id == TransformId::DH_NONE);
            match choose_group(p, &allowed.pfs, ke_group) {
                // No KE payload but "none" offered: no PFS.
                Some(_) if ke_group.is_none() && offers_none => None,
                Some(g) => Some(g),
                None if offers_none => None,
                None => return None,
            }
        }
    };
    Some(EspChoice {
        number: p.number,
        encr,
        key_bits,
        integ,
        dh,
        spi,
    })
}

/// Our IKE proposals: AEAD ciphers in one proposal and the others with integrity in a second
/// (RFC 5282 §8 forbids mixing them), each with every allowed PRF and group.
pub fn ike_proposals(allowed: &Proposals, spi: &[u8]) -> Vec<Proposal> {
    let mut out = Vec::new();
    let common = |ts: &mut Vec<Transform>| {
        for p in &allowed.ike_prf {
            ts.push(t(TransformType::PRF, p.id(), None));
        }
        for g in &allowed.ike_dh {
            ts.push(t(TransformType::DH, g.id(), None));
        }
    };
    let aead: Vec<&EncrAlg> = allowed.ike_encr.iter().filter(|a| a.is_aead()).collect();
    let plain: Vec<&EncrAlg> = allowed.ike_encr.iter().filter(|a| !a.is_aead()).collect();
    if !aead.is_empty() {
        let mut ts: Vec<Transform> = aead
            .iter()
            .map(|a| t(TransformType::ENCR, a.id(), Some(a.key_bits())))
            .collect();
        common(&mut ts);
        out.push(ts);
    }
    if !plain.is_empty() && !allowed.ike_integ.is_empty() {
        let mut ts: Vec<Transform> = plain
            .iter()
            .map(|a| t(TransformType::ENCR, a.id(), Some(a.key_bits())))
            .collect();
        for i in &allowed.ike_integ {
            ts.push(t(TransformType::INTEG, i.id(), None));
        }
        common(&mut ts);
        out.push(ts);
    }
    number(out, ProtocolId::IKE, spi)
}

fn number(sets: Vec<Vec<Transform>>, protocol: ProtocolId, spi: &[u8]) -> Vec<Proposal> {
    sets.into_iter()
        .zip(1u8..)
        .map(|(transforms, number)| Proposal {
            number,
            protocol,
            spi: spi.to_vec(),
            transforms,
        })
        .collect()
}

/// The single-proposal answer for a chosen IKE suite.
pub fn ike_answer(choice: &IkeChoice, spi: &[u8]) -> Vec<Proposal> {
    let s = &choice.suite;
    let mut ts = vec![t(TransformType::ENCR, s.encr.id(), Some(s.encr.key_bits()))];
    if let Some(i) = s.integ {
        ts.push(t(TransformType::INTEG, i.id(), None));
    }
    ts.push(t(TransformType::PRF, s.prf.id(), None));
    ts.push(t(TransformType::DH, s.dh.id(), None));
    vec![Proposal {
        number: choice.number,
        protocol: ProtocolId::IKE,
        spi: spi.to_vec(),
        transforms: ts,
    }]
}

/// Our ESP proposals: AEAD in one, the others with integrity in a second; ESN "no"; with
/// the PFS group when given.
pub fn esp_proposals(allowed: &Proposals, spi: u32, pfs: Option<Group>) -> Vec<Proposal> {
    let tail = |ts: &mut Vec<Transform>| {
        if let Some(g) = pfs {
            ts.push(t(TransformType::DH, g.id(), None));
        }
        ts.push(t(TransformType::ESN, TransformId::ESN_NO, None));
    };
    let mut out = Vec::new();
    let aead: Vec<&(TransformId, Option<u16>)> = allowed
        .esp_encr
        .iter()
        .filter(|(id, _)| is_gcm(*id))
        .collect();
    let plain: Vec<&(TransformId, Option<u16>)> = allowed
        .esp_encr
        .iter()
        .filter(|(id, _)| !is_gcm(*id))
        .collect();
    if !aead.is_empty() {
        let mut ts: Vec<Transform> = aead
            .iter()
            .map(|(id, k)| t(TransformType::ENCR, *id, *k))
            .collect();
        tail(&mut ts);
        out.push(ts);
    }
    if !plain.is_empty() && !allowed.esp_integ.is_empty() {
        let mut ts: Vec<Transform> = plain
            .iter()
            .map(|(id, k)| t(TransformType::ENCR, *id, *k))
            .collect();
        for i in &allowed.esp_integ {
            ts.push(t(TransformType::INTEG, *i, None));
        }
        tail(&mut ts);
        out.push(ts);
    }
    number(out, ProtocolId::ESP, &spi.to_be_bytes())
}

/// The single-proposal answer for a chosen ESP suite, with our inbound SPI.
pub fn esp_answer(choice: &EspChoice, spi: u32) -> Vec<Proposal> {
    let mut ts = vec![t(TransformType::ENCR, choice.encr, choice.key_bits)];
    if let Some(i) = choice.integ {
        ts.push(t(TransformType::INTEG, i, None));
    }
    if let Some(g) = choice.dh {
        ts.push(t(TransformType::DH, g.id(), None));
    }
    ts.push(t(TransformType::ESN, TransformId::ESN_NO, None));
    vec![Proposal {
        number: choice.number,
        protocol: ProtocolId::ESP,
        spi: spi.to_be_bytes().to_vec(),
        transforms: ts,
    }]
}

/// Checks that an answer has exactly one transform per type (§3.3.6: "the accepted
/// cryptographic suite MUST contain exactly one transform of each type").
pub fn single_per_type(p: &[Proposal]) -> bool {
    let [one] = p else { return false };
    let mut seen: Vec<TransformType> = Vec::new();
    for tr in &one.transforms {
        if seen.contains(&tr.kind) {
            return false;
        }
        seen.push(tr.kind);
    }
    true
}

pub fn ike_suite_name(s: &IkeSuite) -> String {
    let mut out = encr_name(s.encr.id(), Some(s.encr.key_bits()));
    if let Some(i) = s.integ {
        out.push('/');
        out.push_str(&esp_integ_name(i.id()));
    }
    out.push('/');
    out.push_str(&prf_name(s.prf.id()));
    out.push('/');
    out.push_str(&dh_name(s.dh.id()));
    out
}

fn transform_name(tr: &Transform) -> String {
    let mut s = match tr.kind {
        TransformType::ENCR => encr_name(tr.id, tr.key_length),
        TransformType::INTEG => esp_integ_name(tr.id),
        TransformType::PRF => prf_name(tr.id),
        TransformType::DH => dh_name(tr.id),
        TransformType::ESN => match tr.id {
            TransformId::ESN_NO => "NO_ESN".to_string(),
            TransformId::ESN_YES => "ESN".to_string(),
            other => format!("ESN({})", other.0),
        },
        other => format!("{other}:{}", tr.id.0),
    };
    if !tr.other_attributes.is_empty() {
        s.push_str("(unknown attributes)");
    }
    s
}

/// "ENCR_3DES, HMAC-SHA1-96, ...; ..." — every transform of every proposal, bounded.
pub fn describe_offered(p: &[Proposal]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for prop in p.iter().take(8) {
        let ts: Vec<String> = prop
            .transforms
            .iter()
            .take(32)
            .map(transform_name)
            .collect();
        parts.push(format!(
            "#{} {}: {}",
            prop.number,
            prop.protocol,
            ts.join(", ")
        ));
    }
    if parts.is_empty() {
        return "nothing".to_string();
    }
    parts.join("; ")
}

pub fn describe_allowed_ike(a: &Proposals) -> String {
    let mut v: Vec<String> = a
        .ike_encr
        .iter()
        .map(|e| encr_name(e.id(), Some(e.key_bits())))
        .collect();
    v.extend(a.ike_integ.iter().map(|i| esp_integ_name(i.id())));
    v.extend(a.ike_prf.iter().map(|p| prf_name(p.id())));
    v.extend(a.ike_dh.iter().map(|g| dh_name(g.id())));
    v.join(", ")
}

pub fn describe_allowed_esp(a: &Proposals) -> String {
    let mut v: Vec<String> = a
        .esp_encr
        .iter()
        .map(|(id, k)| encr_name(*id, *k))
        .collect();
    v.extend(a.esp_integ.iter().map(|i| esp_integ_name(*i)));
    v.push("NO_ESN".to_string());
    v.join(", ")
}
