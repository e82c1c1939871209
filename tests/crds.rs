//! The CRDs committed under crds/ are exactly what `kube-failover crd` generates.

#![allow(clippy::unwrap_used)]

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, crd) in kube_failover_core::crd::all() {
        let want = kube_failover_core::crd::render_one(&crd).unwrap();
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "crds/{file} is stale: run `cargo run -- crd --out-dir crds` and commit the result"
        );
    }
}

/// `kubectl explain` has something to say about every field the project defines (the pod
/// template and the claim spec are Kubernetes' own), in whole sentences: no description
/// breaks a line mid-paragraph.
#[test]
fn every_field_is_explained_in_whole_paragraphs() {
    fn walk(
        schema: &serde_json::Value,
        path: &str,
        missing: &mut Vec<String>,
        broken: &mut Vec<String>,
    ) {
        let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        for (name, prop) in props {
            let p = format!("{path}.{name}");
            match prop.get("description").and_then(|d| d.as_str()) {
                None => missing.push(p.clone()),
                Some(d) => {
                    let mid_paragraph = d.split("\n\n").any(|para| {
                        para.lines()
                            .skip(1)
                            .any(|l| !l.starts_with("- ") && !l.starts_with("* "))
                    });
                    if mid_paragraph {
                        broken.push(p.clone());
                    }
                }
            }
            if p == ".spec.template" || p.ends_with("claimTemplates[].spec") {
                continue;
            }
            walk(prop, &p, missing, broken);
            if let Some(items) = prop.get("items") {
                walk(items, &format!("{p}[]"), missing, broken);
            }
        }
    }
    for (file, crd) in kube_failover_core::crd::all() {
        let crd = serde_json::to_value(&crd).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let (mut missing, mut broken) = (Vec::new(), Vec::new());
        walk(schema, "", &mut missing, &mut broken);
        assert!(
            missing.is_empty(),
            "{file}: fields without a description: {missing:?}"
        );
        assert!(
            broken.is_empty(),
            "{file}: descriptions broken mid-paragraph: {broken:?}"
        );
    }
}

#[test]
fn reflow_joins_wrapped_lines_and_keeps_paragraphs_and_lists() {
    let text = "One sentence\nwrapped.\n\nA list:\n- first\n- second\nwrapped";
    assert_eq!(
        kube_failover_core::crd::reflow(text),
        "One sentence wrapped.\n\nA list:\n- first\n- second wrapped"
    );
}
