// SPDX-License-Identifier: MPL-2.0
//! What a worker does next, from what it sees: which cameras it claims, releases and stops.
//! Pure: the worker feeds it the registry and the leases it watches, and acts on the answer.
//!
//! * A camera removed from the registry is stopped wherever it runs (by its holder).
//! * Fair share: with `n` cameras and `w` live workers, a worker claims free cameras while it
//!   holds fewer than `ceil(n / w)` (and fewer than its capacity). Cameras still free after
//!   that (other workers full) are claimed up to the capacity.
//! * A worker above the share releases one camera at a time, only when another worker has room
//!   for it and not sooner than the hold-off after its last release, so the fleet converges
//!   without flapping; never one whose pipeline still waits for the camera's clock. Releasing
//!   is *offering* (make-before-break): the holder keeps running the camera, and a worker with
//!   room takes the offered camera as it would a free one; the holder stops once the taker's
//!   pipeline stored its first frame. A worker back at its share withdraws its offers.
//! * Workers that are leaving (SIGTERM: they offer all their cameras) count for nothing.
//! * Workers try free cameras in an order of their own (a hash of worker and camera), so that
//!   several starting together do not all race for the same camera first.
//! * Early reads (`videoai-worker --early-start`, [`early`]): a camera whose holder went silent
//!   (neither its lease nor its heartbeat renewed for half the TTL) is read, before its lease
//!   lapses, by one worker with room: the first in an order of the camera's own (rendezvous
//!   hashing), so that each camera is read early once and a dead worker's cameras spread.

use std::collections::{BTreeMap, BTreeSet};

use crate::util::hash::{fnv1a, mix};

/// What a worker sees.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub me: String,
    pub capacity: usize,
    /// Valid cameras of the registry.
    pub cameras: BTreeSet<String>,
    /// Cameras whose lease another worker holds (and renewed within the TTL).
    pub held_by_others: BTreeSet<String>,
    /// Of those, the ones their holder offers: taken like free ones.
    pub offered_by_others: BTreeSet<String>,
    /// Cameras this worker offers now.
    pub offering: BTreeSet<String>,
    /// Cameras this worker runs.
    pub mine: BTreeSet<String>,
    /// Other live workers: their spare capacity.
    pub others_spare: BTreeMap<String, usize>,
    /// Whether the hold-off since the last release has passed.
    pub may_release: bool,
    /// Cameras of this worker not to release now: their pipelines still wait for the camera's
    /// clock (stopped now, their held frames would be numbered from this machine's clock, and
    /// the next reader's keys would differ).
    pub settling: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free or offered cameras to take.
    pub claim: Vec<String>,
    /// Cameras to offer to another worker.
    pub release: Vec<String>,
    /// Offers to withdraw (back at the share).
    pub withdraw: Vec<String>,
    pub stop: Vec<String>,
}

/// The fair share: cameras per live worker, rounded up.
pub fn share(cameras: usize, workers: usize) -> usize {
    cameras.div_ceil(workers.max(1))
}

pub fn plan(v: &View) -> Plan {
    let mut p = Plan {
        stop: v
            .mine
            .iter()
            .filter(|c| !v.cameras.contains(*c))
            .cloned()
            .collect(),
        ..Plan::default()
    };
    let mut held = v.mine.len() - p.stop.len();
    let workers = 1 + v.others_spare.len();
    let target = share(v.cameras.len(), workers).min(v.capacity);
    let mut free: Vec<&String> = v
        .cameras
        .iter()
        .filter(|c| {
            !v.mine.contains(*c)
                && (!v.held_by_others.contains(*c) || v.offered_by_others.contains(*c))
        })
        .collect();
    free.sort_by_key(|c| fnv1a(format!("{}/{}", v.me, c).as_bytes()));
    let others_room: usize = v.others_spare.values().sum();
    // Beyond the share only when the others cannot take the rest.
    let limit = if free.len() > others_room {
        v.capacity
    } else {
        target
    };
    for c in free {
        if held >= limit {
            break;
        }
        p.claim.push(c.clone());
        held += 1;
    }
    if held <= target {
        p.withdraw = v.offering.iter().cloned().collect();
    }
    let offered = v.offering.len();
    if p.claim.is_empty() && held > target + offered && v.may_release && others_room > offered {
        let kept: Vec<&String> = v
            .mine
            .iter()
            .filter(|c| {
                v.cameras.contains(*c) && !v.settling.contains(*c) && !v.offering.contains(*c)
            })
            .collect();
        // The one this worker would try last: the others are likelier to want it.
        if let Some(c) = kept
            .into_iter()
            .max_by_key(|c| fnv1a(format!("{}/{}", v.me, c).as_bytes()))
        {
            p.release.push(c.clone());
        }
    }
    p
}

