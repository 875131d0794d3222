//! Prompt-lookup drafting for speculative decoding: completions, docstrings and tests copy
//! names and whole lines from their context, so the tokens that followed the last few tokens
//! the previous time they occurred (in the prompt or in the text generated so far) are a good
//! guess for what comes next. Where the context has no such occurrence, the generations just
//! before (`Recent`) are searched: an action's retries say much of what the first try said,
//! the sentences of one docstring share their phrasing, and a completion after a keystroke much
//! of the one before it. The generator verifies a draft in one forward pass and keeps only
//! what plain decoding (greedy or seeded sampling) would have produced anyway. How long a draft
//! may be follows how far the match reaches back (`agreeing`, plus `past_match`) and how much
//! of the last draft the model took (`next_limit`). Where the text after a match in the context
//! runs up to the context's end, the text is repeating, and the draft repeats it on
//! (`repeating`).

use std::collections::VecDeque;

/// How drafts are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PromptLookup {
    /// Longest and shortest n-gram (the context's last tokens) to match, longest first.
    pub max_ngram: usize,
    pub min_ngram: usize,
    /// Most tokens drafted at once.
    pub max_draft: usize,
    /// How many tokens a draft may run past the length of the stretch that the context and the
    /// occurrence share (`agreeing`).
    pub past_match: usize,
}

/// Matches of up to 6 tokens, tried longest first: a longer match is a more specific one. Against
/// up to 3 (`cargo bench --bench engine -- --runs 1 --rounds 1 --scaling '' --speculation`, with
/// and without the standard-library `--targets` of `repeating`, 2026-12-05), the unit-test
/// workload took 925 verifying runs against 976 on the standard library (4,346 drafted rows
/// against 4,305) and 203 against 213 on this repository's functions (627 rows against 620);
/// the docstring workload 927 against 926 (1,389 rows against 1,394) and 178 against 181 (185
/// against 189).
impl Default for PromptLookup {
    fn default() -> Self {
        PromptLookup { max_ngram: 6, min_ngram: 1, max_draft: 16, past_match: 2 }
    }
}

