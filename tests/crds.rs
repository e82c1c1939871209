//! The CRDs committed under crds/ are exactly what `kube-failover crd` generates.

#![allow(clippy::unwrap_used)]

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, crd) in kube_failover::crd::all() {
        let want = kube_failover::crd::render_one(&crd).unwrap();
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "crds/{file} is stale: run `cargo run -- crd --out-dir crds` and commit the result"
        );
    }
}
