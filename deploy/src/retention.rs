//! Which builds to delete: all but the newest few, the latest, and those a
//! host still runs.

use std::collections::BTreeSet;

use crate::Build;

/// The builds to remove from `builds` (oldest first, as
/// [`crate::ImageDir::builds`] lists them): everything except the newest
/// `keep`, the one named `latest` and every one in `deployed`.
pub fn prune_plan(
    builds: &[Build],
    keep: usize,
    latest: Option<&str>,
    deployed: &BTreeSet<String>,
) -> Vec<Build> {
    let newest_from = builds.len().saturating_sub(keep);
    builds
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            *i < newest_from && Some(b.version.as_str()) != latest && !deployed.contains(&b.version)
        })
        .map(|(_, b)| b.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_utc;

    fn builds(names: &[&str]) -> Vec<Build> {
        names
            .iter()
            .map(|n| Build {
                time: parse_utc(n).unwrap(),
                version: n.to_string(),
                path: n.into(),
            })
            .collect()
    }

    fn names(b: Vec<Build>) -> Vec<String> {
        b.into_iter().map(|b| b.version).collect()
    }

    const FIVE: [&str; 5] = [
        "2026-11-01T00:00:00Z",
        "2026-11-02T00:00:00Z",
        "2026-11-03T00:00:00Z",
        "2026-11-04T00:00:00Z",
        "2026-11-05T00:00:00Z",
    ];

    #[test]
    fn the_newest_n_stay_and_older_ones_go() {
        let plan = prune_plan(&builds(&FIVE), 2, Some(FIVE[4]), &BTreeSet::new());
        assert_eq!(names(plan), &FIVE[..3]);
    }

    #[test]
    fn a_deployed_build_stays_however_old() {
        let deployed = BTreeSet::from([FIVE[0].to_string()]);
        let plan = prune_plan(&builds(&FIVE), 2, Some(FIVE[4]), &deployed);
        assert_eq!(names(plan), &FIVE[1..3]);
    }

    #[test]
    fn the_latest_stays_even_when_newer_failed_builds_exist() {
        let plan = prune_plan(&builds(&FIVE), 1, Some(FIVE[2]), &BTreeSet::new());
        assert_eq!(names(plan), [FIVE[0], FIVE[1], FIVE[3]]);
    }

    #[test]
    fn keeping_more_than_there_are_removes_nothing() {
        assert!(prune_plan(&builds(&FIVE), 10, None, &BTreeSet::new()).is_empty());
    }
}
