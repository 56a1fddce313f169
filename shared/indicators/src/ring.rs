//! A fixed-capacity ring of the most recent values, allocated once.

/// The last `capacity` values pushed, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    buf: Vec<f64>,
    /// Index of the oldest value once full; the next write position.
    head: usize,
    len: usize,
}

impl Ring {
    /// An empty ring holding up to `capacity` (at least one) values.
    pub(crate) fn new(capacity: usize) -> Ring {
        Ring {
            buf: vec![0.0; capacity.max(1)],
            head: 0,
            len: 0,
        }
    }

    /// The number of values held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the ring holds `capacity` values.
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Appends `value`, returning the value it evicted when the ring was full.
    #[inline]
    pub(crate) fn push(&mut self, value: f64) -> Option<f64> {
        let full = self.len == self.buf.len();
        let slot = &mut self.buf[self.head];
        let evicted = if full { Some(*slot) } else { None };
        *slot = value;
        self.head += 1;
        if self.head == self.buf.len() {
            self.head = 0;
        }
        if evicted.is_none() {
            self.len += 1;
        }
        evicted
    }

    /// The oldest value held (the first one pushed if not full).
    #[inline]
    pub(crate) fn oldest(&self) -> f64 {
        if self.is_full() {
            self.buf[self.head]
        } else {
            self.buf[0]
        }
    }

    /// The values held, oldest first, as two slices.
    #[inline]
    pub(crate) fn as_slices(&self) -> (&[f64], &[f64]) {
        if self.is_full() {
            let (newer, older) = self.buf.split_at(self.head);
            (older, newer)
        } else {
            (&self.buf[..self.len], &[])
        }
    }

    /// The values held in storage order (slot 0 first); TA-Lib's CCI sums in this order.
    pub(crate) fn storage(&self) -> &[f64] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_evicts_the_oldest_value() {
        let mut ring = Ring::new(3);
        assert_eq!(ring.push(1.0), None);
        assert_eq!(ring.push(2.0), None);
        assert_eq!(ring.oldest(), 1.0);
        assert_eq!(ring.push(3.0), None);
        assert!(ring.is_full());
        assert_eq!(ring.push(4.0), Some(1.0));
        assert_eq!(ring.oldest(), 2.0);
        let (a, b) = ring.as_slices();
        assert_eq!([a, b].concat(), vec![2.0, 3.0, 4.0]);
        assert_eq!(ring.storage(), &[4.0, 2.0, 3.0]);
        assert_eq!(ring.len(), 3);
    }
}
