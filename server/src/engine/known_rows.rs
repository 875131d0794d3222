//! Logit rows the KV cache's positions produced, kept with the cache so that a generation
//! whose next token the cache already holds needs no run to know what follows it.
//!
//! Typing inside a word keeps a healed prompt the same from keystroke to keystroke (the word
//! goes to the output to spell), and a keystroke often cancels a completion midway whose
//! tokens the next one would produce again. In the typing replay (`benches/replay.py --part
//! replay`, 2026-12-04) 186 of the 255 generations found their whole prompt cached, most with
//! tokens of the last generation after it: each ran the prompt's last token again only to get
//! logits already computed once, and about half then decoded, run by run, tokens the cache
//! held. A row is the model's output for a position and depends only on the tokens up to it
//! (`DecoderSession::forward_rows`), so a kept row is the row a run would give, and it stays
//! true for as long as the cache keeps its position (`KvCache` forgets the rows it cuts off).

use std::collections::VecDeque;

/// The latest rows kept, each with the cache position whose token produced it.
#[derive(Debug, Default)]
pub(crate) struct KnownRows {
    rows: VecDeque<(usize, Vec<f32>)>,
}

impl KnownRows {
    /// At most this many rows are kept (the oldest kept go first): two generations' worth of
    /// `PER_GENERATION`, about 6 MB for a 49,152-token vocabulary.
    const MAX_ROWS: usize = 2 * Self::PER_GENERATION;
    /// Rows a generation keeps: its prompt's last one and those of its first generated tokens,
    /// which a completion after the next keystroke may need again.
    pub const PER_GENERATION: usize = 16;

    /// The row the token at `position` produced, if kept.
    pub fn get(&self, position: usize) -> Option<&[f32]> {
        self.rows.iter().find(|(kept, _)| *kept == position).map(|(_, row)| row.as_slice())
    }

    /// Keeps `row` as the one the token at `position` produced.
    pub fn keep(&mut self, position: usize, row: &[f32]) {
        self.rows.retain(|(kept, _)| *kept != position);
        if self.rows.len() == Self::MAX_ROWS {
            self.rows.pop_front();
        }
        self.rows.push_back((position, row.to_vec()));
    }

    /// Forgets the rows of `position` and every later one (the cache cut them off).
    pub fn forget_from(&mut self, position: usize) {
        self.rows.retain(|(kept, _)| *kept < position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_by_position_replaced_and_forgotten_from_a_cut() {
        let mut rows = KnownRows::default();
        rows.keep(3, &[1.0, 2.0]);
        rows.keep(4, &[3.0, 4.0]);
        rows.keep(3, &[5.0, 6.0]);
        assert_eq!(rows.get(3), Some(&[5.0, 6.0][..]), "a position's newer row replaces its older one");
        assert_eq!(rows.get(5), None);
        rows.forget_from(4);
        assert_eq!(rows.get(4), None, "the cut position is forgotten");
        assert_eq!(rows.get(3), Some(&[5.0, 6.0][..]), "positions before the cut stay");
    }

    #[test]
    fn at_most_max_rows_are_kept_the_oldest_going_first() {
        let mut rows = KnownRows::default();
        for position in 0..KnownRows::MAX_ROWS + 3 {
            rows.keep(position, &[position as f32]);
        }
        assert_eq!(rows.rows.len(), KnownRows::MAX_ROWS);
        assert_eq!(rows.get(2), None, "the oldest went first");
        assert_eq!(rows.get(3), Some(&[3.0][..]));
        assert_eq!(rows.get(KnownRows::MAX_ROWS + 2), Some(&[(KnownRows::MAX_ROWS + 2) as f32][..]));
    }
}
