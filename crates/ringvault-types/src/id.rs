//! 256-bit identifiers on the Pastry ring.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Number of bits in an [`Id`].
pub const ID_BITS: usize = 256;
/// Number of bytes in an [`Id`].
pub const ID_BYTES: usize = 32;
/// Bits per routing digit in Pastry's default configuration (`b = 4`: base-16 digits).
pub const DEFAULT_B: u8 = 4;

/// A 256-bit identifier: a node id or a key, read as a big-endian unsigned integer on a ring of
/// size 2^256 and as a string of base-2^b digits (most significant first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Id([u8; ID_BYTES]);

impl Ord for Id {
    /// Numeric order (the bytes are big-endian), compared 64 bits at a time: ids are compared
    /// in every table lookup, so this avoids a byte-wise `memcmp`.
    fn cmp(&self, other: &Self) -> Ordering {
        for i in 0..4 {
            let a = u64::from_be_bytes(self.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let b = u64::from_be_bytes(other.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An error parsing an [`Id`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The text is not 64 characters long.
    #[error("an id is 64 hex digits, got {0} characters")]
    Length(usize),
    /// The text has a character that is not a hex digit.
    #[error("an id is written in hex digits (0-9, a-f); found {0:?}")]
    Digit(char),
}

impl Id {
    /// The id 0.
    pub const ZERO: Id = Id([0; ID_BYTES]);
    /// The largest id, 2^256 - 1.
    pub const MAX: Id = Id([0xff; ID_BYTES]);

    /// Wraps 32 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        Id(bytes)
    }

    /// The 32 big-endian bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// BLAKE3 of `data`, as an id.
    pub fn hash(data: &[u8]) -> Self {
        Id(*blake3::hash(data).as_bytes())
    }

    /// BLAKE3 over several parts, each length-prefixed so that part boundaries matter.
    pub fn hash_parts(parts: &[&[u8]]) -> Self {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Id(*h.finalize().as_bytes())
    }

    /// Number of base-2^b digits in an id: ceil(256 / b). The last digit may be shorter.
    ///
    /// `b` must be in 1..=8.
    pub fn num_digits(b: u8) -> usize {
        debug_assert!((1..=8).contains(&b));
        ID_BITS.div_ceil(b as usize)
    }

    /// Bit `i` (0 = most significant).
    pub fn bit(&self, i: usize) -> bool {
        (self.0[i / 8] >> (7 - (i % 8))) & 1 == 1
    }

    /// Digit `i` (0 = most significant) in base 2^b, `b` in 1..=8. Digits past the last return 0.
    pub fn digit(&self, i: usize, b: u8) -> u8 {
        let b = b as usize;
        let start = i * b;
        let mut d = 0u8;
        for bit in start..(start + b).min(ID_BITS) {
            d = (d << 1) | self.bit(bit) as u8;
        }
        d
    }

    /// The same id with digit `i` (base 2^b) replaced by `value`.
    pub fn with_digit(&self, i: usize, b: u8, value: u8) -> Id {
        let b = b as usize;
        let start = i * b;
        let end = (start + b).min(ID_BITS);
        let mut out = *self;
        for (k, bit) in (start..end).enumerate() {
            let v = (value >> (end - start - 1 - k)) & 1;
            let byte = &mut out.0[bit / 8];
            let mask = 1 << (7 - (bit % 8));
            if v == 1 {
                *byte |= mask;
            } else {
                *byte &= !mask;
            }
        }
        out
    }

    /// Number of leading bits shared with `other` (256 when equal).
    pub fn common_prefix_bits(&self, other: &Id) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        ID_BITS
    }

    /// Number of leading base-2^b digits shared with `other`.
    pub fn shared_prefix_len(&self, other: &Id, b: u8) -> usize {
        let bits = self.common_prefix_bits(other);
        if bits == ID_BITS {
            Self::num_digits(b)
        } else {
            bits / b as usize
        }
    }

    /// `self + other` modulo 2^256.
    pub fn wrapping_add(&self, other: &Id) -> Id {
        let mut out = [0u8; ID_BYTES];
        let mut carry = 0u16;
        for i in (0..ID_BYTES).rev() {
            let s = self.0[i] as u16 + other.0[i] as u16 + carry;
            out[i] = s as u8;
            carry = s >> 8;
        }
        Id(out)
    }

    /// `self - other` modulo 2^256.
    pub fn wrapping_sub(&self, other: &Id) -> Id {
        // Four big-endian 64-bit limbs, least significant last: the simulator calls this
        // millions of times per second.
        let (a, b) = (self.limbs(), other.limbs());
        let mut out = [0u64; 4];
        let mut borrow = false;
        for i in (0..4).rev() {
            let (d, b1) = a[i].overflowing_sub(b[i]);
            let (d, b2) = d.overflowing_sub(borrow as u64);
            out[i] = d;
            borrow = b1 || b2;
        }
        Self::from_limbs(out)
    }

    fn limbs(&self) -> [u64; 4] {
        std::array::from_fn(|i| {
            u64::from_be_bytes(self.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    }

    fn from_limbs(limbs: [u64; 4]) -> Id {
        let mut out = [0u8; ID_BYTES];
        for (chunk, l) in out.chunks_exact_mut(8).zip(limbs) {
            chunk.copy_from_slice(&l.to_be_bytes());
        }
        Id(out)
    }

    /// Distance going clockwise (increasing ids, wrapping at 2^256) from `self` to `to`.
    pub fn cw_distance(&self, to: &Id) -> Id {
        to.wrapping_sub(self)
    }

    /// Ring distance: the shorter of the clockwise and counter-clockwise distances.
    pub fn ring_distance(&self, other: &Id) -> Id {
        let cw = self.cw_distance(other);
        let ccw = other.cw_distance(self);
        cw.min(ccw)
    }

    /// Orders `a` and `b` by closeness to `self` on the ring: `Less` when `a` is closer.
    ///
    /// Ties (two ids at the same ring distance, one on each side) go to the numerically smaller
    /// id, so every node agrees on a single closest id for any key.
    pub fn cmp_closeness(&self, a: &Id, b: &Id) -> Ordering {
        self.ring_distance(a)
            .cmp(&self.ring_distance(b))
            .then_with(|| a.cmp(b))
    }

    /// True when `a` is strictly closer to `self` than `b` under [`Id::cmp_closeness`].
    pub fn is_closer(&self, a: &Id, b: &Id) -> bool {
        self.cmp_closeness(a, b) == Ordering::Less
    }

    /// Half of `self`, rounded down (a right shift by one bit).
    pub fn half(&self) -> Id {
        let mut out = [0u8; ID_BYTES];
        let mut carry = 0u8;
        for (o, b) in out.iter_mut().zip(self.0.iter()) {
            *o = (b >> 1) | (carry << 7);
            carry = b & 1;
        }
        Id(out)
    }

    /// The point halfway along the clockwise arc from `self` to `to`.
    pub fn cw_midpoint(&self, to: &Id) -> Id {
        self.wrapping_add(&self.cw_distance(to).half())
    }

    /// True when `self` lies on the clockwise arc from `from` to `to`, both ends included.
    pub fn in_cw_arc(&self, from: &Id, to: &Id) -> bool {
        from.cw_distance(self) <= from.cw_distance(to)
    }

    /// The id as an approximate fraction of the ring, in [0, 1): handy for drawing.
    pub fn ring_fraction(&self) -> f64 {
        let hi = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        hi as f64 / 18_446_744_073_709_551_616.0
    }

    /// Short form for logs: the first 8 hex digits.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != ID_BYTES * 2 {
            return Err(ParseIdError::Length(chars.len()));
        }
        let mut out = [0u8; ID_BYTES];
        for (i, pair) in chars.chunks(2).enumerate() {
            let hi = pair[0].to_digit(16).ok_or(ParseIdError::Digit(pair[0]))?;
            let lo = pair[1].to_digit(16).ok_or(ParseIdError::Digit(pair[1]))?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(Id(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id_from_u64(v: u64) -> Id {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&v.to_be_bytes());
        Id(b)
    }

    fn arb_id() -> impl Strategy<Value = Id> {
        any::<[u8; 32]>().prop_map(Id)
    }

    #[test]
    fn digits_are_read_most_significant_first() {
        let id: Id = "a1b2000000000000000000000000000000000000000000000000000000000009"
            .parse()
            .unwrap();
        assert_eq!(id.digit(0, 4), 0xa);
        assert_eq!(id.digit(1, 4), 0x1);
        assert_eq!(id.digit(2, 4), 0xb);
        assert_eq!(id.digit(63, 4), 0x9);
        assert_eq!(id.digit(0, 1), 1);
        assert_eq!(id.digit(1, 1), 0);
        // b = 3: 0xa1 = 101 000 01..., so the first digits are 5 and 0.
        assert_eq!(id.digit(0, 3), 5);
        assert_eq!(id.digit(1, 3), 0);
        assert_eq!(Id::num_digits(3), 86);
        // The last b=3 digit has only one bit: bit 255, which is 1.
        assert_eq!(id.digit(85, 3), 1);
    }

    #[test]
    fn distance_wraps_around_zero() {
        let near_top = Id::MAX.wrapping_sub(&id_from_u64(4)); // 2^256 - 5
        let small = id_from_u64(3);
        assert_eq!(near_top.cw_distance(&small), id_from_u64(8));
        assert_eq!(small.ring_distance(&near_top), id_from_u64(8));
        assert!(small.in_cw_arc(&near_top, &id_from_u64(10)));
        assert!(!id_from_u64(11).in_cw_arc(&near_top, &id_from_u64(10)));
    }

    #[test]
    fn closeness_ties_go_to_the_smaller_id() {
        let key = id_from_u64(10);
        let (a, b) = (id_from_u64(8), id_from_u64(12));
        assert_eq!(key.cmp_closeness(&a, &b), Ordering::Less);
        assert_eq!(key.cmp_closeness(&b, &a), Ordering::Greater);
        assert!(key.is_closer(&id_from_u64(11), &a));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!("abc".parse::<Id>(), Err(ParseIdError::Length(3)));
        let bad = "g".repeat(64);
        assert_eq!(bad.parse::<Id>(), Err(ParseIdError::Digit('g')));
    }

    proptest! {
        #[test]
        fn order_is_the_big_endian_byte_order(a in arb_id(), b in arb_id(), k in 0usize..32) {
            prop_assert_eq!(a.cmp(&b), a.as_bytes().cmp(b.as_bytes()));
            // Ids sharing a long prefix differ only in later limbs.
            let mut c = *a.as_bytes();
            c[k..].copy_from_slice(&b.as_bytes()[k..]);
            let c = Id::from_bytes(c);
            prop_assert_eq!(a.cmp(&c), a.as_bytes().cmp(c.as_bytes()));
        }

        #[test]
        fn display_parse_round_trips(id in arb_id()) {
            prop_assert_eq!(id.to_string().parse::<Id>().unwrap(), id);
        }

        #[test]
        fn add_then_sub_is_identity(a in arb_id(), b in arb_id()) {
            prop_assert_eq!(a.wrapping_add(&b).wrapping_sub(&b), a);
        }

        #[test]
        fn clockwise_distances_sum_to_the_ring(a in arb_id(), b in arb_id()) {
            prop_assume!(a != b);
            // cw(a,b) + cw(b,a) == 2^256 == 0 mod 2^256.
            prop_assert_eq!(a.cw_distance(&b).wrapping_add(&b.cw_distance(&a)), Id::ZERO);
            prop_assert_eq!(a.ring_distance(&b), b.ring_distance(&a));
        }

        #[test]
        fn shared_prefix_matches_digit_comparison(a in arb_id(), b in arb_id(), bits in 1u8..=8) {
            let l = a.shared_prefix_len(&b, bits);
            for i in 0..l { prop_assert_eq!(a.digit(i, bits), b.digit(i, bits)); }
            if l < Id::num_digits(bits) { prop_assert_ne!(a.digit(l, bits), b.digit(l, bits)); }
        }

        #[test]
        fn with_digit_sets_exactly_that_digit(a in arb_id(), i in 0usize..64, v in 0u8..16) {
            let x = a.with_digit(i, 4, v);
            prop_assert_eq!(x.digit(i, 4), v);
            for j in (0..64).filter(|&j| j != i) { prop_assert_eq!(x.digit(j, 4), a.digit(j, 4)); }
        }

        #[test]
        fn midpoint_splits_the_clockwise_arc(a in arb_id(), b in arb_id()) {
            let m = a.cw_midpoint(&b);
            prop_assert!(m.in_cw_arc(&a, &b));
            let d1 = a.cw_distance(&m);
            let d2 = m.cw_distance(&b);
            let mut one = [0u8; 32];
            one[31] = 1;
            let one = Id::from_bytes(one);
            prop_assert!(d2 == d1 || d2 == d1.wrapping_add(&one));
        }

        #[test]
        fn closeness_is_a_total_order(k in arb_id(), a in arb_id(), b in arb_id()) {
            let ab = k.cmp_closeness(&a, &b);
            prop_assert_eq!(ab, k.cmp_closeness(&b, &a).reverse());
            prop_assert_eq!(ab == Ordering::Equal, a == b);
        }
    }
}
