//! Dependencies between instances (`spec.dependsOn`): the cycles they may form.

use std::collections::BTreeSet;

/// A cycle through `start` in the dependency graph `depends_on` (instance → the instances
/// it names), if there is one: the names along it, `start` first and last. Names are looked
/// up within one namespace; one that does not exist ends its path.
pub fn dependency_cycle(
    start: &str,
    depends_on: impl Fn(&str) -> Vec<String>,
) -> Option<Vec<String>> {
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(start, &depends_on, &mut path, &mut seen).then_some(path)
}

/// Depth first from the last name of `path`; true once it is back at `path[0]`, with the
/// cycle in `path`. `seen` keeps nodes already explored without finding it.
fn walk(
    start: &str,
    depends_on: &impl Fn(&str) -> Vec<String>,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> bool {
    let Some(at) = path.last().cloned() else {
        return false;
    };
    for next in depends_on(&at) {
        if next == start {
            path.push(next);
            return true;
        }
        if seen.insert(next.clone()) {
            path.push(next);
            if walk(start, depends_on, path, seen) {
                return true;
            }
            path.pop();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn graph(edges: &[(&str, &[&str])]) -> impl Fn(&str) -> Vec<String> {
        let map: BTreeMap<String, Vec<String>> = edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        move |n| map.get(n).cloned().unwrap_or_default()
    }

    #[test]
    fn cycles_through_the_instance_are_found_with_their_path() {
        let g = graph(&[
            ("app", &["db", "cache"]),
            ("db", &["disk"]),
            ("cache", &["app"]),
        ]);
        assert_eq!(
            dependency_cycle("app", &g),
            Some(vec!["app".into(), "cache".into(), "app".into()])
        );
        // A cycle elsewhere is not this instance's.
        let g = graph(&[("app", &["db"]), ("db", &["x"]), ("x", &["db"])]);
        assert_eq!(dependency_cycle("app", &g), None);
        // Itself.
        let g = graph(&[("app", &["app"])]);
        assert_eq!(
            dependency_cycle("app", &g),
            Some(vec!["app".into(), "app".into()])
        );
        // None, and a missing name.
        let g = graph(&[("app", &["db", "gone"]), ("db", &[])]);
        assert_eq!(dependency_cycle("app", &g), None);
    }
}