/// Early reads ([`crate::fleet::worker`]): of the cameras whose holder went silent, the ones
/// `me` reads before their leases lapse. `spare` is the room of every live worker that may
/// read (`me` included, silent workers left out). Each camera goes to the first worker with
/// room left in the camera's own order of workers (a hash of worker and camera), the cameras
/// taken in name order, so that every worker that sees the same decides the same.
pub fn early(me: &str, silent: &BTreeSet<String>, spare: &BTreeMap<String, usize>) -> Vec<String> {
    let mut room = spare.clone();
    let mut mine = Vec::new();
    for camera in silent {
        let first = room
            .iter()
            .filter(|(_, n)| **n > 0)
            .min_by_key(|(w, _)| mix(fnv1a(format!("{w}/{camera}").as_bytes())))
            .map(|(w, _)| w.clone());
        if let Some(w) = first {
            *room.get_mut(&w).expect("listed") -= 1;
            if w == me {
                mine.push(camera.clone());
            }
        }
    }
    mine
}

/// What a renewal refused by compare-and-set means, from the lease key's current value (read
/// after the refusal: `None` when it aged out or was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The value is this worker's own: an update whose answer was lost, but which landed. The
    /// lease is still held; go on from the newer revision.
    OwnAnswerLost,
    /// A taker of this worker's offer (it names this worker as `from`): run until it stored.
    HandingOverTo(String),
    /// Someone else took it (it aged out: this worker could not renew it for a TTL): run until
    /// the new holder stored, then stop with EOS.
    LostTo(String),
    /// Nobody holds it: take it again.
    Free,
}

