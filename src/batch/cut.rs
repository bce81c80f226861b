//! The batch budget: where a run cuts a window bigger than one batch.
//!
//! A source reads at most `[source] max_batch_rows` rows (and about `max_batch_bytes`) per
//! batch. When its window holds more, the batch ends at a cursor value, the *cut*: every row
//! at or below it (and at or above the window's low bound) is in the batch, every row above it
//! waits for the next batch. Rows that share the cut's value are never split, so the next
//! batch's window (`[cut − lookback, …]`, inclusive, like every run's) neither loses nor
//! double-counts them. One exception: when a single cursor value holds more rows than the
//! budget, the batch holds that value whole and the run reports it ([`Cut::oversized`]).
//!
//! The cut is the largest value `c` with `count(low ≤ cursor ≤ c) ≤ budget`, found in one
//! streaming pass over the cursor values ([`Smallest`]) that keeps only the `budget + 1`
//! smallest in a heap: memory follows the budget, not the window. A batch always reads past
//! the stored watermark: when the rows the lookback re-reads (at or below the watermark) fill
//! the budget alone, the budget counts the new rows only (a second heap keeps the smallest
//! new values) and the batch is bigger by the re-read rows, which is logged.

use std::collections::BinaryHeap;

/// Where a batch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The batch's inclusive upper bound (cursor units).
    pub high: i64,
    /// About how many rows of the window lie above the cut.
    pub rows_remaining: u64,
    /// A single cursor value holds more rows than the budget: the batch holds it whole.
    pub oversized: Option<i64>,
    /// The rows re-read below the watermark filled the budget: the batch holds them plus up
    /// to the budget's rows past the watermark.
    pub over_by_lookback: bool,
}

/// The `limit + 1` smallest values pushed.
#[derive(Debug)]
struct Lowest {
    limit: usize,
    heap: BinaryHeap<i64>,
}

impl Lowest {
    fn new(limit: usize) -> Self {
        Lowest {
            limit,
            heap: BinaryHeap::with_capacity(limit.min(1 << 20) + 1),
        }
    }

    fn push(&mut self, v: i64) {
        if self.heap.len() <= self.limit {
            self.heap.push(v);
        } else if let Some(mut top) = self.heap.peek_mut()
            && v < *top
        {
            *top = v;
        }
    }

    /// The greatest kept value once more than `limit` were pushed (values above it cannot
    /// change the cut).
    fn full_top(&self) -> Option<i64> {
        (self.heap.len() > self.limit)
            .then(|| self.heap.peek().copied())
            .flatten()
    }

    /// The greatest value `c` with at most `limit` values at or below it, and whether that
    /// is a single value holding more (then `c` is that value); None when all fit.
    fn cut(&self) -> Option<(i64, bool)> {
        let over = self.full_top()?;
        let below = self.heap.iter().copied().filter(|&v| v < over).max();
        Some(match below {
            Some(b) => (b, false),
            None => (over, true),
        })
    }

    /// Kept values at or below `v` (exact for `v` below the `(limit + 1)`-th value).
    fn count_le(&self, v: i64) -> u64 {
        self.heap.iter().filter(|&&x| x <= v).count() as u64
    }
}

/// A streaming pass over a window's cursor values that finds where a batch of at most
/// `limit` rows ends.
#[derive(Debug)]
pub struct Smallest {
    all: Lowest,
    /// The smallest values past the watermark (None without a watermark: all are new).
    new: Option<Lowest>,
    /// Values pushed.
    seen: u64,
    /// Values pushed that lie past the watermark.
    seen_new: u64,
    /// Rows not pushed because a whole row group lay above the heaps (from statistics).
    skipped_rows: u64,
    /// The greatest value seen, or the greatest statistics maximum of a skipped row group.
    max: Option<i64>,
    watermark: Option<i64>,
}

impl Smallest {
    /// A pass for batches of at most `limit` rows (at least 1), after `watermark`.
    pub fn new(limit: u64, watermark: Option<i64>) -> Self {
        let limit = limit.clamp(1, usize::MAX as u64 / 2) as usize;
        Smallest {
            all: Lowest::new(limit),
            new: watermark.map(|_| Lowest::new(limit)),
            seen: 0,
            seen_new: 0,
            skipped_rows: 0,
            max: None,
            watermark,
        }
    }

