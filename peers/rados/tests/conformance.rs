//! The ObjectStore conformance suite, unchanged, against RadosStore on a real (throwaway)
//! Ceph cluster: each case in a namespace of its own, over a connection of its own.
//!
//! The connection lives in the store and is shut down when the case drops it. It must not
//! be kept in a static: a librados handle still connected when the process exits races its
//! own threads against the C++ static destructors and may abort (`std::out_of_range`,
//! `map::at`) after the test has passed.

use archip_rados::{test_cluster, RadosStore, RadosStoreOptions};

fn store(tag: &str) -> RadosStore {
    let namespace = test_cluster::unique_namespace(tag);
    let connection = test_cluster::shared().connect();
    RadosStore::open(&connection, test_cluster::POOL, &namespace, RadosStoreOptions::default())
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
