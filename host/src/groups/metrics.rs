//! The gossiped config and file counters for `/metrics`: the apply task publishes its inbox's
//! counters here; the gateway renders them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::inbox::{Counters, Kind, Outcome};

#[derive(Debug, Default)]
pub struct GroupMetrics {
    counts: [[AtomicU64; 5]; 2],
}

impl GroupMetrics {
    pub fn publish(&self, counters: &Counters) {
        for (row, values) in self.counts.iter().zip(counters) {
            for (cell, v) in row.iter().zip(values) {
                cell.store(*v, Ordering::Relaxed);
            }
        }
    }

    pub fn get(&self, kind: Kind, outcome: Outcome) -> u64 {
        self.counts[kind as usize][outcome as usize].load(Ordering::Relaxed)
    }

    /// Prometheus text: `warren_service_group_rumors_total{kind,outcome}`.
    pub fn render(&self) -> String {
        let name = "warren_service_group_rumors_total";
        let mut out = format!(
            "# HELP {name} Gossiped service configs and files, by what this supervisor did with them.\n# TYPE {name} counter\n"
        );
        for kind in Kind::ALL {
            for outcome in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\",outcome=\"{}\"}} {}",
                    kind.label(),
                    outcome.label(),
                    self.get(kind, outcome)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_kind_and_outcome() {
        let m = GroupMetrics::default();
        let mut c: Counters = [[0; 5]; 2];
        c[Kind::File as usize][Outcome::Invalid as usize] = 3;
        m.publish(&c);
        let text = m.render();
        assert!(
            text.contains("warren_service_group_rumors_total{kind=\"file\",outcome=\"invalid\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("{kind=\"config\",outcome=\"applied\"} 0\n"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 10);
    }
}
