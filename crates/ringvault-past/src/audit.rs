//! Storage audits (`PastConfig::audit`): leaf set members check that the nodes which claim to
//! hold replicas really keep the data.
//!
//! At random times (every `interval` on average) a node picks an object it holds that a leaf
//! set member has claimed to hold too (that member offered it in maintenance) and a fresh nonce
//! the member cannot predict, and asks for BLAKE3(nonce, offset, a byte range of the content)
//! within the member's round-trip time plus `slack`: a node that dropped the data would have to
//! fetch the range from another holder, one more round trip it does not have time for. The
//! auditor checks the answer against its own copy.
//!
//! - A **wrong** answer is signed by the audited node: evidence that anyone holding the object
//!   can check. Every leaf set member it reaches that can check it treats the node as suspect.
//! - A **missing** answer (late, or "not held" for an object the auditor counts it a holder
//!   of) is asked once more with a new nonce (a lost message is not an accusation), and then
//!   reported to the auditor's leaf set as an accusation, which cannot be proven. The report
//!   carries the object (certificate and content, which any receiver verifies), so every leaf
//!   set member, holder of the object or not, audits the accused node itself and reports it in
//!   turn only if it fails that audit too. A node is suspect once a majority of its leaf set
//!   (as the judging node sees its size) reported it within `window`: correct nodes report only
//!   what they saw fail, so Byzantine auditors alone, a minority of any leaf set, cannot frame
//!   a correct node.
//!
//! A suspect stops counting as a replica holder for the nodes that suspect it: maintenance
//! and inserts routed through them pass it over, so new replicas are made on the next closest
//! nodes, and its offers are not taken as holding.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Duration, Id, Identity, PublicKey, Signature, Time};

use crate::message::PastMessage;
use crate::past::Past;
use crate::FileCertificate;

const PROOF_DOMAIN: &[u8] = b"ringvault audit proof v1\0";
const DIGEST_DOMAIN: &[u8] = b"ringvault audit digest v1\0";
/// Challenges one node answers per challenger per interval; more are dropped (they bound what
/// an auditor can make a node read and hash).
const MAX_ANSWERS: u32 = 8;
/// Challenges one auditor sends one node per interval (first tries, second tries and
/// re-audits): with both intervals out of step, at most twice this reaches one answering
/// interval, under [`MAX_ANSWERS`], so a correct node never drops a correct auditor's challenge.
const MAX_CHALLENGES: u32 = 3;
/// Audits in flight at once per auditor.
const MAX_OUTSTANDING: usize = 8;
/// Random draws for an object small enough to audit before an audit is skipped.
const SMALL_DRAWS: usize = 8;

/// How audits run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Mean time between two audits this node starts.
    pub interval: Duration,
    /// Time allowed beyond the audited node's round-trip time (reading and hashing a range).
    /// The second try, after a first one went unanswered, allows four times as much: a node
    /// slowed by load gets a second chance before it is accused.
    pub slack: Duration,
    /// How long an accusation counts.
    pub window: Duration,
    /// The longest byte range asked for.
    pub max_range: u32,
    /// Only objects up to this size are audited: an accusation carries the object to every
    /// leaf set member, so each can audit the accused itself.
    pub max_object: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            interval: Duration::from_secs(60),
            slack: Duration::from_millis(250),
            window: Duration::from_secs(3600),
            max_range: 1024,
            max_object: 64 << 10,
        }
    }
}

/// A challenge: hash `len` bytes at `offset` of object `object` with `nonce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Fresh for each audit, unpredictable to the audited node.
    pub nonce: Id,
    /// The object.
    pub object: Id,
    /// The content it is asked about (an object id does not fix its content: an owner can
    /// certify two): a node holding other content answers "not held", and evidence against
    /// it counts only with this content.
    pub content_hash: [u8; 32],
    /// Where the range starts.
    pub offset: u64,
    /// How long it is.
    pub len: u32,
}

