//! The I/O-free index of what the API server holds: Services, EndpointSlices and Pods, fed with the
//! watchers' events. A re-list (after `410 Gone`, or a first list) is buffered and replaces the
//! kind's objects at once when it completes, so that the mesh never sees a half-listed cluster;
//! until every kind has been listed once the index is not synced and the controller serves nobody.

use std::collections::BTreeMap;

use super::objects::{Key, PodRecord, ServiceRecord, SliceRecord};
use crate::policy::{HttpRouteGroupRecord, HttpRouteRecord, TrafficSplitRecord, TrafficTargetRecord};

/// One watcher event, for one kind (`kube::runtime::watcher::Event`, with the object already
/// reduced to its record).
#[derive(Clone, Debug)]
pub enum Event<T> {
    Apply(T),
    /// The object at this place is gone.
    Delete(Key),
    /// A (re-)list starts.
    Init,
    InitApply(T),
    /// The (re-)list is complete: what it did not list is gone.
    InitDone,
}

/// The objects of one kind.
#[derive(Debug)]
pub struct Store<T> {
    items: BTreeMap<Key, T>,
    relisting: Option<BTreeMap<Key, T>>,
    synced: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self { items: BTreeMap::new(), relisting: None, synced: false }
    }
}

impl<T: PartialEq> Store<T> {
    /// Applies one event; true if what the store holds changed.
    pub fn apply(&mut self, event: Event<T>, key: impl Fn(&T) -> Key) -> bool {
        match event {
            Event::Apply(t) => {
                let k = key(&t);
                if self.items.get(&k) == Some(&t) {
                    return false;
                }
                self.items.insert(k, t);
                true
            }
            Event::Delete(k) => self.items.remove(&k).is_some(),
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Event::InitApply(t) => {
                let k = key(&t);
                self.relisting.get_or_insert_with(BTreeMap::new).insert(k, t);
                false
            }
            Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let first = !self.synced;
                self.synced = true;
                let changed = listed != self.items;
                self.items = listed;
                changed || first
            }
        }
    }

    pub fn get(&self, key: &Key) -> Option<&T> {
        self.items.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.values()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn synced(&self) -> bool {
        self.synced
    }
}

/// Everything the controller knows from the API server.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    pub services: Store<ServiceRecord>,
    pub slices: Store<SliceRecord>,
    pub pods: Store<PodRecord>,
    /// SMI TrafficSplits and GAMMA HTTPRoutes: listed empty where their CRD is not installed.
    pub splits: Store<TrafficSplitRecord>,
    pub http_routes: Store<HttpRouteRecord>,
    /// SMI access control (TrafficTargets and HTTPRouteGroups), likewise.
    pub targets: Store<TrafficTargetRecord>,
    pub route_groups: Store<HttpRouteGroupRecord>,
}

fn service_key(s: &ServiceRecord) -> Key {
    (s.namespace.clone(), s.name.clone())
}

fn slice_key(s: &SliceRecord) -> Key {
    (s.namespace.clone(), s.name.clone())
}

impl ClusterIndex {
    pub fn service(&mut self, e: Event<ServiceRecord>) -> bool {
        self.services.apply(e, service_key)
    }

    pub fn slice(&mut self, e: Event<SliceRecord>) -> bool {
        self.slices.apply(e, slice_key)
    }

    pub fn pod(&mut self, e: Event<PodRecord>) -> bool {
        self.pods.apply(e, PodRecord::key)
    }

    pub fn split(&mut self, e: Event<TrafficSplitRecord>) -> bool {
        self.splits.apply(e, |s| s.object.key())
    }

    pub fn http_route(&mut self, e: Event<HttpRouteRecord>) -> bool {
        self.http_routes.apply(e, |r| r.object.key())
    }

    pub fn traffic_target(&mut self, e: Event<TrafficTargetRecord>) -> bool {
        self.targets.apply(e, |t| t.object.key())
    }

    pub fn route_group(&mut self, e: Event<HttpRouteGroupRecord>) -> bool {
        self.route_groups.apply(e, |g| g.object.key())
    }

    /// Every kind has been listed at least once (or found not installed).
    pub fn synced(&self) -> bool {
        self.services.synced()
            && self.slices.synced()
            && self.pods.synced()
            && self.splits.synced()
            && self.http_routes.synced()
            && self.targets.synced()
            && self.route_groups.synced()
    }
}

#[cfg(test)]
mod tests {
    use super::super::objects::fixtures::pod;
    use super::*;

    #[test]
    fn a_relist_replaces_the_kind_at_once_and_drops_what_it_did_not_list() {
        let mut idx = ClusterIndex::default();
        assert!(!idx.synced());
        idx.pod(Event::Init);
        idx.pod(Event::InitApply(pod("shop", "a", "web", &["10.1.0.1"], "", true)));
        assert!(idx.pods.is_empty(), "nothing shows until the list is complete");
        assert!(idx.pod(Event::InitDone));
        assert_eq!(idx.pods.len(), 1);
        assert!(!idx.synced(), "services and slices are not listed yet");
        idx.service(Event::Init);
        idx.service(Event::InitDone);
        idx.slice(Event::Init);
        assert!(idx.slice(Event::InitDone), "a first (empty) list is a change");
        idx.split(Event::Init);
        idx.split(Event::InitDone);
        assert!(!idx.synced(), "HTTPRoutes are not listed (or found absent) yet");
        idx.http_route(Event::Init);
        idx.http_route(Event::InitDone);
        idx.traffic_target(Event::Init);
        idx.traffic_target(Event::InitDone);
        assert!(!idx.synced(), "HTTPRouteGroups are not listed (or found absent) yet");
        idx.route_group(Event::Init);
        idx.route_group(Event::InitDone);
        assert!(idx.synced());

        // A watch resumed after 410 Gone: a new list, in which `a` is gone and `b` appeared.
        idx.pod(Event::Init);
        idx.pod(Event::InitApply(pod("shop", "b", "web", &["10.1.0.2"], "", true)));
        assert_eq!(idx.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a"], "the old view stays meanwhile");
        assert!(idx.pod(Event::InitDone));
        assert_eq!(idx.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["b"]);
        // The same list again changes nothing.
        idx.pod(Event::Init);
        idx.pod(Event::InitApply(pod("shop", "b", "web", &["10.1.0.2"], "", true)));
        assert!(!idx.pod(Event::InitDone));
    }

    #[test]
    fn applies_and_deletes_report_whether_anything_changed() {
        let mut idx = ClusterIndex::default();
        let a = pod("shop", "a", "web", &["10.1.0.1"], "v1", true);
        assert!(idx.pod(Event::Apply(a.clone())));
        assert!(!idx.pod(Event::Apply(a.clone())), "the same object again (a resync)");
        let moved = PodRecord { ips: vec!["10.1.0.9".parse().unwrap()], ..a.clone() };
        assert!(idx.pod(Event::Apply(moved)));
        assert!(idx.pod(Event::Delete(a.key())));
        assert!(!idx.pod(Event::Delete(a.key())), "deleting what is not there");
    }
}
