//! The timeline of a scenario's moves, step by step, as a Gantt chart (SVG): one row per
//! move, from the moment the heartbeats stopped, each bar coloured by the step it waits for.
//! A reader sees where the time of a storm goes: detection, fencing, the old pod, the
//! volumes, the new pod.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use kube::ResourceExt;
use kube_failover_core::api::FailoverClusterInstance;
use serde::{Deserialize, Serialize};

/// One move's steps, in seconds from the kill.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MoveTrace {
    pub instance: String,
    pub from: String,
    pub to: String,
    /// Why the move began (`status.move.reason`), and whether it was planned (graceful).
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub planned: bool,
    /// `(step, seconds)`, in the order the steps happen; `started` first. Steps a move did
    /// not go through (no virtual IP to release) are left out.
    pub steps: Vec<(String, f64)>,
}

/// The colour of the bar that ends at each step of a move
/// ([`Move::steps`](kube_failover_core::api::Move::steps)) and what it
/// stands for in the legend.
const STEPS: [(&str, &str, &str); 8] = [
    (
        "started",
        "#bdbdbd",
        "detection (heartbeats stop → move started)",
    ),
    ("endpointWithdrawn", "#8da0cb", "endpoint withdrawn"),
    ("fenced", "#e78ac3", "node fenced (out-of-service taint)"),
    ("oldPodGone", "#fc8d62", "old pod gone"),
    ("volumesDetached", "#e5c494", "volumes detached"),
    ("vipReleased", "#a6d854", "virtual IPs released"),
    ("podCreated", "#66c2a5", "new pod created"),
    ("online", "#1b9e77", "new pod Ready, endpoint published"),
];

