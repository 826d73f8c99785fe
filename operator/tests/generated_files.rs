//! Files derived from the code must match it: the committed CRD (also shipped in the chart) and
//! the examples, which must pass the CRD's CEL rules, validation and build.

use std::path::{Path, PathBuf};

use kube::Resource;
use magictunnel_types::config::{Psk, TunnelConfig};
use operator::build;
use operator::crd::{MagicTunnel, crd_yaml};
use operator::index::TunnelIndex;
use operator::settings::Settings;
use operator::validate::validate;
use serde::Deserialize;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crds_are_current() {
    let generated = crd_yaml();
    for path in [
        "crds/magictunnel.yaml",
        "charts/magictunnel/crds/magictunnel.yaml",
    ] {
        let committed = std::fs::read_to_string(repo().join(path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is stale: run `make crds` (cargo run -p magictunnel-operator -- crd > {path})"
        );
    }
}

fn example_tunnels() -> Vec<(String, MagicTunnel)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("readable");
        if !text.contains("kind: MagicTunnel") {
            continue;
        }
        // A file may hold several documents (examples/node-demo.yaml).
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let mut mt = MagicTunnel::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", path.display()));
            let name = format!("{}#{i}", path.display());
            mt.metadata.uid = Some(operator::fixtures::uid_for(&name));
            out.push((name, mt));
        }
    }
    out
}

#[test]
fn examples_pass_the_crd_rules_validation_and_build() {
    let tunnels = example_tunnels();
    assert!(tunnels.len() >= 3, "GRE and two IPsec examples expected");
    let settings = Settings::example();
    let all = TunnelIndex::of(tunnels.iter().map(|(_, t)| t), &settings);
    for (path, mt) in &tunnels {
        if let Err(e) = kube::core::cel::validate_cel(mt) {
            panic!("{path}: refused by the CRD's CEL rules: {e}");
        }
        let v = validate(mt, &all, &settings).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        let psk = v
            .ipsec
            .as_ref()
            .map(|_| Psk::new(b"example-psk-0123456789".to_vec()));
        let owner = mt.controller_owner_ref(&()).expect("owner");
        let d = build::desired(&v, &owner, psk.as_ref(), &settings)
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        assert_eq!(
            d.pods.len(),
            usize::try_from(v.replicas).unwrap_or(0),
            "{path}"
        );
    }
}

#[test]
fn standalone_tunnel_configs_are_valid() {
    let path = repo().join("examples/tunnel-config-gre.yaml");
    let config = TunnelConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.mtu(), 1472, "keyed GRE");
    let path = repo().join("examples/tunnel-config-ipsec-static.yaml");
    let config = TunnelConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let sa = config.ipsec.and_then(|i| i.static_sa).expect("static SAs");
    assert_eq!((sa.outbound.spi, sa.inbound.spi), (4097, 8194));
}