impl PromptLookup {
    /// The tokens that followed the most recent earlier occurrence of the context's last n
    /// tokens (the longest n that occurs), at most `limit` of them; empty when nothing matches.
    /// For each n, the context is searched first, then `recent` generations, the newest first.
    ///
    /// A draft is no longer than the stretch of tokens, ending at the match, that the context
    /// and the occurrence share (`agreeing`: at least n), plus `past_match`: the further back
    /// they agree, the likelier the model is copying, and each drafted token costs a row in the
    /// run that verifies it. Since the linear kernel repacked its weights (2026-12-05) a row
    /// costs about a sixth of a lone token's run, so two tokens past the shared stretch pay:
    /// counted on `cargo bench --bench engine -- --speculation` (a run about 6 ms, a drafted
    /// row about 1 ms: 0.9 to 1.6 ms, estimated from the same runs), the unit-test workload
    /// took 248 runs and 581 drafted rows with none past it, 213 runs and 615 rows with two;
    /// the docstring's 187 and 149, 181 and 189 (its prose copies less: about even). A single
    /// token's match drafts only while the last draft was not turned down whole (`limit` is
    /// then 1, see `next_limit`): in prose, guessing on after a miss made the docstring workload
    /// slower than no drafts at all (0.97×, 2026-12-03).
    pub fn draft(&self, context: &[u32], recent: &Recent, limit: usize) -> Vec<u32> {
        let limit = limit.min(self.max_draft);
        if limit == 0 {
            return Vec::new();
        }
        let length = context.len();
        let shortest = if limit < 2 { 2 } else { 1 };
        for n in (self.min_ngram.max(shortest)..=self.max_ngram).rev() {
            if length < n {
                continue;
            }
            let pattern = &context[length - n..];
            // How many tokens a match at `from` in `source` may draft.
            let reach =
                |source: &[u32], from| limit.min(agreeing(source, from, context, self.max_draft) + self.past_match);
            if let Some(from) = after_latest(context, pattern) {
                return repeating(&context[from..], reach(context, from));
            }
            let found =
                recent.generations.iter().rev().find_map(|tokens| Some((tokens, after_latest(tokens, pattern)?)));
            if let Some((source, from)) = found {
                return source[from..][..reach(source, from).min(source.len() - from)].to_vec();
            }
        }
        Vec::new()
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

/// The first `limit` tokens of `tail` repeated: what follows a match in the context itself.
/// The text after the match runs up to the context's end, where the pattern occurs again, so
/// the text is repeating with the tail's length as its period (a test's assertion written
/// again with other values, a list's items, a loop the model is in): copied on, as an LZ77
/// reference longer than its distance copies the bytes it writes. Before, a draft stopped at
/// the context's end, one verifying run per period. `cargo bench --bench engine -- --runs 1
/// --rounds 1 --scaling '' --speculation --targets ...` (2026-12-05), on 15 functions of
/// Python 3.11's standard library (colorsys `rgb_to_hsv`, `hls_to_rgb`, `rgb_to_yiq`; fnmatch
/// `translate`, `filter`; shlex `quote`, `join`; textwrap `dedent`, `shorten`, `indent`; string
/// `capwords`; statistics `median`, `median_low`; heapq `nsmallest`, `merge`): the unit-test
/// workload took 976 verifying runs against 1,167 for its 4,447 tokens, with 4,305 drafted
/// rows against 4,082 (3,109 taken against 2,918); the docstring workload the same 926 runs
/// (one more row). On this repository's functions (the default targets) the unit-test
/// workload kept its 213 runs, with 620 rows against 615, and the code continuation, a loop,
/// took 12 runs against 25.
fn repeating(tail: &[u32], limit: usize) -> Vec<u32> {
    tail.iter().copied().cycle().take(limit).collect()
}

/// Where the tokens after the latest occurrence of `pattern` in `tokens` start, if any token
/// follows it there.
fn after_latest(tokens: &[u32], pattern: &[u32]) -> Option<usize> {
    let n = pattern.len();
    (0..tokens.len().checked_sub(n)?).rev().find(|&start| &tokens[start..start + n] == pattern).map(|start| start + n)
}

/// How many tokens, up to `most`, end both `source[..from]` and `context`: how far back the
/// match that found `from` reaches.
fn agreeing(source: &[u32], from: usize, context: &[u32], most: usize) -> usize {
    source[..from].iter().rev().zip(context.iter().rev()).take(most).take_while(|(a, b)| a == b).count()
}

/// The tokens of the last few generations, oldest first, at most `MAX_TOKENS` of them.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    generations: VecDeque<Vec<u32>>,
}

impl Recent {
    /// Enough for an action's few tries and a docstring's sentences, and little to search.
    const MAX_TOKENS: usize = 2048;

    /// Keeps `generated` (the oldest generations go where the total passes `MAX_TOKENS`).
    pub fn remember(&mut self, generated: &[u32]) {
        if generated.len() < 2 {
            return;
        }
        let generated = &generated[generated.len().saturating_sub(Self::MAX_TOKENS)..];
        self.generations.push_back(generated.to_vec());
        while self.tokens() > Self::MAX_TOKENS {
            self.generations.pop_front();
        }
    }

    fn tokens(&self) -> usize {
        self.generations.iter().map(Vec::len).sum()
    }

