//! PAST end to end over a ring of real nodes: inserts reach k replicas on the k closest nodes
//! with verified receipts, lookups return verified bytes, reclaim needs the owner, replicas come
//! back after holders fail, and full nodes divert.

use ringvault_overlay::Config;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ringvault_past::{
    CachePolicy, FileCertificate, Kind, MemoryStore, Past, PastConfig, PastError, PastEvent,
    ReclaimCertificate, Store, StoreError, StoredObject, Usage,
};
use ringvault_testkit::TestRing;
use ringvault_types::{Contact, Duration, Id, Identity};

/// A test ring of PAST nodes, with the results their services reported.
struct Ring {
    ring: TestRing,
    events: Vec<(usize, PastEvent)>,
}

impl Ring {
    fn new(n: usize, capacity: impl Fn(usize) -> u64) -> Ring {
        Ring::with_stores(n, Config::default(), |i| MemoryStore::new(capacity(i)))
    }

    fn with_stores(n: usize, config: Config, store: impl Fn(usize) -> MemoryStore) -> Ring {
        let ring = TestRing::new(n, config, |i, me, node| {
            let key = Identity::from_secret_bytes(me.secret_bytes());
            let past = Past::new(key, Box::new(store(i))).unwrap();
            node.add_service(Box::new(past));
        });
        Ring {
            ring,
            events: Vec::new(),
        }
    }

    fn call<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(
            &mut Past,
            &mut dyn ringvault_overlay::Kbr,
            ringvault_types::Time,
            &Identity,
        ) -> R,
    ) -> R {
        self.ring.call::<Past, R>(i, f)
    }

    fn collect(&mut self) {
        for i in 0..self.ring.members.len() {
            let now = self.ring.now;
            while let Some(Some(e)) = self.ring.members[i]
                .node
                .with_service::<Past, _>(now, |p, _| p.poll_event())
            {
                self.events.push((i, e));
            }
        }
    }

    /// The result of request `req` on node `i`, if it finished.
    fn take(&mut self, i: usize, req: u64) -> Option<PastEvent> {
        self.collect();
        let pos = self
            .events
            .iter()
            .position(|(n, e)| *n == i && e.request() == req)?;
        Some(self.events.remove(pos).1)
    }

    fn advance(&mut self, d: Duration) {
        self.ring.advance(d);
    }

    fn kill(&mut self, i: usize) {
        self.ring.kill(i);
    }

    fn alive(&self, i: usize) -> bool {
        self.ring.members[i].alive
    }

    fn len(&self) -> usize {
        self.ring.members.len()
    }

    fn closest_live(&self, key: &Id, k: usize) -> Vec<usize> {
        self.ring.closest_live(key, k)
    }

    /// How node `i` holds `id`, if at all.
    fn kind(&mut self, i: usize, id: &Id) -> Option<Kind> {
        let now = self.ring.now;
        self.ring.members[i]
            .node
            .with_service::<Past, _>(now, |p, _| p.store().meta(id).ok().flatten().map(|m| m.0))
            .flatten()
    }
}