/// Decides after a refused renewal (see [`Refused`]): the lease counts as lost only when
/// another worker's value holds it, never because of this worker's own newer revision.
pub fn refused_renewal(me: &str, current: Option<&super::registry::Lease>) -> Refused {
    match current {
        None => Refused::Free,
        Some(lease) if lease.worker == me => Refused::OwnAnswerLost,
        Some(lease) if lease.from.as_deref() == Some(me) => {
            Refused::HandingOverTo(lease.worker.clone())
        }
        Some(lease) => Refused::LostTo(lease.worker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::registry::Lease;

    fn lease(worker: &str, from: Option<&str>) -> Lease {
        Lease {
            worker: worker.into(),
            from: from.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn a_refused_renewal_of_a_lease_still_this_worker_s_keeps_the_camera() {
        // The update timed out but landed: the key holds this worker's own value at a newer
        // revision. Before, the worker took that for someone else's and stopped the pipeline
        // (without EOS).
        assert_eq!(
            refused_renewal("w1", Some(&lease("w1", None))),
            Refused::OwnAnswerLost
        );
        // Also while a handover from another worker to this one is in progress.
        assert_eq!(
            refused_renewal("w1", Some(&lease("w1", Some("w2")))),
            Refused::OwnAnswerLost
        );
        assert_eq!(
            refused_renewal("w1", Some(&lease("w2", Some("w1")))),
            Refused::HandingOverTo("w2".into())
        );
        assert_eq!(
            refused_renewal("w1", Some(&lease("w2", None))),
            Refused::LostTo("w2".into())
        );
        assert_eq!(
            refused_renewal("w1", Some(&lease("w2", Some("w3")))),
            Refused::LostTo("w2".into())
        );
        assert_eq!(refused_renewal("w1", None), Refused::Free);
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn view(cameras: &[&str], mine: &[&str], others: &[(&str, usize)], held: &[&str]) -> View {
        View {
            me: "w1".into(),
            capacity: 3,
            cameras: set(cameras),
            held_by_others: set(held),
            mine: set(mine),
            others_spare: others.iter().map(|(w, n)| (w.to_string(), *n)).collect(),
            may_release: true,
            settling: BTreeSet::new(),
            offered_by_others: BTreeSet::new(),
            offering: BTreeSet::new(),
        }
    }

    #[test]
    fn a_worker_claims_its_share_and_no_more_while_others_have_room() {
        let cams = ["c1", "c2", "c3", "c4", "c5", "c6"];
        let p = plan(&view(&cams, &[], &[("w2", 3), ("w3", 3)], &[]));
        assert_eq!(p.claim.len(), 2, "{p:?}");
        // Alone: up to its capacity.
        let p = plan(&view(&cams, &[], &[], &[]));
        assert_eq!(p.claim.len(), 3, "{p:?}");
        // Others full: the rest too, up to the capacity.
        let p = plan(&view(&cams, &["c1", "c2"], &[("w2", 0)], &["c3", "c4"]));
        assert_eq!(p.claim.len(), 1, "{p:?}");
        assert!(["c5", "c6"].contains(&p.claim[0].as_str()));
    }

    #[test]
    fn above_the_share_one_camera_is_released_when_another_worker_has_room() {
        let cams = ["c1", "c2", "c3", "c4", "c5", "c6"];
        // A fourth worker joined: share 2, w1 holds 3.
        let mut v = view(
            &cams,
            &["c1", "c2", "c3"],
            &[("w2", 0), ("w3", 0), ("w4", 3)],
            &["c4", "c5", "c6"],
        );
        let p = plan(&v);
        assert_eq!((p.claim.len(), p.release.len()), (0, 1), "{p:?}");
        v.may_release = false;
        assert!(plan(&v).release.is_empty(), "hold-off");
        // Not one that still waits for its camera's clock: another, or none.
        v.may_release = true;
        let released = p.release[0].clone();
        v.settling = set(&[&released]);
        let p2 = plan(&v);
        assert_eq!(p2.release.len(), 1, "{p2:?}");
        assert_ne!(p2.release[0], released);
        v.settling = v.mine.clone();
        assert!(plan(&v).release.is_empty(), "all settling");
        // At the share: nothing moves (no flapping).
        let v = view(
            &cams,
            &["c1", "c2"],
            &[("w2", 1), ("w3", 1), ("w4", 1)],
            &["c3", "c4", "c5", "c6"],
        );
        assert_eq!(plan(&v), Plan::default());
    }

    #[test]
    fn offers_are_taken_like_free_cameras_and_withdrawn_at_the_share() {
        let cams = ["c1", "c2", "c3", "c4"];
        // w2 offers c3 (it is leaving, or above its share): w1, below its share, takes it.
        let mut v = view(&cams, &["c1"], &[("w2", 0)], &["c2", "c3", "c4"]);
        v.offered_by_others = set(&["c3"]);
        assert_eq!(plan(&v).claim, vec!["c3".to_string()]);
        // Above the share with one offer out: no second offer while it stands.
        let mut v = view(&cams, &["c1", "c2", "c3", "c4"], &[("w2", 3)], &[]);
        v.offering = set(&["c4"]);
        let p = plan(&v);
        assert_eq!((p.release.len(), p.withdraw.len()), (1, 0), "{p:?}");
        assert_ne!(p.release[0], "c4");
        v.offering = set(&["c3", "c4"]);
        assert_eq!(plan(&v), Plan::default(), "two offers out: enough");
        // Back at the share (a camera removed): offers withdrawn.
        let mut v = view(&["c1", "c2", "c3"], &["c1", "c2"], &[("w2", 0)], &["c3"]);
        v.offering = set(&["c2"]);
        assert_eq!(plan(&v).withdraw, vec!["c2".to_string()]);
    }

    #[test]
    fn a_silent_holder_s_cameras_are_read_early_once_each_within_room() {
        let silent = set(&["c1", "c2", "c3", "c4", "c5", "c6"]);
        let spare = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|(w, n)| (w.to_string(), *n)).collect()
        };
        let room = spare(&[("w1", 6), ("w2", 6), ("w3", 6)]);
        let picks: Vec<Vec<String>> = ["w1", "w2", "w3"]
            .iter()
            .map(|w| early(w, &silent, &room))
            .collect();
        // Each camera read early by exactly one worker, and spread over them.
        let mut all: Vec<&String> = picks.iter().flatten().collect();
        all.sort();
        assert_eq!(all, silent.iter().collect::<Vec<_>>(), "{picks:?}");
        assert!(
            picks.iter().filter(|p| !p.is_empty()).count() >= 2,
            "{picks:?}"
        );
        // Never beyond a worker's room: w1 with room for one reads one at most, and the one it
        // leaves goes to another worker.
        let room = spare(&[("w1", 1), ("w2", 6), ("w3", 6)]);
        let picks: Vec<Vec<String>> = ["w1", "w2", "w3"]
            .iter()
            .map(|w| early(w, &silent, &room))
            .collect();
        assert!(picks[0].len() <= 1, "{picks:?}");
        assert_eq!(picks.iter().map(Vec::len).sum::<usize>(), 6, "{picks:?}");
        // No room anywhere: nothing early; a worker not listed (silent itself) reads nothing.
        assert!(early("w1", &silent, &spare(&[("w1", 0), ("w2", 0)])).is_empty());
        assert!(early("w9", &silent, &room).is_empty());
    }

    #[test]
    fn removed_cameras_are_stopped() {
        let p = plan(&view(&["c1"], &["c1", "gone"], &[], &[]));
        assert_eq!(p.stop, vec!["gone".to_string()]);
        assert!(p.claim.is_empty() && p.release.is_empty());
    }
}