impl Challenge {
    /// The answer `content` gives.
    pub fn digest(&self, content: &[u8]) -> [u8; 32] {
        let start = usize::try_from(self.offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let end = start.saturating_add(self.len as usize).min(content.len());
        *Id::hash_parts(&[
            DIGEST_DOMAIN,
            self.nonce.as_bytes(),
            &self.offset.to_le_bytes(),
            &content[start..end],
        ])
        .as_bytes()
    }
}

/// An audited node's signed answer: the digest, or `None` for "not held".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// What was asked.
    pub challenge: Challenge,
    /// The digest of the range, or `None`.
    pub digest: Option<[u8; 32]>,
    /// The audited node's key (its id is the key's hash).
    pub node_key: PublicKey,
    /// Its signature over the fields above.
    pub signature: Signature,
}

impl Proof {
    fn signed_bytes(challenge: &Challenge, digest: &Option<[u8; 32]>, key: &PublicKey) -> Vec<u8> {
        let body = postcard::to_allocvec(&(challenge, digest, key)).unwrap_or_default();
        [PROOF_DOMAIN, &body].concat()
    }

    /// `node` answers `challenge` from `content` (`None`: not held).
    pub fn issue(node: &Identity, challenge: Challenge, content: Option<&[u8]>) -> Self {
        let digest = content.map(|c| challenge.digest(c));
        let node_key = node.public_key();
        let signature = node.sign(&Self::signed_bytes(&challenge, &digest, &node_key));
        Proof {
            challenge,
            digest,
            node_key,
            signature,
        }
    }

    /// The node that signed it.
    pub fn node(&self) -> Id {
        self.node_key.id()
    }

    /// Whether its signature verifies.
    pub fn signed(&self) -> bool {
        self.node_key
            .verify(
                &Self::signed_bytes(&self.challenge, &self.digest, &self.node_key),
                &self.signature,
            )
            .is_ok()
    }

    /// Whether it is signed and claims a digest that `content` (the object's true content)
    /// does not give: evidence that its signer does not hold the data.
    pub fn refuted_by(&self, content: &[u8]) -> bool {
        self.signed()
            && self
                .digest
                .is_some_and(|d| d != self.challenge.digest(content))
    }
}

/// What audits counted on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Challenges sent (first and second tries).
    pub sent: u64,
    /// Audits answered correctly.
    pub passed: u64,
    /// Audits answered wrongly (signed evidence).
    pub failed: u64,
    /// Audits not answered in time twice in a row (accusations made).
    pub missed: u64,
    /// Challenges this node answered.
    pub answered: u64,
    /// Challenges dropped over the per-challenger bound.
    pub dropped: u64,
    /// Accusations received from leaf set members.
    pub accusations: u64,
    /// Bytes of audit messages sent (challenges, proofs, accusations).
    pub bytes: u64,
}

struct Outstanding {
    challenge: Challenge,
    target: Contact,
    /// The object's replication factor (whether the target should hold it).
    k: u8,
    deadline: Time,
    /// The second try (after a first one went unanswered).
    retry: bool,
    /// Whether this node saw the target claim the object (offer it in maintenance): only then
    /// is "not held" a failure. A node asked about an object it never claimed (one an
    /// accusation names, which a faulty accuser may have made up) may truly not hold it.
    claimed: bool,
}

/// Copies of objects this node does not hold, taken from accusations to audit the accused.
const MAX_BORROWED: usize = 16;
/// Accusations from one node this node checks per interval.
const MAX_RECHECKS: u32 = 2;

