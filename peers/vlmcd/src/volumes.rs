//! Per-volume in-flight accounting, for draining a volume before FLUSH, SNAPSHOT, CLOSE and
//! DELETE, without a thread waiting.
//!
//! IO enters a volume ([`Volumes::enter_io`]) unless the volume is frozen, and leaves when
//! it completes ([`Volumes::leave_io`]). A drain ([`Volumes::enter_drain`]) freezes the
//! volume, so that requests arriving from then on are parked behind it, and runs once the
//! IO that entered before it has left; when it completes ([`Volumes::leave_drain`]) the
//! volume thaws and the parked requests start in their order of arrival (up to the next
//! drain among them, which freezes the volume again).
//!
//! The map holds only volumes with something going on (IO in flight, frozen, or parked
//! requests): an entry is removed as soon as it is idle, so its size is bounded by the
//! requests vlmcd serves at once, whatever the number of volumes.

use std::collections::{HashMap, VecDeque};

use crate::name::VolName;

/// A frontend request in flight: its descriptor index and its nonce.
pub type FlightRef = (u32, u32);

/// What a drain may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainAdmit {
    /// Run now: nothing is in flight on the volume.
    Run,
    /// The volume is frozen for it; it runs when the IO in flight has left.
    AfterIo,
    /// Another drain holds the volume: parked behind it.
    Parked,
}

#[derive(Default)]
pub struct Volumes {
    map: HashMap<VolName, Vol>,
}

#[derive(Default, Debug)]
struct Vol {
    in_flight: u32,
    frozen: bool,
    /// The drain that froze the volume and waits for the IO in flight to leave.
    drainer: Option<FlightRef>,
    /// Requests that arrived while the volume was frozen, in order; `true`: a drain.
    parked: VecDeque<(FlightRef, bool)>,
}

impl Vol {
    fn idle(&self) -> bool {
        self.in_flight == 0 && !self.frozen && self.parked.is_empty()
    }
}

impl Volumes {
    /// IO on `name` wants to start: true if it entered (run it now), false if it was parked.
    pub fn enter_io(&mut self, name: &VolName, flight: FlightRef) -> bool {
        let vol = self.map.entry(*name).or_default();
        if vol.frozen {
            vol.parked.push_back((flight, false));
            return false;
        }
        vol.in_flight += 1;
        true
    }

    /// A drain of `name` wants to start.
    pub fn enter_drain(&mut self, name: &VolName, flight: FlightRef) -> DrainAdmit {
        let vol = self.map.entry(*name).or_default();
        if vol.frozen {
            vol.parked.push_back((flight, true));
            return DrainAdmit::Parked;
        }
        vol.frozen = true;
        if vol.in_flight == 0 {
            DrainAdmit::Run
        } else {
            vol.drainer = Some(flight);
            DrainAdmit::AfterIo
        }
    }

    /// IO on `name` completed; returns the drain to run now, if it was the last IO one
    /// waited for.
    pub fn leave_io(&mut self, name: &VolName) -> Option<FlightRef> {
        let vol = self.map.get_mut(name)?;
        vol.in_flight -= 1;
        let drainer = if vol.in_flight == 0 { vol.drainer.take() } else { None };
        if vol.idle() {
            self.map.remove(name);
        }
        drainer
    }

    /// A drain of `name` completed: the volume thaws. Returns the requests to run now, in
    /// order (they have entered the volume; a drain among them has frozen it again).
    pub fn leave_drain(&mut self, name: &VolName) -> Vec<FlightRef> {
        let mut start = Vec::new();
        let Some(vol) = self.map.get_mut(name) else { return start };
        vol.frozen = false;
        while let Some((flight, drain)) = vol.parked.pop_front() {
            if !drain {
                vol.in_flight += 1;
                start.push(flight);
                continue;
            }
            vol.frozen = true;
            if vol.in_flight == 0 {
                start.push(flight);
            } else {
                vol.drainer = Some(flight);
            }
            break;
        }
        if vol.idle() {
            self.map.remove(name);
        }
        start
    }

    /// Volumes with an entry (for tests).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str) -> VolName {
        VolName::new(name).unwrap()
    }

    #[test]
    fn entries_go_away_when_idle() {
        let mut v = Volumes::default();
        assert!(v.enter_io(&vol("a"), (1, 1)));
        assert!(v.enter_io(&vol("a"), (2, 1)));
        assert!(v.enter_io(&vol("b"), (3, 1)));
        assert_eq!(v.entries(), 2);
        for name in ["a", "a", "b"] {
            assert_eq!(v.leave_io(&vol(name)), None);
        }
        assert_eq!(v.entries(), 0);
        assert_eq!(v.enter_drain(&vol("a"), (4, 1)), DrainAdmit::Run);
        assert!(v.leave_drain(&vol("a")).is_empty());
        assert_eq!(v.entries(), 0);
    }

    #[test]
    fn a_drain_waits_for_earlier_io_and_holds_later_io() {
        let mut v = Volumes::default();
        let name = vol("vol");
        assert!(v.enter_io(&name, (1, 1)));
        assert!(v.enter_io(&vol("other"), (2, 1)));
        assert_eq!(v.enter_drain(&name, (3, 1)), DrainAdmit::AfterIo);
        // Later IO waits behind the drain; other volumes are not held up.
        assert!(!v.enter_io(&name, (4, 1)));
        assert!(v.enter_io(&vol("other"), (5, 1)));
        // The last earlier IO leaving lets the drain run.
        assert_eq!(v.leave_io(&name), Some((3, 1)));
        assert_eq!(v.leave_drain(&name), vec![(4, 1)]);
        assert_eq!(v.leave_io(&name), None);
        v.leave_io(&vol("other"));
        v.leave_io(&vol("other"));
        assert_eq!(v.entries(), 0);
    }

    #[test]
    fn drains_of_one_volume_run_one_at_a_time_in_order() {
        let mut v = Volumes::default();
        let name = vol("vol");
        assert_eq!(v.enter_drain(&name, (1, 1)), DrainAdmit::Run);
        assert!(!v.enter_io(&name, (2, 1)));
        assert_eq!(v.enter_drain(&name, (3, 1)), DrainAdmit::Parked);
        assert!(!v.enter_io(&name, (4, 1)));
        // The first drain ends: the IO before the second drain runs, the drain waits for it.
        assert_eq!(v.leave_drain(&name), vec![(2, 1)]);
        assert!(!v.enter_io(&name, (5, 1)), "still frozen for the second drain");
        assert_eq!(v.leave_io(&name), Some((3, 1)));
        assert_eq!(v.leave_drain(&name), vec![(4, 1), (5, 1)]);
        v.leave_io(&name);
        v.leave_io(&name);
        assert_eq!(v.entries(), 0);
        // A drain parked right behind another, with no IO between, runs at the thaw.
        assert_eq!(v.enter_drain(&name, (6, 1)), DrainAdmit::Run);
        assert_eq!(v.enter_drain(&name, (7, 1)), DrainAdmit::Parked);
        assert_eq!(v.leave_drain(&name), vec![(7, 1)]);
        assert!(v.leave_drain(&name).is_empty());
        assert_eq!(v.entries(), 0);
    }
}
