//! Prompt-lookup drafting for speculative decoding: completions, docstrings and tests copy
//! names and whole lines from their context, so the tokens that followed the last few tokens
//! the previous time they occurred (in the prompt or in the text generated so far) are a good
//! guess for what comes next. The generator verifies a draft in one forward pass and keeps only
//! what plain decoding (greedy or seeded sampling) would have produced anyway; how long the next draft may be follows how
//! much of the last one the model took (`next_limit`).

/// How drafts are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PromptLookup {
    /// Longest and shortest n-gram (the context's last tokens) to match, longest first.
    pub max_ngram: usize,
    pub min_ngram: usize,
    /// Most tokens drafted at once.
    pub max_draft: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        PromptLookup { max_ngram: 3, min_ngram: 1, max_draft: 8 }
    }
}

impl PromptLookup {
    /// The tokens that followed the most recent earlier occurrence of the context's last n
    /// tokens (the longest n that occurs), at most `limit` of them; empty when nothing matches.
    /// A match of a single token is weak evidence: it drafts one token. Where a lone token is
    /// padded to two rows (`DecoderSession::forward_rows`), that token rides along in the
    /// second row for free; where it runs alone, it costs a second row (drafts of two or more
    /// tokens only measured no faster: `cargo bench --bench engine -- --speculation`, docstring
    /// 1.09×, 1.03× and 1.03× against 1.03× with them, tests 1.04×, 1.09× and 0.91× against
    /// 1.07×, 2026-12-02).
    pub fn draft<'a>(&self, context: &'a [u32], limit: usize) -> &'a [u32] {
        let limit = limit.min(self.max_draft);
        if limit == 0 {
            return &[];
        }
        let length = context.len();
        for n in (self.min_ngram.max(1)..=self.max_ngram).rev() {
            if length <= n {
                continue;
            }
            let pattern = &context[length - n..];
            if let Some(start) = (0..length - n).rev().find(|&start| &context[start..start + n] == pattern) {
                let from = start + n;
                let limit = if n == 1 { 1 } else { limit };
                return &context[from..(from + limit).min(length)];
            }
        }
        &[]
    }

    /// The most tokens the next draft of a generation may have, after a verify run that
    /// accepted `accepted` of `drafted` tokens under `limit`: a draft taken whole doubles it
    /// (up to `max_draft`), a rejected one shrinks it to one more than was taken. A run costs
    /// more with every drafted row (9 rows took 1.6–2× the time of 2 at an 800-token context on
    /// 2 cores), so long drafts are for stretches the model is copying, not for guesses it keeps
    /// rejecting.
    pub fn next_limit(&self, limit: usize, drafted: usize, accepted: usize) -> usize {
        if accepted >= drafted { (limit * 2).clamp(1, self.max_draft) } else { (accepted + 1).min(self.max_draft) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_what_followed_the_latest_longest_match() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 1, max_draft: 4 };
        // ... 1 2 3 [4 5 6 7 8] ... 1 2 3 → 4 5 6 7 (limited to 4)
        let context = [9, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3];
        assert_eq!(lookup.draft(&context, 10), &[4, 5, 6, 7]);
        assert_eq!(lookup.draft(&context, 2), &[4, 5], "the caller's limit");
        assert_eq!(lookup.draft(&context, 0), &[] as &[u32]);
        // The latest occurrence wins: 7 follows "2 3" the second time.
        let context = [2, 3, 5, 2, 3, 7, 1, 2, 3];
        assert_eq!(lookup.draft(&context, 4), &[7, 1, 2, 3]);
        // A longer match beats a more recent shorter one.
        let context = [1, 2, 3, 4, 9, 3, 5, 1, 2, 3];
        assert_eq!(lookup.draft(&context, 2), &[4, 9]);
        // The draft ends where the context does.
        let context = [5, 6, 7, 5, 6];
        assert_eq!(lookup.draft(&context, 4), &[7, 5, 6]);
        // A single-token match drafts a single token.
        let context = [5, 6, 7, 5];
        assert_eq!(lookup.draft(&context, 4), &[6]);
    }

    #[test]
    fn a_rejected_draft_shrinks_the_next_and_a_taken_one_grows_it() {
        let lookup = PromptLookup::default();
        assert_eq!(lookup.next_limit(8, 8, 0), 1, "nothing taken: the next draft rides along alone");
        assert_eq!(lookup.next_limit(8, 6, 2), 3);
        assert_eq!(lookup.next_limit(1, 1, 1), 2, "taken whole: doubled");
        assert_eq!(lookup.next_limit(4, 4, 4), 8);
        assert_eq!(lookup.next_limit(8, 8, 8), 8, "never past max_draft");
        assert_eq!(lookup.next_limit(8, 3, 3), 8, "a short draft taken whole keeps the limit");
    }

    #[test]
    fn no_match_no_draft() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 2, max_draft: 8 };
        assert!(lookup.draft(&[1, 2, 3, 4, 5], 8).is_empty());
        assert!(lookup.draft(&[1, 2, 1], 8).is_empty(), "a single repeated token is below min_ngram");
        assert!(lookup.draft(&[], 8).is_empty());
        assert!(lookup.draft(&[7], 8).is_empty());
    }
}
