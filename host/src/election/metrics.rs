//! The elections' `/metrics`: per group the status, term and whether this member leads, and
//! counters of transitions, published and refused rumors. The shell writes, the gateway reads.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::shell::{Views, status_label};
use super::types::ElectionView;

/// A family's samples for one group's view: extra labels and the value.
type Samples<'a> = &'a dyn Fn(&ElectionView) -> Vec<(String, u64)>;

#[derive(Debug, Default)]
pub struct ElectionMetrics {
    transitions: AtomicU64,
    published: AtomicU64,
    rejected: AtomicU64,
    /// Rendered per-group lines, replaced on every view change.
    groups: Mutex<String>,
}

impl ElectionMetrics {
    pub fn transition(&self) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the per-group families, each family's lines together (the text format asks it).
    pub fn set_views(&self, views: &Views) {
        let mut out = String::new();
        let mut family = |name: &str, text: &str, samples: Samples| {
            let _ = write!(out, "# HELP {name} {text}\n# TYPE {name} gauge\n");
            for (group, v) in views {
                let g = escape(group);
                for (labels, value) in samples(v) {
                    let _ = writeln!(out, "{name}{{group=\"{g}\"{labels}}} {value}");
                }
            }
        };
        family(
            "warren_election_status",
            "1 for the status each group's election has on this member.",
            &|v| {
                ["none", "in-progress", "no-quorum", "finished"]
                    .iter()
                    .map(|s| (format!(",status=\"{s}\""), u64::from(status_label(v) == *s)))
                    .collect()
            },
        );
        family("warren_election_term", "The election term each group is in, as this member sees it.", &|v| {
            vec![(String::new(), v.term)]
        });
        family(
            "warren_election_leader",
            "The leader each group has on this member (empty: none while not finished).",
            &|v| vec![(format!(",leader=\"{}\"", v.leader_id.as_deref().map(escape).unwrap_or_default()), 1)],
        );
        family(
            "warren_election_alive",
            "Group members that may vote as this member sees them, itself included.",
            &|v| vec![(String::new(), v.alive as u64)],
        );
        family(
            "warren_election_population",
            "Group members counted for quorum as this member knows them (quorum: alive > population / 2).",
            &|v| vec![(String::new(), v.population as u64)],
        );
        *self.groups.lock().unwrap_or_else(|e| e.into_inner()) = out;
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = write!(out, "# HELP {name} {text}\n# TYPE {name} {kind}\n");
        };
        out.push_str(&self.groups.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, text, v) in [
            ("warren_election_transitions_total", "Election view changes on this member.", &self.transitions),
            (
                "warren_election_rumors_published_total",
                "Election rumors this member published.",
                &self.published,
            ),
            (
                "warren_election_rumors_rejected_total",
                "Election rumors refused as malformed.",
                &self.rejected,
            ),
        ] {
            help(&mut out, name, "counter", text);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}

/// Prometheus label values escape backslash, quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{ElectionStatus, ElectionView, Reason};

    #[test]
    fn renders_each_group_and_the_counters() {
        let m = ElectionMetrics::default();
        let mut views = Views::new();
        views.insert(
            "db.default".into(),
            ElectionView {
                status: ElectionStatus::ElectionFinished,
                term: 3,
                leader_id: Some("abc".into()),
                reason: Reason::Elected { leader: "abc".into() },
                warning: None,
                alive: 3,
                population: 5,
            },
        );
        views.insert("queue.default".into(), ElectionView::initial());
        m.set_views(&views);
        m.transition();
        m.rejected();
        let text = m.render();
        for line in [
            "warren_election_status{group=\"db.default\",status=\"finished\"} 1\n",
            "warren_election_status{group=\"db.default\",status=\"none\"} 0\n",
            "warren_election_term{group=\"db.default\"} 3\n",
            "warren_election_leader{group=\"db.default\",leader=\"abc\"} 1\n",
            "warren_election_transitions_total 1\n",
            "warren_election_rumors_rejected_total 1\n",
            "warren_election_rumors_published_total 0\n",
            "warren_election_alive{group=\"db.default\"} 3\n",
            "warren_election_population{group=\"db.default\"} 5\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // Each family's lines are together, both groups' included.
        let families: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(['{', ' ']).next().unwrap())
            .collect();
        let mut seen: Vec<&str> = families.clone();
        seen.dedup();
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(seen.len(), unique.len(), "a family is interleaved: {text}");
        assert!(text.contains("warren_election_term{group=\"queue.default\"} 0\n"), "{text}");
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