    /// Takes one cursor value of the window.
    pub fn push(&mut self, v: i64) {
        self.seen += 1;
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
        self.all.push(v);
        if let (Some(new), Some(w)) = (&mut self.new, self.watermark)
            && v > w
        {
            self.seen_new += 1;
            new.push(v);
        }
    }

    /// Whether a row group whose values all lie at or above `min` can be left unread: every
    /// heap is full and every value of the group lies above them.
    pub fn can_skip(&self, min: i64) -> bool {
        let above = |l: &Lowest| l.full_top().is_some_and(|top| min > top);
        above(&self.all) && self.new.as_ref().is_none_or(above)
    }

    /// Records a row group left unread (see [`Smallest::can_skip`]): its rows and maximum.
    pub fn skip(&mut self, rows: u64, max: Option<i64>) {
        self.skipped_rows += rows;
        if let Some(m) = max {
            self.max = Some(self.max.map_or(m, |x| x.max(m)));
        }
    }

    /// Where the batch ends, or None when the whole window is one batch.
    pub fn finish(self) -> Option<Cut> {
        let total = self.seen + self.skipped_rows;
        let (high, single, over_by_lookback, at_or_below) = match self.all.cut() {
            None => return None, // the window fits
            Some((high, single)) if self.watermark.is_none_or(|w| high > w) => {
                (high, single, false, self.all.count_le(high))
            }
            Some(_) => {
                // The re-read rows fill the budget: count the new rows only.
                let new = self.new.as_ref().expect("a watermark keeps the new values");
                let (high, single) = new.cut()?;
                let reread = self.seen - self.seen_new;
                (high, single, true, reread + new.count_le(high))
            }
        };
        if self.max.is_none_or(|m| m <= high) {
            return None; // nothing lies above the cut after all
        }
        Some(Cut {
            high,
            rows_remaining: total.saturating_sub(at_or_below),
            oversized: single.then_some(high),
            over_by_lookback,
        })
    }
}

