//! What an identity adds to an idle peer, in heap bytes: 1,000 peers
//! admitted without and with one (no `allow`, and with a 3-method one the
//! same for every peer, so shared; without a name too, as protoo-bench's
//! tokens),
//! counted by a counting allocator (`stats_alloc`). Issue #26's target: at
//! most 200 bytes.

mod common;

use std::alloc::System;
use std::time::{Duration, SystemTime};

use common::pair;
use protoo_core::{Identity, Joined, Rooms};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PEERS: usize = 1_000;

/// Heap bytes per idle peer admitted with what `identity` makes.
async fn bytes_per_peer(identity: impl Fn(&str) -> Option<Identity>) -> isize {
    let rooms: Rooms = Rooms::new();
    // The first admission with an identity starts the expiry task: once.
    let (t, _r) = pair();
    let warm = rooms.admit("warm", "w");
    let warm = match identity("w") {
        Some(id) => warm.identity(Identity::new("w", "warm", id.expires_at())),
        None => warm,
    };
    let _warm = warm.join(t, ()).await.unwrap();
    let mut held = Vec::with_capacity(PEERS);
    let ids: Vec<String> = (0..PEERS).map(|n| format!("peer-{n:04}")).collect();
    let region = Region::new(GLOBAL);
    for id in &ids {
        let (transport, remote) = pair();
        let admit = rooms.admit("r", id.as_str());
        let admit = match identity(id) {
            Some(identity) => admit.identity(identity),
            None => admit,
        };
        let Joined { peer, events, .. } = admit.join(transport, ()).await.unwrap();
        held.push((peer, events, remote));
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let change = region.change();
    // Closed and freed before the next count starts: what they free is not
    // the next peers'.
    drop((held, _warm, rooms));
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    (change.bytes_allocated as isize - change.bytes_deallocated as isize) / PEERS as isize
}

#[tokio::test(flavor = "current_thread")]
async fn an_identity_adds_at_most_200_bytes_per_idle_peer() {
    let exp = SystemTime::now() + Duration::from_secs(3600);
    // Once first: what the first peers of a process allocate once (lazy
    // statics) is not a peer's.
    let _ = bytes_per_peer(|_| None).await;
    let plain = bytes_per_peer(|_| None).await;
    let bare = bytes_per_peer(|id| Some(Identity::new(id, "r", exp))).await;
    let with = bytes_per_peer(|id| Some(Identity::new(id, "r", exp).with_name("A Name"))).await;
    let allow = bytes_per_peer(|id| {
        Some(Identity::new(id, "r", exp).with_allow(["join", "chat", "produce"]))
    })
    .await;
    println!(
        "idle peer: {plain} B; with an identity: +{} B (+{} B without a name); \
         with a 3-method allow: +{} B",
        with - plain,
        bare - plain,
        allow - plain
    );
    assert!(with - plain <= 200, "an identity adds {} B", with - plain);
}
