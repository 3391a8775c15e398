//! How many leases each live node should hold: the same answer on every node that sees the
//! same nodes, so nodes agree without talking to each other.

/// The number of leases node `me` should hold when `leases` leases are shared by the live
/// nodes `nodes`: `leases / nodes`, plus one for the first `leases % nodes` nodes in id order.
/// Every node gets `floor` or `ceil` of the mean and the targets add up to `leases`, so no node
/// holds more than `ceil(leases / nodes)` and none sits idle while another holds two more.
/// A node that does not see itself among `nodes` (it has just announced itself) counts
/// itself in.
pub(crate) fn target(leases: usize, nodes: &[String], me: &str) -> usize {
    let mut ids: Vec<&str> = nodes.iter().map(String::as_str).collect();
    if !ids.contains(&me) {
        ids.push(me);
    }
    ids.sort_unstable();
    ids.dedup();
    let rank = ids.iter().position(|id| *id == me).unwrap_or(0);
    let count = ids.len();
    leases / count + usize::from(rank < leases % count)
}

/// Which of the leases this node holds to give back when it holds `excess` more than its
/// target: the ones it acquired last (they have done the least work here), by name when equal.
pub(crate) fn to_release(held: &[(String, i64)], excess: usize) -> Vec<&str> {
    let mut held: Vec<&(String, i64)> = held.iter().collect();
    // (name, acquisition order): the latest acquisitions last.
    held.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    held.iter()
        .rev()
        .take(excess)
        .map(|(name, _)| name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn targets_add_up_and_differ_by_at_most_one() {
        for leases in 0..20 {
            for count in 1..7 {
                let nodes: Vec<String> = (0..count).map(|i| format!("n{i}")).collect();
                let targets: Vec<usize> = nodes.iter().map(|n| target(leases, &nodes, n)).collect();
                assert_eq!(
                    targets.iter().sum::<usize>(),
                    leases,
                    "{leases} over {count}"
                );
                let ceil = leases.div_ceil(count);
                assert!(targets.iter().all(|t| *t <= ceil), "{targets:?}");
                let (min, max) = (targets.iter().min(), targets.iter().max());
                assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1));
            }
        }
    }

    #[test]
    fn six_over_four_moves_work_to_the_newcomer() {
        let three = ids(&["a", "b", "c"]);
        assert_eq!(target(6, &three, "c"), 2);
        let four = ids(&["a", "b", "c", "d"]);
        let targets: Vec<usize> = four.iter().map(|n| target(6, &four, n)).collect();
        assert_eq!(targets, [2, 2, 1, 1]);
    }

    #[test]
    fn a_node_not_yet_seen_counts_itself_in() {
        assert_eq!(target(6, &ids(&["a", "b"]), "c"), 2);
        assert_eq!(target(3, &[], "a"), 3);
    }

    #[test]
    fn the_latest_acquisitions_go_first() {
        let held = vec![
            ("x".to_owned(), 3),
            ("y".to_owned(), 9),
            ("z".to_owned(), 5),
        ];
        assert_eq!(to_release(&held, 2), ["y", "z"]);
        assert!(to_release(&held, 0).is_empty());
    }
}