/// The last move of each affected instance away from a victim, as steps from `killed_at`,
/// ordered by when each started.
pub fn traces(
    after: &[FailoverClusterInstance],
    victims: &BTreeSet<String>,
    affected: &BTreeSet<String>,
    killed_at: jiff::Timestamp,
) -> Vec<MoveTrace> {
    let mut out: Vec<MoveTrace> = after
        .iter()
        .filter(|i| affected.contains(&i.name_any()))
        .filter_map(|i| {
            let m = i
                .status
                .as_ref()?
                .history
                .iter()
                .rev()
                .find(|m| m.from.as_ref().is_some_and(|f| victims.contains(f)))?;
            let steps = m
                .steps()
                .into_iter()
                .filter_map(|(name, _, t)| {
                    Some((
                        name.to_string(),
                        t?.0.duration_since(killed_at).as_secs_f64(),
                    ))
                })
                .collect();
            Some(MoveTrace {
                instance: i.name_any(),
                from: m.from.clone().unwrap_or_default(),
                to: m.to.clone().unwrap_or_default(),
                reason: m.reason.clone(),
                planned: m.planned,
                steps,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let start = |t: &MoveTrace| t.steps.first().map_or(f64::MAX, |s| s.1);
        start(a)
            .total_cmp(&start(b))
            .then_with(|| a.instance.cmp(&b.instance))
    });
    out
}

/// A tick spacing that gives at most about 15 ticks over `span` seconds.
fn tick(span: f64) -> f64 {
    [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|t| span / t <= 15.0)
        .unwrap_or(300.0)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Gantt chart of `moves` as an SVG document: time from the heartbeats stopping on the
/// x axis (a dashed line where the nodes were declared down, `declared_down` seconds
/// after), one row per move, one bar per step it waited for.
pub fn gantt_svg(title: &str, declared_down: f64, moves: &[MoveTrace]) -> String {
    const WIDTH: f64 = 1100.0;
    const LEFT: f64 = 110.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 70.0;
    let rows = moves.len().max(1) as f64;
    let row = (640.0 / rows).clamp(4.0, 18.0);
    let legend_top = TOP + rows * row + 30.0;
    let height = legend_top + 22.0 * STEPS.len().div_ceil(2) as f64 + 10.0;
    let end = moves
        .iter()
        .filter_map(|m| m.steps.last().map(|s| s.1))
        .fold(declared_down, f64::max)
        .max(0.1);
    let span = end * 1.03;
    let x = |t: f64| LEFT + (t.max(0.0) / span) * (WIDTH - LEFT - RIGHT);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>
<text x="{LEFT}" y="38">{} moves, one row each, ordered by start; seconds from the moment the heartbeats stopped</text>"##,
        escape(title),
        moves.len()
    );
    // The axis and its grid.
    let step = tick(span);
    let mut t = 0.0;
    while t <= span {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2:.1}" stroke="#e0e0e0"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            x(t),
            TOP - 4.0,
            TOP + rows * row,
            TOP - 8.0,
            if step < 1.0 {
                format!("{t:.1}")
            } else {
                format!("{t:.0}")
            }
        );
        t += step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2:.1}" stroke="#444" stroke-dasharray="4 3"/><text x="{3:.1}" y="{4}" fill="#444">declared down ({5} s)</text>"##,
        x(declared_down),
        TOP - 20.0,
        TOP + rows * row,
        x(declared_down) + 4.0,
        TOP - 22.0,
        declared_down
    );
    // One row per move: a bar from each step to the next, coloured by the step it ends at.
    for (k, m) in moves.iter().enumerate() {
        let y = TOP + k as f64 * row;
        let _ = write!(
            svg,
            r#"<g class="move" data-instance="{}">"#,
            escape(&m.instance)
        );
        if row >= 9.0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="{:.0}">{}</text>"#,
                LEFT - 6.0,
                y + row * 0.8,
                (row * 0.8).min(11.0),
                escape(&m.instance)
            );
        }
        let mut from = 0.0;
        for (name, at) in &m.steps {
            let Some((_, colour, what)) = STEPS.iter().find(|(n, _, _)| n == name) else {
                continue;
            };
            let _ = write!(
                svg,
                r#"<rect class="step" data-step="{name}" x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{colour}"><title>{}: {what}, {:.3} s → {:.3} s</title></rect>"#,
                x(from),
                y + 0.5,
                (x(*at) - x(from)).max(0.5),
                (row - 1.0).max(1.0),
                escape(&m.instance),
                from,
                at
            );
            from = *at;
        }
        let _ = writeln!(svg, "</g>");
    }
    // The legend: what each colour waits for.
    for (k, (_, colour, what)) in STEPS.iter().enumerate() {
        let (col, line) = (k % 2, k / 2);
        let lx = LEFT + col as f64 * 460.0;
        let ly = legend_top + line as f64 * 22.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="14" fill="{colour}"/><text x="{:.1}" y="{:.1}">until {what}</text>"#,
            ly - 11.0,
            lx + 20.0,
            ly
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(name: &str, steps: &[(&str, f64)]) -> MoveTrace {
        MoveTrace {
            instance: name.into(),
            from: "n0".into(),
            to: "n1".into(),
            reason: "n0 failed".into(),
            planned: false,
            steps: steps.iter().map(|(s, t)| (s.to_string(), *t)).collect(),
        }
    }

    #[test]
    fn one_row_per_move_one_bar_per_step_in_proportion() {
        let moves = [
            trace(
                "a",
                &[
                    ("started", 3.0),
                    ("fenced", 3.5),
                    ("podCreated", 4.0),
                    ("online", 5.0),
                ],
            ),
            trace("b<&>", &[("started", 3.0), ("online", 10.0)]),
        ];
        let svg = gantt_svg("N=3/M=2 storm", 3.0, &moves);
        assert!(
            svg.starts_with("<svg ") && svg.ends_with("</svg>\n"),
            "{svg}"
        );
        assert_eq!(svg.matches(r#"<g class="move""#).count(), 2);
        assert_eq!(svg.matches(r#"class="step""#).count(), 6);
        // Names are escaped, never markup.
        assert!(svg.contains("b&lt;&amp;&gt;") && !svg.contains("b<&>"));
        // Bar widths follow the seconds: b's wait for `online` (7 s) is 14 times a's
        // wait for `fenced` (0.5 s).
        let width = |instance: &str, step: &str| -> f64 {
            let g = svg
                .split(r#"<g class="move""#)
                .find(|g| g.contains(&format!(r#"data-instance="{instance}""#)))
                .unwrap();
            let bar = g
                .split("<rect ")
                .find(|r| r.contains(&format!(r#"data-step="{step}""#)))
                .unwrap();
            bar.split("width=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let ratio = width("b&lt;&amp;&gt;", "online") / width("a", "fenced");
        assert!((ratio - 14.0).abs() < 0.1, "{ratio}");
        // Every step of the legend is there.
        for (_, _, what) in STEPS {
            assert!(svg.contains(what), "{what}");
        }
    }

    #[test]
    fn ticks_stay_few() {
        for span in [0.3, 2.0, 11.0, 25.0, 90.0, 600.0] {
            let t = tick(span);
            assert!(span / t <= 15.0, "{span} {t}");
        }
    }
}
