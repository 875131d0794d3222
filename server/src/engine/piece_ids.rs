//! The token ids of the last text pieces tokenized. A completion's prompt is a few pieces (the
//! repository context, the code around the cursor, a FIM template's parts), most of which
//! repeat from one keystroke to the next; while a word is typed, token healing leaves the word
//! to the output and the whole prompt repeats. A request also tokenizes each piece more than
//! once (its prompt and its warm alternative share pieces). The tokenizer is a pure function
//! of the text, so a piece seen again takes its ids from here instead of the tokenizer's ~1 ms
//! per thousand tokens.

use std::collections::VecDeque;

/// Text pieces and their ids, the most recently used last.
#[derive(Debug, Default)]
pub(crate) struct PieceIds {
    pieces: VecDeque<(String, Vec<u32>)>,
}

impl PieceIds {
    /// Pieces kept: two prompts' worth (a prompt and its warm alternative) and a few more.
    const MAX_PIECES: usize = 12;

    /// The ids of `text`: kept ones, or `encode`'s, which are then kept.
    pub fn ids<E>(&mut self, text: &str, encode: impl FnOnce(&str) -> Result<Vec<u32>, E>) -> Result<&[u32], E> {
        let index = match self.pieces.iter().position(|(kept, _)| kept == text) {
            Some(index) => index,
            None => {
                let ids = encode(text)?;
                if self.pieces.len() == Self::MAX_PIECES {
                    self.pieces.pop_front();
                }
                self.pieces.push_back((text.to_string(), ids));
                self.pieces.len() - 1
            }
        };
        let used = self.pieces.remove(index).expect("a kept piece");
        self.pieces.push_back(used);
        Ok(&self.pieces.back().expect("just kept").1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_seen_again_is_not_encoded_again_and_the_least_recent_goes_first() {
        let mut pieces = PieceIds::default();
        let mut encoded = Vec::new();
        let mut ids = |pieces: &mut PieceIds, text: &str| -> Vec<u32> {
            let encode = |text: &str| -> Result<Vec<u32>, ()> {
                encoded.push(text.to_string());
                Ok(text.bytes().map(u32::from).collect())
            };
            pieces.ids(text, encode).unwrap().to_vec()
        };
        assert_eq!(ids(&mut pieces, "ab"), [97, 98]);
        assert_eq!(ids(&mut pieces, "ab"), [97, 98]);
        for index in 0..PieceIds::MAX_PIECES - 1 {
            ids(&mut pieces, &format!("piece {index}"));
        }
        ids(&mut pieces, "ab"); // used again: now the most recent
        ids(&mut pieces, "one more"); // "piece 0" goes
        ids(&mut pieces, "ab");
        ids(&mut pieces, "piece 0");
        let times = |text: &str| encoded.iter().filter(|seen| *seen == text).count();
        assert_eq!(times("ab"), 1, "kept while in use");
        assert_eq!(times("piece 0"), 2, "the least recently used piece went first");
    }

    #[test]
    fn a_failed_encoding_keeps_nothing() {
        let mut pieces = PieceIds::default();
        assert_eq!(pieces.ids("x", |_| Err::<Vec<u32>, _>("no")), Err("no"));
        assert!(pieces.pieces.is_empty());
    }
}