    pub fn clear(&mut self) {
        *self = Recent::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_what_followed_the_latest_longest_match() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 1, max_draft: 4, past_match: 0 };
        // ... 0 1 2 3 [4 5 6 7 8] ... 0 1 2 3 → 4 5 6 7 (limited to 4)
        let context = [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 10), &[4, 5, 6, 7]);
        assert_eq!(lookup.draft(&context, &Recent::default(), 2), &[4, 5], "the caller's limit");
        assert_eq!(lookup.draft(&context, &Recent::default(), 0), &[] as &[u32]);
        // No longer than the match reaches back: 9 1 2 3 and 0 1 2 3 share three tokens.
        let context = [9, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 10), &[4, 5, 6]);
        // The latest occurrence wins: 7 follows "1 2 3" the second time.
        let context = [1, 2, 3, 5, 1, 2, 3, 7, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4), &[7, 1, 2]);
        // A longer match beats a more recent shorter one.
        let context = [1, 2, 3, 4, 9, 3, 5, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 2), &[4, 9]);
        // Where the match's continuation reaches the context's end, the context is repeating:
        // the draft repeats it on.
        let context = [5, 6, 5, 6, 5, 6];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4), &[5, 6, 5, 6]);
        let context = [1, 2, 3, 1, 2, 3, 1, 2];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4), &[3, 1, 2, 3], "a period of three");
        // A single-token match drafts a single token.
        let context = [5, 6, 7, 5];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4), &[6]);
        // ... but not right after a draft turned down whole (the limit is 1 then).
        assert!(lookup.draft(&context, &Recent::default(), 1).is_empty());
        assert_eq!(lookup.draft(&[5, 6, 7, 5, 6], &Recent::default(), 1), &[7], "a longer match still drafts");
    }

    #[test]
    fn a_draft_runs_past_the_shared_stretch_by_past_match() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 1, max_draft: 8, past_match: 2 };
        // 9 1 2 3 and 0 1 2 3 share three tokens: three, then two more.
        let context = [9, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 10), &[4, 5, 6, 7, 8]);
        // A single token's match: one, then two more, within the caller's limit.
        let context = [5, 6, 7, 8, 5];
        assert_eq!(lookup.draft(&context, &Recent::default(), 8), &[6, 7, 8]);
        assert_eq!(lookup.draft(&context, &Recent::default(), 2), &[6, 7]);
        assert!(lookup.draft(&context, &Recent::default(), 1).is_empty(), "still none after a miss");
    }

    #[test]
    fn a_rejected_draft_shrinks_the_next_and_a_taken_one_grows_it() {
        let lookup = PromptLookup { max_draft: 8, ..PromptLookup::default() };
        assert_eq!(lookup.next_limit(8, 8, 0), 1, "nothing taken: the next draft rides along alone");
        assert_eq!(lookup.next_limit(8, 6, 2), 3);
        assert_eq!(lookup.next_limit(1, 1, 1), 2, "taken whole: doubled");
        assert_eq!(lookup.next_limit(4, 4, 4), 8);
        assert_eq!(lookup.next_limit(8, 8, 8), 8, "never past max_draft");
        assert_eq!(lookup.next_limit(8, 3, 3), 8, "a short draft taken whole keeps the limit");
    }

    #[test]
    fn recent_generations_draft_where_the_context_has_no_match() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 1, max_draft: 4, past_match: 0 };
        let mut recent = Recent::default();
        recent.remember(&[1, 2, 3, 4, 5, 6]);
        recent.remember(&[7, 2, 3, 9, 9]);
        // "2 3" is not in the context before its end: the newest generation's continuation.
        assert_eq!(lookup.draft(&[8, 2, 3], &recent, 4), &[9, 9]);
        // "1 2 3" (longer) only in the older generation.
        assert_eq!(lookup.draft(&[1, 2, 3], &recent, 4), &[4, 5, 6]);
        // The context first, at the same length.
        assert_eq!(lookup.draft(&[2, 3, 0, 2, 3], &recent, 4), &[0, 2]);
        // A match at a generation's very end has nothing to draft.
        assert!(lookup.draft(&[5, 6], &Recent::default(), 4).is_empty());
        recent.remember(&[0, 5, 6]);
        assert!(lookup.draft(&[4, 5, 6], &recent, 4).is_empty(), "5 6 ends every generation it is in");
        recent.clear();
        assert!(lookup.draft(&[8, 2, 3], &recent, 4).is_empty());
    }

    #[test]
    fn recent_keeps_the_newest_tokens_only() {
        let mut recent = Recent::default();
        let long: Vec<u32> = (0..Recent::MAX_TOKENS as u32 + 10).collect();
        recent.remember(&[1, 2]);
        recent.remember(&long);
        assert_eq!(recent.tokens(), Recent::MAX_TOKENS);
        assert_eq!(recent.generations.len(), 1, "the older generation made room");
        assert_eq!(recent.generations[0].first(), Some(&10), "the newest tokens of a long one");
        recent.remember(&[3]);
        assert_eq!(recent.generations.len(), 1, "a lone token is nothing to draft from");
    }

    #[test]
    fn no_match_no_draft() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 2, max_draft: 8, past_match: 0 };
        assert!(lookup.draft(&[1, 2, 3, 4, 5], &Recent::default(), 8).is_empty());
        assert!(
            lookup.draft(&[1, 2, 1], &Recent::default(), 8).is_empty(),
            "a single repeated token is below min_ngram"
        );
        assert!(lookup.draft(&[], &Recent::default(), 8).is_empty());
        assert!(lookup.draft(&[7], &Recent::default(), 8).is_empty());
    }
}