/// One node's audit state.
pub(crate) struct Audits {
    pub(crate) config: AuditConfig,
    /// Derives nonces and choices: keyed by the node's secret, so nobody can predict them.
    prf_key: [u8; 32],
    counter: u64,
    next_at: Option<Time>,
    outstanding: BTreeMap<Id, Outstanding>,
    /// Who accused whom, and when.
    accusers: BTreeMap<Id, BTreeMap<Id, Time>>,
    /// Nodes proven to have answered wrongly, and when.
    convicted: BTreeMap<Id, Time>,
    /// Challenges answered per challenger in the current interval, and when it ends.
    answered: BTreeMap<Id, u32>,
    answered_until: Time,
    /// Suspects now (convicted, or accused by a majority of their leaf set).
    suspects: BTreeSet<Id>,
    /// Objects borrowed from accusations (verified against their certificates), and when.
    borrowed: BTreeMap<Id, (FileCertificate, Vec<u8>, Time)>,
    /// When this node last told its leaf set it accuses a node.
    reported: BTreeMap<Id, Time>,
    /// Accusations checked per accuser in the current interval (reset with `answered`).
    rechecks: BTreeMap<Id, u32>,
    /// Challenges sent per node in the current interval (reset with `answered`).
    challenged: BTreeMap<Id, u32>,
    pub(crate) stats: AuditStats,
    /// Experiments only: accuse a random neighbour at every audit instead of auditing.
    #[cfg(feature = "forge")]
    pub(crate) false_auditor: bool,
}

impl Audits {
    pub(crate) fn new(config: AuditConfig, identity: &Identity) -> Self {
        let prf_key =
            *Id::hash_parts(&[b"ringvault audit prf", &identity.secret_bytes()]).as_bytes();
        Audits {
            config,
            prf_key,
            counter: 0,
            next_at: None,
            outstanding: BTreeMap::new(),
            accusers: BTreeMap::new(),
            convicted: BTreeMap::new(),
            answered: BTreeMap::new(),
            answered_until: Time::ZERO,
            suspects: BTreeSet::new(),
            borrowed: BTreeMap::new(),
            reported: BTreeMap::new(),
            rechecks: BTreeMap::new(),
            challenged: BTreeMap::new(),
            stats: AuditStats::default(),
            #[cfg(feature = "forge")]
            false_auditor: false,
        }
    }

    fn draw(&mut self) -> Id {
        self.counter += 1;
        Id::from_bytes(*blake3::keyed_hash(&self.prf_key, &self.counter.to_le_bytes()).as_bytes())
    }

    fn draw_u64(&mut self) -> u64 {
        let b = self.draw();
        u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }

    /// When the next audit starts: uniform from a half to one and a half intervals, which keeps
    /// nodes out of step.
    fn schedule(&mut self, now: Time) {
        let i = self.config.interval.as_micros();
        let jitter = self.draw_u64() % i.max(1);
        self.next_at = Some(now + Duration::from_micros(i / 2 + jitter));
    }

    pub(crate) fn deadline(&self) -> Option<Time> {
        let first = self.outstanding.values().map(|o| o.deadline).min();
        [self.next_at, first].into_iter().flatten().min()
    }

    /// Whether `node` is a suspect here.
    pub(crate) fn is_suspect(&self, node: &Id) -> bool {
        self.suspects.contains(node)
    }

    /// The suspects.
    pub(crate) fn suspects(&self) -> &BTreeSet<Id> {
        &self.suspects
    }

    /// Starts a new counting interval when the last one ended.
    fn roll(&mut self, now: Time) {
        if now >= self.answered_until {
            self.answered.clear();
            self.rechecks.clear();
            self.challenged.clear();
            self.answered_until = now + self.config.interval;
        }
    }

    /// Recomputes the suspects at `now`: convicted ones, and those accused within the window by
    /// a majority of the leaf set `members` (this node included); accusers that have left the
    /// leaf set no longer count, or churn would add up reports from more nodes than a leaf set
    /// ever holds.
    fn judge(&mut self, now: Time, me: Id, members: &BTreeSet<Id>) {
        let window = self.config.window;
        for accusers in self.accusers.values_mut() {
            accusers.retain(|a, at| *at + window > now && (*a == me || members.contains(a)));
        }
        let leaf = members.len();
        self.accusers.retain(|_, a| !a.is_empty());
        self.convicted.retain(|_, at| *at + window.mul(24) > now);
        self.reported.retain(|_, at| *at + window > now);
        let outstanding: BTreeSet<Id> = self
            .outstanding
            .values()
            .map(|o| o.challenge.object)
            .collect();
        let keep = self.config.interval;
        self.borrowed
            .retain(|id, (_, _, at)| outstanding.contains(id) || *at + keep > now);
        let majority = leaf / 2 + 1;
        // A node this node itself saw fail is a suspect here too: it only changes where this
        // node counts replicas, which a correct node's own failed audit (or two lost
        // messages in a row) may do without a majority.
        self.suspects = self
            .accusers
            .iter()
            .filter(|(_, a)| a.len() >= majority)
            .map(|(n, _)| *n)
            .chain(self.convicted.keys().copied())
            .chain(self.reported.keys().copied())
            .collect();
    }
}

