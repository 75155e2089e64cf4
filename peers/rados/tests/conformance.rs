//! The ObjectStore conformance suite, unchanged, against RadosStore on a real (throwaway)
//! Ceph cluster: each case in a namespace of its own, over one connection per process.

use std::sync::{Arc, OnceLock};

use archip_rados::{test_cluster, Cluster, RadosStore, RadosStoreOptions};

fn connection() -> &'static Arc<Cluster> {
    static CONNECTION: OnceLock<Arc<Cluster>> = OnceLock::new();
    CONNECTION.get_or_init(|| test_cluster::shared().connect())
}

fn store(tag: &str) -> RadosStore {
    let namespace = test_cluster::unique_namespace(tag);
    RadosStore::open(connection(), test_cluster::POOL, &namespace, RadosStoreOptions::default())
        .unwrap_or_else(|e| panic!("opening the store: {e}"))
}

mod rados {
    archip_store::object_store_conformance!(super::store("cf"));
}

#[test]
fn all_cases_on_one_shared_store() {
    // Cases use unique names, so they can share a store, here concurrently.
    let store = store("cf-shared");
    std::thread::scope(|s| {
        for chunk in archip_store::conformance::CASES.chunks(8) {
            let store = &store;
            s.spawn(move || {
                for (_, case) in chunk {
                    case(store);
                }
            });
        }
    });
}
