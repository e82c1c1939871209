//! The workload's pod template as an instance keeps it: the compact JSON it arrived as.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instance's pod template (`spec.template`), kept as JSON and read back when a pod is
/// built from it.
///
/// k8s-openapi's types hold every field inline, set or not: a `PodTemplateSpec` is 1.8 KiB
/// and each `Container` 2.1 KiB before any of their content, about 4 KiB for a one-container
/// template that says little more than an image. Every cached instance, and every copy a
/// round takes of one, carried that; the controller reads the template only to create a pod
/// and to check that it lists a container. As JSON it is the size of what the user wrote,
/// shared by the copies. It is decoded as a `PodTemplateSpec` when it arrives (a template
/// that is not one is refused as before), and encoded from that, so that two templates that
/// say the same are equal. Whether it lists a container, which every round checks (and
/// the cluster's what-if runs, for every instance and member), is noted as it arrives.
#[derive(Clone, PartialEq, Eq)]
pub struct PodTemplate {
    json: Arc<str>,
    lists_a_container: bool,
}

impl PodTemplate {
    pub fn new(template: &PodTemplateSpec) -> Self {
        // Encoding a decoded k8s-openapi object cannot fail: its maps are keyed by strings.
        let json = serde_json::to_string(template).unwrap_or_else(|_| "{}".into());
        Self {
            json: json.into(),
            lists_a_container: template
                .spec
                .as_ref()
                .is_some_and(|s| !s.containers.is_empty()),
        }
    }

    /// The template, decoded.
    pub fn spec(&self) -> PodTemplateSpec {
        // It was encoded from a PodTemplateSpec (`new`): it decodes as one.
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    /// Whether `spec.containers` lists at least one container.
    pub fn lists_a_container(&self) -> bool {
        self.lists_a_container
    }

    /// The template as JSON.
    pub fn json(&self) -> &str {
        &self.json
    }
}

impl From<PodTemplateSpec> for PodTemplate {
    fn from(template: PodTemplateSpec) -> Self {
        Self::new(&template)
    }
}

impl Default for PodTemplate {
    fn default() -> Self {
        Self::new(&PodTemplateSpec::default())
    }
}

impl fmt::Debug for PodTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PodTemplate").field(&&*self.json).finish()
    }
}

impl Serialize for PodTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.spec().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PodTemplateSpec::deserialize(d).map(|t| Self::new(&t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(json: serde_json::Value) -> PodTemplate {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_template_reads_back_as_it_was_written_and_is_smaller_than_the_struct() {
        let json = serde_json::json!({
            "metadata": {"labels": {"app": "db"}},
            "spec": {"containers": [{
                "name": "db", "image": "postgres:16",
                "ports": [{"containerPort": 5432}],
                "readinessProbe": {"tcpSocket": {"port": 5432}},
            }]},
        });
        let t = template(json.clone());
        let spec: PodTemplateSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(t.spec(), spec);
        assert_eq!(serde_json::to_value(&t).unwrap(), json);
        let struct_bytes = std::mem::size_of::<PodTemplateSpec>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::Container>();
        assert!(
            t.json().len() * 4 < struct_bytes,
            "{} bytes of JSON against {struct_bytes} inline",
            t.json().len()
        );
    }

    #[test]
    fn what_is_not_a_pod_template_is_refused_and_equal_templates_are_equal() {
        assert!(
            serde_json::from_value::<PodTemplate>(serde_json::json!({"spec": {"containers": 3}}))
                .is_err()
        );
        // The same template, its keys in another order: equal.
        let a =
            template(serde_json::json!({"spec": {"containers": [{"name": "a", "image": "i"}]}}));
        let b =
            template(serde_json::json!({"spec": {"containers": [{"image": "i", "name": "a"}]}}));
        assert_eq!(a, b);
        let c =
            template(serde_json::json!({"spec": {"containers": [{"name": "a", "image": "j"}]}}));
        assert_ne!(a, c);
        assert!(a.lists_a_container());
        assert!(!template(serde_json::json!({"spec": {"containers": []}})).lists_a_container());
        assert!(!template(serde_json::json!({"metadata": {}})).lists_a_container());
        // A copy shares the JSON.
        let copy = a.clone();
        assert!(std::ptr::eq(copy.json(), a.json()));
    }
}