fn content(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Inserts `data` from node `from`, returning the object id.
fn insert(ring: &mut Ring, from: usize, name: &str, data: Vec<u8>, k: u8) -> Result<Id, PastError> {
    let req = ring.call(from, |past, kbr, now, me| {
        past.insert(kbr, now, me, name, data, k, 0)
    })?;
    match ring.take(from, req) {
        Some(PastEvent::Inserted(_, Ok(ins))) => {
            assert_eq!(ins.receipts.len(), k as usize);
            for r in &ins.receipts {
                r.verify(&ins.cert.id()).unwrap();
            }
            Ok(ins.cert.id())
        }
        Some(PastEvent::Inserted(_, Err(e))) => Err(e),
        None => {
            ring.advance(Duration::from_secs(31));
            panic!(
                "insert did not finish at once; later: {:?}",
                ring.take(from, req)
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn lookup(ring: &mut Ring, from: usize, id: Id) -> Result<Vec<u8>, PastError> {
    let req = ring.call(from, |past, kbr, now, _| past.lookup(kbr, now, id))?;
    match ring.take(from, req) {
        Some(PastEvent::Found(_, r)) => r.map(|f| f.content),
        None => {
            ring.advance(Duration::from_secs(31));
            match ring.take(from, req) {
                Some(PastEvent::Found(_, r)) => r.map(|f| f.content),
                other => panic!("lookup did not finish: {other:?}"),
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Which nodes hold `id` as a replica (primary or diverted).
fn holders(ring: &mut Ring, id: &Id) -> Vec<usize> {
    let alive: Vec<usize> = (0..ring.len()).filter(|&i| ring.alive(i)).collect();
    alive
        .into_iter()
        .filter(|&i| matches!(ring.kind(i, id), Some(Kind::Primary | Kind::Diverted)))
        .collect()
}

#[test]
fn objects_land_on_the_k_closest_nodes_and_read_back_from_anywhere() {
    let mut ring = Ring::new(40, |_| 10 << 20);
    let mut ids = Vec::new();
    for n in 0..30usize {
        let data = content(n * 97 + 1, n as u8);
        let id = insert(&mut ring, n % 40, &format!("obj-{n}"), data.clone(), 3).unwrap();
        let mut got = holders(&mut ring, &id);
        let mut want = ring.closest_live(&id, 3);
        got.sort();
        want.sort();
        assert_eq!(got, want, "replicas not on the 3 closest nodes");
        ids.push((id, data));
    }
    for (n, (id, data)) in ids.iter().enumerate() {
        assert_eq!(&lookup(&mut ring, (n * 7 + 3) % 40, *id).unwrap(), data);
    }
    assert_eq!(
        lookup(&mut ring, 5, Id::hash(b"nothing here")),
        Err(PastError::NotFound)
    );
}

#[test]
fn duplicates_and_strangers_are_refused_and_owners_can_reclaim() {
    let mut ring = Ring::new(24, |_| 10 << 20);
    let id = insert(&mut ring, 1, "report", content(500, 1), 3).unwrap();
    // Same owner, same name, other content: the id is taken.
    assert_eq!(
        insert(&mut ring, 1, "report", content(600, 2), 3),
        Err(PastError::Duplicate)
    );
    assert_eq!(lookup(&mut ring, 9, id).unwrap(), content(500, 1));

    // Someone else's reclaim is refused and nothing is lost.
    let stranger = Identity::from_secret_bytes([99; 32]);
    let bad = ReclaimCertificate::issue(&stranger, id, 0);
    let req = ring
        .call(7, |past, kbr, now, _| past.reclaim(kbr, now, bad, 3))
        .expect("the reclaim starts");
    ring.advance(Duration::from_secs(31));
    assert!(matches!(
        ring.take(7, req),
        Some(PastEvent::Reclaimed(_, Err(PastError::NotOwner)))
    ));
    assert_eq!(holders(&mut ring, &id).len(), 3);

    // The owner's reclaim releases every replica, with a receipt from each.
    let req = ring
        .call(1, |past, kbr, now, me| {
            let cert = ReclaimCertificate::issue(me, id, 0);
            past.reclaim(kbr, now, cert, 3)
        })
        .expect("the reclaim starts");
    match ring.take(1, req) {
        Some(PastEvent::Reclaimed(_, Ok(receipts))) => assert_eq!(receipts.len(), 3),
        other => panic!("reclaim failed: {other:?}"),
    }
    assert!(holders(&mut ring, &id).is_empty());
    // Anti-entropy does not bring it back.
    ring.advance(Duration::from_secs(70));
    assert!(holders(&mut ring, &id).is_empty());
}

#[test]
fn replicas_return_to_k_after_holders_fail() {
    let mut ring = Ring::new(40, |_| 10 << 20);
    let mut objects = Vec::new();
    for n in 0..20usize {
        let data = content(300 + n, n as u8);
        objects.push((
            insert(&mut ring, n, &format!("f{n}"), data.clone(), 3).unwrap(),
            data,
        ));
    }
    // Kill k - 1 = 2 holders of the first object, and one holder of several others.
    let first = holders(&mut ring, &objects[0].0);
    ring.kill(first[0]);
    ring.kill(first[1]);
    for (id, _) in objects.iter().skip(5).step_by(5) {
        if let Some(&h) = holders(&mut ring, id).first() {
            ring.kill(h);
        }
    }
    // Every object is still readable at once (one replica suffices).
    let reader = (0..40).find(|&i| ring.alive(i)).unwrap();
    for (id, data) in &objects {
        assert_eq!(&lookup(&mut ring, reader, *id).unwrap(), data);
    }
    // Failure detection, leaf set repair, then maintenance: k replicas on the k closest.
    ring.advance(Duration::from_secs(20));
    for (id, _) in &objects {
        let mut got = holders(&mut ring, id);
        let mut want = ring.closest_live(id, 3);
        got.sort();
        want.sort();
        assert_eq!(
            got, want,
            "object {id:?} not back on its 3 closest live nodes"
        );
    }
}

/// The last copy of an object, held only as cache by the third of its k = 3 closest nodes (a
/// former replica demoted while others were closer), becomes a replica again and is copied back
/// to k nodes: no one else holds it to offer it. The overlay cannot give the range of the 16
/// copies PAST allows when a leaf set side holds fewer than 16 nodes (L = 8, and the default
/// L = 16 in a ring larger than it), so this holds only if maintenance falls back to the range
/// of half a leaf set.
#[test]
fn a_cached_last_copy_on_one_of_the_k_closest_is_promoted_and_copied_back() {
    for leaf_set_size in [8, 16] {
        let config = Config {
            leaf_set_size,
            ..Config::default()
        };
        let owner = Identity::from_secret_bytes([9; 32]);
        let data = content(700, 7);
        let cert = FileCertificate::issue(&owner, "last", 0, &data, 3, 1_700_000_000);
        let id = cert.id();
        let keeper = {
            let ids = TestRing::new(40, config.clone(), |_, _, _| {});
            ids.closest_live(&id, 3)[2]
        };
        let mut ring = Ring::with_stores(40, config, |i| {
            let mut store = MemoryStore::new(10 << 20);
            if i == keeper {
                let copy = StoredObject {
                    cert: cert.clone(),
                    content: data.clone(),
                    kind: Kind::Cached,
                };
                store.put(copy).unwrap();
            }
            store
        });
        assert!(
            holders(&mut ring, &id).is_empty(),
            "no replica at the start"
        );
        assert_eq!(ring.kind(keeper, &id), Some(Kind::Cached));
        ring.advance(Duration::from_secs(30));
        let mut got = holders(&mut ring, &id);
        let mut want = ring.closest_live(&id, 3);
        got.sort();
        want.sort();
        assert_eq!(
            got, want,
            "L = {leaf_set_size}: not back on its 3 closest nodes"
        );
    }
}

#[test]
fn full_nodes_divert_replicas_and_full_regions_resalt() {
    // Every third node is tiny: its primaries must be diverted to roomier leaf set members.
    let mut ring = Ring::new(32, |i| if i % 3 == 0 { 2_000 } else { 4 << 20 });
    let mut diverted = 0;
    for n in 0..24usize {
        let data = content(1_000 + n, n as u8);
        let id = insert(&mut ring, n, &format!("d{n}"), data.clone(), 3).unwrap();
        for i in 0..ring.len() {
            diverted += (ring.kind(i, &id) == Some(Kind::Diverted)) as usize;
        }
        assert_eq!(lookup(&mut ring, (n + 11) % 32, id).unwrap(), data);
    }
    assert!(
        diverted > 0,
        "no replica was diverted although some primaries had no room"
    );
    // Maintenance leaves diverted replicas where they are: a primary that diverted its replica
    // (and keeps the pointer) does not fetch it back every round only to divert it again.
    let copies = |ring: &mut Ring| -> usize {
        let ids: Vec<Id> = (0..24usize)
            .map(|n| {
                let owner = ring.ring.members[n].identity.public_key();
                ringvault_past::object_id(&format!("d{n}"), &owner, 0)
            })
            .collect();
        let mut all = 0;
        for id in &ids {
            all += holders(ring, id).len();
        }
        all
    };
    let before = copies(&mut ring);
    ring.advance(Duration::from_secs(5 * 60));
    assert_eq!(
        copies(&mut ring),
        before,
        "replicas multiplied under maintenance"
    );

    // An object too large for any node: refused after re-salting, with nothing half-stored
    // reported as success.
    let err = insert(&mut ring, 4, "huge", content(3 << 20, 9), 3).unwrap_err();
    assert_eq!(err, PastError::NoSpace(4));
}

#[test]
fn abandoned_insert_attempts_leave_no_replicas_behind() {
    // Every other node is tiny, and the objects are too big to divert (size / free above
    // t_div even on a roomy node): whenever a tiny node is among an object's 3 closest the
    // attempt fails after the roomy ones stored their replicas, and the client re-salts.
    let mut ring = Ring::new(32, |i| if i % 2 == 0 { 50_000 } else { 4 << 20 });
    let mut abandoned = Vec::new();
    for n in 0..12usize {
        let name = format!("r{n}");
        let owner = ring.ring.members[n].identity.public_key();
        let result = insert(&mut ring, n, &name, content(300_000, n as u8), 3);
        let last = match result {
            Ok(id) => (0..=3u64)
                .find(|&s| ringvault_past::object_id(&name, &owner, s) == id)
                .expect("the id of one of the salts"),
            Err(e) => {
                assert_eq!(e, PastError::NoSpace(4));
                4
            }
        };
        abandoned.extend((0..last).map(|s| ringvault_past::object_id(&name, &owner, s)));
    }
    assert!(abandoned.len() >= 6, "too few re-salted inserts to test");
    ring.advance(Duration::from_secs(2));
    for id in &abandoned {
        assert_eq!(
            holders(&mut ring, id),
            Vec::<usize>::new(),
            "replicas of an abandoned attempt {id:?} are still stored"
        );
    }
}

/// A store that has lost its copies of the ids in `lost` (as a store answers once it found a
/// copy damaged on disk and discarded it); otherwise a [`MemoryStore`].
struct Losing {
    inner: MemoryStore,
    lost: Arc<Mutex<BTreeSet<Id>>>,
}

impl Losing {
    fn gone(&self, id: &Id) -> bool {
        self.lost.lock().unwrap().contains(id)
    }
}

impl Store for Losing {
    fn usage(&self) -> Usage {
        self.inner.usage()
    }
    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        self.inner.put(obj)
    }
    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        if self.gone(id) {
            return Ok(None);
        }
        self.inner.get(id)
    }
    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError> {
        if self.gone(id) {
            return Ok(None);
        }
        self.inner.meta(id)
    }
    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError> {
        self.inner.set_kind(id, kind)
    }
    fn remove(&mut self, id: &Id) -> Result<u64, StoreError> {
        self.inner.remove(id)
    }
    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError> {
        self.inner.list()
    }
    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError> {
        self.inner.put_pointer(id, holder)
    }
    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        self.inner.pointer(id)
    }
    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        self.inner.remove_pointer(id)
    }
}

/// What each member of a [`losing_ring`] has lost: its store answers "not held" for these.
type Lost = Vec<Arc<Mutex<BTreeSet<Id>>>>;

/// A ring of `n` whose stores can lose objects, with no caches (only replicas can answer) and
/// lookups steered by `lookup_heuristic`.
fn losing_ring(n: usize, lookup_heuristic: Option<u8>) -> (Ring, Lost) {
    let config = PastConfig {
        cache: CachePolicy::Off,
        lookup_heuristic,
        ..PastConfig::default()
    };
    let mut lost: Lost = Vec::new();
    let ring = TestRing::new(n, Config::default(), |_, me, node| {
        let key = Identity::from_secret_bytes(me.secret_bytes());
        let set = Arc::new(Mutex::new(BTreeSet::new()));
        lost.push(set.clone());
        let store = Losing {
            inner: MemoryStore::new(1 << 24),
            lost: set,
        };
        let past = Past::with_config(key, Box::new(store), config.clone()).unwrap();
        node.add_service(Box::new(past));
    });
    let ring = Ring {
        ring,
        events: Vec::new(),
    };
    (ring, lost)
}

#[test]
fn a_root_without_a_copy_asks_the_other_replicas_in_turn() {
    // Lookups routed plainly: the root is the first replica they meet.
    let (mut ring, lost) = losing_ring(24, None);
    let data = content(5_000, 7);
    let id = insert(&mut ring, 0, "kept-by-one", data.clone(), 3).unwrap();
    let order = ring.closest_live(&id, 3);
    let mut held = holders(&mut ring, &id);
    held.sort_unstable();
    let mut want = order.clone();
    want.sort_unstable();
    assert_eq!(held, want, "the 3 closest hold it");
    // The root and the next closest lost their copies; the third still has one. The root
    // itself asks (its lookup starts at the root: no other node on the way could answer).
    for &i in &order[..2] {
        lost[i].lock().unwrap().insert(id);
    }
    assert_eq!(
        lookup(&mut ring, order[0], id),
        Ok(data),
        "found on the third replica"
    );
    // With every copy gone the answer is a prompt "not found", not a timeout.
    lost[order[2]].lock().unwrap().insert(id);
    let req = ring
        .call(order[0], |past, kbr, now, _| past.lookup(kbr, now, id))
        .expect("the lookup starts");
    assert!(
        matches!(
            ring.take(order[0], req),
            Some(PastEvent::Found(_, Err(PastError::NotFound)))
        ),
        "a refusal at once"
    );
}

/// A root that lately declared a node among an object's closest failed answers "not found" as
/// unsettled: the asker does not fail, and routes its lookup again later, when a copy that could
/// not be had at first (here: a holder's store gives it back, as a holder taken for dead is back
/// once heard from) is found. With no failure nearby, "not found" is final at once (the
/// control), and after four unsettled tries it is final too.
#[test]
fn not_found_near_a_lately_failed_node_is_unsettled_and_asked_again() {
    let (mut ring, lost) = losing_ring(24, None);
    let data = content(5_000, 8);
    let id = insert(&mut ring, 0, "unsettled", data.clone(), 3).unwrap();
    let order = ring.closest_live(&id, 5);
    let reader = (0..24).find(|i| !order.contains(i)).unwrap();
    for &i in &order[..3] {
        lost[i].lock().unwrap().insert(id);
    }
    let stats = |ring: &mut Ring| ring.call(reader, |p, _, _, _| p.lookup_stats());
    let start = |ring: &mut Ring| {
        ring.call(reader, |past, kbr, now, _| past.lookup(kbr, now, id))
            .unwrap()
    };
    let not_found =
        |e: Option<PastEvent>| matches!(e, Some(PastEvent::Found(_, Err(PastError::NotFound))));
    // The control: nothing failed near the object, so "not found" comes at once.
    let req = start(&mut ring);
    assert!(
        not_found(ring.take(reader, req)),
        "final at once with no failure nearby"
    );
    assert_eq!(stats(&mut ring).unsettled, 0);
    // The fourth closest dies and is declared failed (keep-alives every 2 s, failure timeout
    // 6 s); the root's "not found" is then unsettled.
    ring.kill(order[3]);
    ring.advance(Duration::from_secs(9));
    let req = start(&mut ring);
    assert_eq!(
        ring.take(reader, req),
        None,
        "an unsettled refusal is not final"
    );
    assert_eq!(stats(&mut ring).unsettled, 1);
    // A holder has its copy again before the next try, which finds it.
    lost[order[2]].lock().unwrap().remove(&id);
    ring.advance(Duration::from_millis(1500));
    match ring.take(reader, req) {
        Some(PastEvent::Found(_, Ok(f))) => assert_eq!(f.content, data),
        other => panic!("the second try did not find it: {other:?}"),
    }
    assert_eq!(stats(&mut ring).resent, 1, "routed a second time");
    // The fifth closest dies too, and no copy is left: asked again after 1, 2 and 4 s, then
    // final.
    lost[order[2]].lock().unwrap().insert(id);
    ring.kill(order[4]);
    ring.advance(Duration::from_secs(9));
    let before = stats(&mut ring);
    let req = start(&mut ring);
    ring.advance(Duration::from_secs(6));
    assert_eq!(ring.take(reader, req), None, "still asking after 6 s");
    ring.advance(Duration::from_secs(2));
    assert!(
        not_found(ring.take(reader, req)),
        "not found after the fourth try"
    );
    let after = stats(&mut ring);
    assert_eq!(after.unsettled - before.unsettled, 3);
    assert_eq!(after.resent - before.resent, 3);
}