/// This node's id and its leaf set's.
fn leaf_members(kbr: &dyn Kbr) -> (Id, BTreeSet<Id>) {
    let members = kbr.neighbor_set(usize::MAX).iter().map(|c| c.id).collect();
    (kbr.local_contact().id, members)
}

impl Past {
    /// The audit timer: starts a new audit when one is due, and handles the answers that did
    /// not come in time.
    pub(crate) fn audit_tick(&mut self, kbr: &mut dyn Kbr, now: Time) {
        // PAST's timer fires for much else (maintenance, requests, writes): audits' work waits
        // for audits' own deadline.
        if self
            .audits
            .as_ref()
            .is_none_or(|a| a.deadline().is_some_and(|t| t > now))
        {
            return;
        }
        let (me, members) = leaf_members(kbr);
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        a.roll(now);
        a.judge(now, me, &members);
        let late: Vec<Id> = a
            .outstanding
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(n, _)| *n)
            .collect();
        let late: Vec<Outstanding> = late
            .iter()
            .filter_map(|n| a.outstanding.remove(n))
            .collect();
        for o in late {
            self.missed(kbr, now, o);
        }
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        match a.next_at {
            None => a.schedule(now),
            Some(t) if t <= now => {
                a.schedule(now);
                self.start_audit(kbr, now);
            }
            Some(_) => {}
        }
    }

    /// Picks a leaf set member that claims to hold an object this node holds, and challenges it.
    fn start_audit(&mut self, kbr: &mut dyn Kbr, now: Time) {
        #[cfg(feature = "forge")]
        if self.audits.as_ref().is_some_and(|a| a.false_auditor) {
            self.accuse_falsely(kbr, now);
            return;
        }
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        if a.outstanding.len() >= MAX_OUTSTANDING {
            return;
        }
        let pairs: Vec<(Id, Id)> = self
            .known
            .iter()
            .flat_map(|(id, holders)| holders.iter().map(move |h| (*id, *h)))
            .filter(|(_, h)| !a.suspects.contains(h))
            .collect();
        // A few random draws for an object small enough to audit, each one store lookup
        // (not one per object held: the store may be on disk).
        let max_object = a.config.max_object;
        let pick = (0..SMALL_DRAWS).find_map(|_| {
            let (object, node) = *pairs.get((a.draw_u64() % pairs.len().max(1) as u64) as usize)?;
            match self.store.meta(&object) {
                Ok(Some((_, size))) if size <= max_object => Some((object, node, size)),
                _ => None,
            }
        });
        let Some((object, node, size)) = pick else {
            return;
        };
        let Some(target) = kbr
            .neighbor_set(usize::MAX)
            .into_iter()
            .find(|c| c.id == node)
        else {
            return;
        };
        let Some(&k) = self.held.get(&object) else {
            return;
        };
        self.challenge(kbr, now, target, (object, size, k), (false, false));
    }

    /// Challenges `target` on `object` (`size` bytes, `k` replicas), on the copy this node
    /// holds or borrowed, within this node's bound per target. `retry`: a second try;
    /// `vouched`: "not held" is a failure even if this node never saw the target claim it.
    fn challenge(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        target: Contact,
        (object, size, k): (Id, u64, u8),
        (retry, vouched): (bool, bool),
    ) {
        let Some(rtt) = kbr.proximity(&target.id) else {
            return;
        };
        let Some((cert, _)) = self.audit_copy(&object) else {
            return;
        };
        let claimed = vouched
            || self
                .known
                .get(&object)
                .is_some_and(|h| h.contains(&target.id));
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        let sent = a.challenged.entry(target.id).or_insert(0);
        if *sent >= MAX_CHALLENGES {
            return;
        }
        *sent += 1;
        let nonce = a.draw();
        let len = a
            .config
            .max_range
            .min(u32::try_from(size).unwrap_or(u32::MAX));
        let span = size.saturating_sub(u64::from(len)).saturating_add(1);
        let offset = a.draw_u64() % span.max(1);
        let challenge = Challenge {
            nonce,
            object,
            content_hash: cert.body.content_hash,
            offset,
            len,
        };
        a.outstanding.insert(
            nonce,
            Outstanding {
                challenge,
                target,
                k,
                deadline: now + rtt + a.config.slack.mul(if retry { 4 } else { 1 }),
                retry,
                claimed,
            },
        );
        a.stats.sent += 1;
        self.send_audit(kbr, target, &PastMessage::AuditChallenge { challenge });
    }

    fn send_audit(&mut self, kbr: &mut dyn Kbr, to: Contact, m: &PastMessage) {
        let msg = crate::past::encode(m);
        if let Some(a) = self.audits.as_mut() {
            a.stats.bytes += msg.body.len() as u64;
        }
        kbr.send_direct(to, msg);
    }

    /// A good copy of `object` this node can judge answers by: its own, or one borrowed from
    /// an accusation.
    fn audit_copy(&self, object: &Id) -> Option<(FileCertificate, Vec<u8>)> {
        let own = self
            .store
            .get(object)
            .ok()
            .flatten()
            .filter(|o| o.cert.matches_content(&o.content))
            .map(|o| (o.cert, o.content));
        own.or_else(|| {
            let a = self.audits.as_ref()?;
            let (cert, content, _) = a.borrowed.get(object)?;
            Some((cert.clone(), content.clone()))
        })
    }

    /// A challenge from leaf set member `from`: answered from this node's copy, if it has a
    /// good one, else "not held"; a challenger over its bound is not answered.
    pub(crate) fn on_challenge(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Contact,
        challenge: Challenge,
    ) {
        // Only leaf set members audit this node.
        if !kbr.neighbor_set(usize::MAX).iter().any(|c| c.id == from.id) {
            return;
        }
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        a.roll(now);
        let max_object = a.config.max_object;
        let n = a.answered.entry(from.id).or_insert(0);
        if *n >= MAX_ANSWERS {
            a.stats.dropped += 1;
            return;
        }
        *n += 1;
        a.stats.answered += 1;
        // The store checks what it reads against the certificate (a damaged copy is not
        // served); a copy of the wrong length, of other content, or larger than audits ask
        // about (nobody correct asks: it is not read) is not held either.
        let small = matches!(
            self.store.meta(&challenge.object),
            Ok(Some((_, size))) if size <= max_object
        );
        let copy = match small {
            true => self.store.get(&challenge.object).ok().flatten(),
            false => None,
        }
        .filter(|o| {
            o.content.len() as u64 == o.cert.body.size
                && o.cert.body.content_hash == challenge.content_hash
        });
        let proof = Proof::issue(
            &self.identity,
            challenge,
            copy.as_ref().map(|o| o.content.as_slice()),
        );
        self.send_audit(kbr, from, &PastMessage::AuditProof { proof });
    }

    /// An answer from `from` to one of this node's challenges.
    pub(crate) fn on_proof(&mut self, kbr: &mut dyn Kbr, now: Time, from: Contact, proof: Proof) {
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        let nonce = proof.challenge.nonce;
        let fits = a.outstanding.get(&nonce).is_some_and(|o| {
            o.target.id == from.id && o.challenge == proof.challenge && proof.node() == from.id
        });
        if !fits || !proof.signed() {
            return;
        }
        let Some(o) = a.outstanding.remove(&nonce) else {
            return;
        };
        if proof.digest.is_none() && !o.claimed && now <= o.deadline {
            return; // not held, and never claimed to this node: nothing to hold against it
        }
        if now > o.deadline || proof.digest.is_none() {
            self.missed(kbr, now, o);
            return;
        }
        let Some((_, content)) = self.audit_copy(&o.challenge.object) else {
            return; // this node lost its copy: it cannot judge
        };
        if proof.refuted_by(&content) {
            if let Some(a) = self.audits.as_mut() {
                a.stats.failed += 1;
                a.convicted.insert(from.id, now);
                a.suspects.insert(from.id);
            }
            self.report(kbr, now, from.id, o.challenge.object, Some(proof));
        } else if let Some(a) = self.audits.as_mut() {
            a.stats.passed += 1;
        }
    }

    /// An audit went unanswered (or "not held"): once more with a new nonce, then reported.
    fn missed(&mut self, kbr: &mut dyn Kbr, now: Time, o: Outstanding) {
        let object = o.challenge.object;
        // Only a member that should hold the object is accused: one the replica set moved
        // away from may have let its copy go.
        let member = self
            .live_replica_set(kbr, &object, usize::from(o.k))
            .iter()
            .any(|c| c.id == o.target.id);
        if !member {
            if let Some(h) = self.known.get_mut(&object) {
                h.remove(&o.target.id);
            }
            return;
        }
        if !o.retry {
            let size = self.audit_copy(&object).map_or(0, |(_, c)| c.len() as u64);
            self.challenge(kbr, now, o.target, (object, size, o.k), (true, o.claimed));
            return;
        }
        if let Some(a) = self.audits.as_mut() {
            a.stats.missed += 1;
        }
        self.report(kbr, now, o.target.id, object, None);
    }

    /// Counts this node's own accusation of `target` and tells its leaf set, with the object
    /// (so each member can audit the target on it) and the target's wrong answer if there is
    /// one. Told once per window per target.
    fn report(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        target: Id,
        object: Id,
        evidence: Option<Proof>,
    ) {
        let (me, members) = leaf_members(kbr);
        let copy = self.audit_copy(&object);
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        a.accusers.entry(target).or_default().insert(me, now);
        let told = a.reported.contains_key(&target);
        if !told {
            a.reported.insert(target, now);
        }
        a.judge(now, me, &members);
        if told {
            return;
        }
        let Some((cert, content)) = copy else {
            return;
        };
        let msg = PastMessage::Accuse {
            target,
            cert,
            content,
            evidence,
        };
        for c in kbr.neighbor_set(usize::MAX) {
            if c.id != target {
                self.send_audit(kbr, c, &msg);
            }
        }
    }

    /// Leaf set member `from` accuses `target` over `cert`'s object: counted as its report;
    /// as proof when `evidence` is the target's signed answer and the content refutes it;
    /// otherwise this node audits the target on that object itself (within its bounds) and
    /// reports it only if that audit fails too.
    pub(crate) fn on_accuse(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Contact,
        (target, cert, content, evidence): (Id, FileCertificate, Vec<u8>, Option<Proof>),
    ) {
        let members = kbr.neighbor_set(usize::MAX);
        let me = kbr.local_contact().id;
        // Only accusations between nodes of this neighbourhood, over an object the target
        // should hold and whose content is the certified one, count.
        let Some(accused) = members.iter().find(|c| c.id == target).copied() else {
            return;
        };
        let k = cert.body.replicas;
        let object = cert.id();
        let too_big = self
            .audits
            .as_ref()
            .is_none_or(|a| content.len() as u64 > a.config.max_object);
        if too_big
            || target == me
            || !members.iter().any(|c| c.id == from.id)
            || cert.verify_content(&content).is_err()
            || !self
                .live_replica_set(kbr, &object, usize::from(k))
                .iter()
                .any(|c| c.id == target)
        {
            return;
        }
        let proven = evidence.as_ref().is_some_and(|p| {
            p.node() == target
                && p.challenge.object == object
                && p.challenge.content_hash == cert.body.content_hash
                && p.refuted_by(&content)
        });
        let ids: BTreeSet<Id> = members.iter().map(|c| c.id).collect();
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        a.stats.accusations += 1;
        a.accusers.entry(target).or_default().insert(from.id, now);
        if proven {
            a.convicted.insert(target, now);
        }
        a.judge(now, me, &ids);
        let checking = a.outstanding.values().any(|o| o.target.id == target);
        let checks = a.rechecks.entry(from.id).or_insert(0);
        if a.suspects.contains(&target)
            || a.reported.contains_key(&target)
            || checking
            || *checks >= MAX_RECHECKS
        {
            return;
        }
        *checks += 1;
        if a.borrowed.len() >= MAX_BORROWED {
            let oldest = a
                .borrowed
                .iter()
                .min_by_key(|(_, b)| b.2)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                a.borrowed.remove(&id);
            }
        }
        let size = content.len() as u64;
        if self.audit_copy(&object).is_none() {
            if let Some(a) = self.audits.as_mut() {
                a.borrowed.insert(object, (cert, content, now));
            }
        }
        // This node would hold the object if the accused failed (among its k + 1 closest):
        // then "not held" is a failure to it, as to a node that saw the claim. A made-up
        // object can so make the few nodes nearest it pass over a correct node (extra
        // replicas, no loss), never a majority of its leaf set.
        let next_in_line = kbr
            .replica_set(&object, usize::from(k) + 1)
            .iter()
            .any(|c| c.id == me);
        self.challenge(kbr, now, accused, (object, size, k), (false, next_in_line));
    }

    /// Experiments only: a false auditor accuses a leaf set member of dropping an object it
    /// should hold (one it offered), without auditing it.
    #[cfg(feature = "forge")]
    fn accuse_falsely(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let Some(a) = self.audits.as_mut() else {
            return;
        };
        let pairs: Vec<(Id, Id)> = self
            .known
            .iter()
            .flat_map(|(id, holders)| holders.iter().map(move |h| (*id, *h)))
            .filter(|(_, h)| !a.reported.contains_key(h))
            .collect();
        if pairs.is_empty() {
            return;
        }
        let (object, victim) = pairs[(a.draw_u64() % pairs.len() as u64) as usize];
        self.report(kbr, now, victim, object, None);
    }

    /// The members of `id`'s replica set as this node counts them: the `k` closest that it
    /// does not suspect.
    pub(crate) fn live_replica_set(&self, kbr: &dyn Kbr, id: &Id, k: usize) -> Vec<Contact> {
        let suspects = self.audits.as_ref().map(|a| a.suspects());
        match suspects {
            Some(s) if !s.is_empty() => kbr
                .replica_set(id, k + s.len().min(k))
                .into_iter()
                .filter(|c| !s.contains(&c.id))
                .take(k)
                .collect(),
            _ => kbr.replica_set(id, k),
        }
    }

    /// What audits counted here, and the nodes this node suspects; `None` with audits off.
    pub fn audit_report(&self) -> Option<(AuditStats, Vec<Id>)> {
        self.audits
            .as_ref()
            .map(|a| (a.stats, a.suspects().iter().copied().collect()))
    }

    /// The nodes this node itself reported (accused) within the window.
    pub fn audit_accused(&self) -> Vec<Id> {
        self.audits
            .as_ref()
            .map(|a| a.reported.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether this node suspects `node` of dropping data.
    pub fn suspects(&self, node: &Id) -> bool {
        self.audits.as_ref().is_some_and(|a| a.is_suspect(node))
    }

    /// Experiments only: this node accuses leaf set members at random instead of auditing.
    #[cfg(feature = "forge")]
    pub fn audit_falsely(&mut self) {
        if let Some(a) = self.audits.as_mut() {
            a.false_auditor = true;
        }
    }
}
