//! The CRDs in `deploy/crds/` must be exactly what the Rust types generate: regenerate with
//! `cargo run -p mesh-controller -- crds --out deploy/crds` after changing a resource type.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let generated = mesh_controller::crd::istio_crds().expect("CRDs render");
    assert_eq!(generated.len(), 8);
    for (name, yaml) in &generated {
        let committed = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("deploy/crds/{name} missing ({e}); regenerate the CRDs"));
        assert!(
            committed == *yaml,
            "deploy/crds/{name} drifted from the Rust types; run `cargo run -p mesh-controller -- crds --out deploy/crds`"
        );
    }
    let expected: BTreeSet<&str> = generated.iter().map(|(n, _)| n.as_str()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/crds readable")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let stale: Vec<&String> = present
        .iter()
        .filter(|n| !expected.contains(n.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "stale CRD files in deploy/crds: {stale:?}"
    );
}

#[test]
fn crds_are_structural_and_cover_every_istio_kind() {
    for (name, yaml) in mesh_controller::crd::istio_crds().expect("CRDs render") {
        let value: serde_json::Value = yaml_serde::from_str(&yaml).expect("CRD is YAML");
        assert_eq!(value["kind"], "CustomResourceDefinition", "{name}");
        assert!(
            !yaml.contains("additionalProperties: false"),
            "{name} is not structural"
        );
        assert!(
            !yaml.contains("anyOf") && !yaml.contains("oneOf"),
            "{name} has unions"
        );
        let served: Vec<&str> = value["spec"]["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        let expected: &[&str] = if name.contains("security") {
            &["v1", "v1beta1"]
        } else if name.contains("telemetry") {
            &["v1", "v1alpha1"]
        } else {
            &["v1", "v1beta1", "v1alpha3"]
        };
        assert_eq!(served, expected, "{name}");
    }
}