/// The rows a batch may hold under both budgets: `max_rows`, and `max_bytes` at the
/// window's average row size (`bytes` over `rows`, uncompressed, as the source's statistics
/// count them). At least one.
pub fn row_limit(max_rows: u64, max_bytes: u64, bytes: u64, rows: u64) -> u64 {
    let by_bytes = if bytes == 0 || rows == 0 {
        u64::MAX
    } else {
        let per_row = (bytes as f64 / rows as f64).max(1.0);
        (max_bytes as f64 / per_row) as u64
    };
    max_rows.min(by_bytes).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cut_of(values: &[i64], limit: u64, watermark: Option<i64>) -> Option<Cut> {
        let mut s = Smallest::new(limit, watermark);
        for &v in values {
            s.push(v);
        }
        s.finish()
    }

    #[test]
    fn a_window_that_fits_is_not_cut() {
        assert_eq!(cut_of(&[3, 1, 2], 3, None), None);
        assert_eq!(cut_of(&[], 1, None), None);
    }

    #[test]
    fn ties_at_the_cut_stay_together() {
        // Budget 3: 1, 2, 2, 2, 3 → the batch ends at 1 (taking the 2s would make 4 rows).
        let c = cut_of(&[2, 1, 2, 3, 2], 3, None).unwrap();
        assert_eq!((c.high, c.oversized, c.rows_remaining), (1, None, 4));
        // Budget 4: 1, 2, 2, 2 fit.
        let c = cut_of(&[2, 1, 2, 3, 2], 4, None).unwrap();
        assert_eq!((c.high, c.rows_remaining), (2, 1));
    }

    #[test]
    fn a_value_bigger_than_the_budget_is_read_alone_and_reported() {
        let c = cut_of(&[5, 5, 5, 9, 5], 2, None).unwrap();
        assert_eq!(
            (c.high, c.oversized, c.over_by_lookback),
            (5, Some(5), false)
        );
        assert_eq!(
            cut_of(&[5, 5, 5], 2, None),
            None,
            "nothing above it: no cut"
        );
    }

    #[test]
    fn a_batch_always_reaches_past_the_watermark() {
        // Lookback re-reads 1..=4 (watermark 4), budget 2: the budget counts new rows only.
        let c = cut_of(&[1, 2, 3, 4, 6, 7, 8], 2, Some(4)).unwrap();
        assert_eq!((c.high, c.oversized, c.over_by_lookback), (7, None, true));
        assert_eq!(c.rows_remaining, 1);
        let c = cut_of(&[1, 2, 3, 4, 6, 6, 6, 7], 2, Some(4)).unwrap();
        assert_eq!((c.high, c.oversized), (6, Some(6)));
        // Only re-read rows, or few new ones: no cut.
        assert_eq!(cut_of(&[1, 2, 3, 4], 2, Some(4)), None);
        assert_eq!(cut_of(&[1, 2, 3, 4, 9], 2, Some(4)), None);
        // Under the budget with the re-read rows: the plain cut.
        let c = cut_of(&[3, 4, 5, 6, 7], 3, Some(4)).unwrap();
        assert_eq!((c.high, c.over_by_lookback), (5, false));
    }

    #[test]
    fn a_skipped_row_group_counts_toward_what_remains() {
        let mut s = Smallest::new(2, None);
        for v in [1, 2, 3] {
            s.push(v);
        }
        assert!(s.can_skip(10) && !s.can_skip(3));
        s.skip(100, Some(20));
        let c = s.finish().unwrap();
        assert_eq!((c.high, c.rows_remaining), (2, 101));
    }

    #[test]
    fn the_byte_budget_turns_into_rows() {
        // 1 MiB at 104.9 bytes a row is 10,000 rows: the row budget binds below it.
        assert_eq!(row_limit(1000, 1 << 20, 100 << 20, 1_000_000), 1000);
        assert_eq!(row_limit(1_000_000, 1 << 20, 100 << 20, 1_000_000), 10_000);
        assert_eq!(row_limit(5, 0, 10, 10), 1, "at least one row");
        assert_eq!(row_limit(5, 10, 0, 0), 5, "no statistics: rows only");
    }

    proptest! {
        /// The batch a cut makes holds at most the budget unless reported, never splits a
        /// value, always reads past the watermark, and leaves rows above only when cut.
        #[test]
        fn cuts_obey_the_budget_and_the_tie_rule(
            values in proptest::collection::vec(0i64..40, 0..200),
            limit in 1u64..30,
            watermark in proptest::option::of(0i64..40),
        ) {
            let cut = cut_of(&values, limit, watermark);
            let is_new = |v: i64| watermark.is_none_or(|w| v > w);
            let count_le = |c: i64| values.iter().filter(|&&v| v <= c).count() as u64;
            let new_le = |c: i64| values.iter().filter(|&&v| v <= c && is_new(v)).count() as u64;
            match cut {
                None => {
                    // Fits, or fits once the re-read rows are set aside, or nothing lies
                    // above the least batch allowed (its first value).
                    let new_count = values.iter().filter(|&&v| is_new(v)).count() as u64;
                    let first = values.iter().copied().filter(|&v| is_new(v)).min();
                    prop_assert!(
                        values.len() as u64 <= limit
                            || new_count <= limit
                            || first.is_none_or(|f| values.iter().all(|&v| v <= f))
                    );
                }
                Some(c) => {
                    let above = values.len() as u64 - count_le(c.high);
                    prop_assert!(above > 0, "a cut leaves rows above it");
                    prop_assert!(is_new(c.high), "progress past the watermark");
                    let counted = |x: i64| if c.over_by_lookback { new_le(x) } else { count_le(x) };
                    if let Some(v) = c.oversized {
                        prop_assert_eq!(c.high, v);
                        // Nothing counted lies below it: it is the least batch allowed.
                        prop_assert!(counted(v) > limit);
                        prop_assert!(
                            values.iter().all(|&x| x >= v || (c.over_by_lookback && !is_new(x)))
                        );
                        prop_assert!(c.rows_remaining >= above);
                    } else {
                        prop_assert!(counted(c.high) <= limit);
                        // Maximal: the next value would overflow the budget.
                        let next = values.iter().copied().filter(|&v| v > c.high).min().unwrap();
                        prop_assert!(counted(next) > limit);
                        prop_assert_eq!(c.rows_remaining, above);
                    }
                }
            }
        }
    }
}
