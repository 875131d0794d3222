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
//! (`repeating`). Where the model turns a copied draft down at one token, it has most often put
//! another value into the same template, and the next draft goes on after it (`Resume`).

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
    /// slower than no drafts at all (0.97×, 2026-12-03). Where no match of two tokens or more is
    /// found, a `resume` the last draft left drafts next.
    pub fn draft(&self, context: &[u32], recent: &Recent, limit: usize, resume: Option<Resume>) -> Draft {
        let limit = limit.min(self.max_draft);
        if limit == 0 {
            return Draft::default();
        }
        let matched = |n| self.matched(context, recent, limit, n);
        if let Some(draft) = (self.min_ngram.max(2)..=self.max_ngram).rev().find_map(matched) {
            return draft;
        }
        if let Some(draft) = resume.and_then(|resume| resume.draft(context, recent, limit)) {
            return draft;
        }
        if self.min_ngram <= 1 && limit >= 2 {
            return matched(1).unwrap_or_default();
        }
        Draft::default()
    }

    /// The draft after the latest occurrence of the context's last `n` tokens: in the context
    /// first, then in `recent` generations, the newest first.
    fn matched(&self, context: &[u32], recent: &Recent, limit: usize, n: usize) -> Option<Draft> {
        let pattern = context.get(context.len().checked_sub(n)?..)?;
        // How far the match at `at` in `tokens` reaches back, and how many tokens it may draft.
        let reach = |tokens: &[u32], at| {
            let shared = agreeing(tokens, at, context, self.max_draft);
            (shared, limit.min(shared + self.past_match))
        };
        if let Some(at) = after_latest(context, pattern) {
            let (shared, length) = reach(context, at);
            let origin = Origin { from: Span { source: Source::Context, at, end: context.len() }, shared };
            return Some(Draft { tokens: repeating(&context[at..], length), origin: Some(origin) });
        }
        let (index, tokens, at) = recent
            .generations
            .iter()
            .enumerate()
            .rev()
            .find_map(|(index, tokens)| Some((index, tokens, after_latest(tokens, pattern)?)))?;
        let (shared, length) = reach(tokens, at);
        let origin = Origin { from: Span { source: Source::Recent(index), at, end: tokens.len() }, shared };
        Some(Draft { tokens: tokens[at..][..length.min(tokens.len() - at)].to_vec(), origin: Some(origin) })
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

/// A draft and where it was copied from.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub tokens: Vec<u32>,
    origin: Option<Origin>,
}

/// Where a draft's tokens were copied from, after a match that shared `shared` tokens with the
/// context's end.
#[derive(Clone, Copy, Debug)]
struct Origin {
    from: Span,
    shared: usize,
}

/// Tokens `at..end` of a source (its `end` tokens were all it had when the span was taken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    source: Source,
    at: usize,
    end: usize,
}

impl Span {
    fn tokens<'a>(&self, context: &'a [u32], recent: &'a Recent) -> Option<&'a [u32]> {
        let source = match self.source {
            Source::Context => context,
            Source::Recent(index) => recent.generations.get(index)?,
        };
        source.get(self.at..self.end.min(source.len()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Context,
    /// The recent generation of that index (the same all through a generation).
    Recent(usize),
}

/// Where the next draft goes on after a draft the model turned down at one token: the draft's
/// source past that token, as if the model's token had taken its place. Tests and lists repeat
/// a template with other values (`assert add(1, 2) == 3` after `assert add(0, 0) == 0`), and
/// the tokens after the new value are the template's again; but the context's last tokens, the
/// new value among them, match nowhere, so the lookup found no draft, or a single token's
/// guess, until the template had gone on for two tokens. On the unit-test workload (`cargo
/// bench --bench engine -- --runs 1 --rounds 1 --scaling '' --speculation`, with and without
/// `--targets`, 2026-12-05; every run and row counted), going on for up to `RESUMED` tokens
/// after drafts from matches of `RESUME_AFTER_SHARED` tokens or more took 195 verifying runs
/// against 203 with 640 drafted rows against 627 on this repository's two functions, 876
/// against 889 (4,555 rows against 4,562) on 14 more of its converter's and its sample
/// project's, and 918 against 925 (4,346 rows, the same) on 15 of Python's standard library
/// (`repeating`'s); the docstring workload 175 against 178 (192 rows against 185), 848 against
/// 853 (1,238 against 1,215) and 925 against 927 (1,410 against 1,389). A replay of the logged
/// generations under each rule had given these unit-test counts exactly. Weighing a run as 1
/// and a row as 0.2 to 0.25 of one (`make bench`'s `lookup_costs`), that is 0.3 to 1.7 % less
/// time on each of the three. Going on after any draft, whatever its match shared, took fewer
/// runs but more rows (188, 869 and 913 runs, 674, 4,674 and 4,487 rows), more time on two of
/// the three; going on for 4 tokens gained more on the first and less on the other two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resume(Span);

/// A draft goes on after a token turned down only where its match shared this many tokens
/// (`Resume`): a shorter match is too weak a sign of a template.
const RESUME_AFTER_SHARED: usize = 3;
/// The most tokens a resumed draft has (`Resume`).
const RESUMED: usize = 2;

impl Draft {
    /// Where the next draft goes on, after the model took the first `accepted` of these tokens
    /// and then another (`Resume`): none where it took them all.
    pub fn resume_after(&self, accepted: usize) -> Option<Resume> {
        let origin = self.origin?;
        let template = accepted < self.tokens.len() && origin.shared >= RESUME_AFTER_SHARED;
        template.then_some(Resume(Span { at: origin.from.at + accepted + 1, ..origin.from }))
    }
}

impl Resume {
    fn draft(self, context: &[u32], recent: &Recent, limit: usize) -> Option<Draft> {
        let tokens = self.0.tokens(context, recent)?;
        let length = tokens.len().min(limit).min(RESUMED);
        let origin = Origin { from: self.0, shared: 0 };
        (length > 0).then(|| Draft { tokens: tokens[..length].to_vec(), origin: Some(origin) })
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
        assert_eq!(lookup.draft(&context, &Recent::default(), 10, None).tokens, &[4, 5, 6, 7]);
        assert_eq!(lookup.draft(&context, &Recent::default(), 2, None).tokens, &[4, 5], "the caller's limit");
        assert_eq!(lookup.draft(&context, &Recent::default(), 0, None).tokens, &[] as &[u32]);
        // No longer than the match reaches back: 9 1 2 3 and 0 1 2 3 share three tokens.
        let context = [9, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 10, None).tokens, &[4, 5, 6]);
        // The latest occurrence wins: 7 follows "1 2 3" the second time.
        let context = [1, 2, 3, 5, 1, 2, 3, 7, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4, None).tokens, &[7, 1, 2]);
        // A longer match beats a more recent shorter one.
        let context = [1, 2, 3, 4, 9, 3, 5, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 2, None).tokens, &[4, 9]);
        // Where the match's continuation reaches the context's end, the context is repeating:
        // the draft repeats it on.
        let context = [5, 6, 5, 6, 5, 6];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4, None).tokens, &[5, 6, 5, 6]);
        let context = [1, 2, 3, 1, 2, 3, 1, 2];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4, None).tokens, &[3, 1, 2, 3], "a period of three");
        // A single-token match drafts a single token.
        let context = [5, 6, 7, 5];
        assert_eq!(lookup.draft(&context, &Recent::default(), 4, None).tokens, &[6]);
        // ... but not right after a draft turned down whole (the limit is 1 then).
        assert!(lookup.draft(&context, &Recent::default(), 1, None).tokens.is_empty());
        assert_eq!(
            lookup.draft(&[5, 6, 7, 5, 6], &Recent::default(), 1, None).tokens,
            &[7],
            "a longer match still drafts"
        );
    }

    #[test]
    fn a_draft_runs_past_the_shared_stretch_by_past_match() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 1, max_draft: 8, past_match: 2 };
        // 9 1 2 3 and 0 1 2 3 share three tokens: three, then two more.
        let context = [9, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3];
        assert_eq!(lookup.draft(&context, &Recent::default(), 10, None).tokens, &[4, 5, 6, 7, 8]);
        // A single token's match: one, then two more, within the caller's limit.
        let context = [5, 6, 7, 8, 5];
        assert_eq!(lookup.draft(&context, &Recent::default(), 8, None).tokens, &[6, 7, 8]);
        assert_eq!(lookup.draft(&context, &Recent::default(), 2, None).tokens, &[6, 7]);
        assert!(lookup.draft(&context, &Recent::default(), 1, None).tokens.is_empty(), "still none after a miss");
    }

    #[test]
    fn a_draft_turned_down_at_one_token_goes_on_after_it() {
        let lookup = PromptLookup { max_ngram: 3, min_ngram: 1, max_draft: 8, past_match: 2 };
        // A template with other values: f ( 1 , 2 ) = 3 ; then f ( 1 , again.
        let template = [10, 11, 1, 12, 2, 13, 3, 14];
        let context = [&template[..], &[10, 11, 1, 12]].concat();
        let draft = lookup.draft(&context, &Recent::default(), 8, None);
        assert_eq!(draft.tokens, &[2, 13, 3, 14, 10, 11]);
        assert_eq!(draft.resume_after(6), None, "taken whole: the lookup goes on as it is");
        // The model writes 5 where the draft had 2: nothing matches "12 5" or "5".
        let resume = draft.resume_after(0);
        let after = [&context[..], &[5]].concat();
        assert!(lookup.draft(&after, &Recent::default(), 8, None).tokens.is_empty());
        assert_eq!(lookup.draft(&after, &Recent::default(), 8, resume).tokens, &[13, 3], "the template after the 2");
        assert_eq!(lookup.draft(&after, &Recent::default(), 1, resume).tokens, &[13], "within the caller's limit");
        // A match of two tokens or more still comes first.
        let after = [&context[..], &[3, 14]].concat();
        assert_eq!(lookup.draft(&after, &Recent::default(), 8, resume).tokens, &[10, 11, 1, 12]);
        // After a match of fewer than 3 shared tokens, nothing goes on.
        let weak = [7, 1, 12, 2, 13, 9, 1, 12];
        let draft = lookup.draft(&weak, &Recent::default(), 8, None);
        assert_eq!(draft.tokens, &[2, 13, 9, 1]);
        assert_eq!(draft.resume_after(0), None);
        // From a recent generation: the model took the 2, then wrote 7 where the draft had 13.
        let mut recent = Recent::default();
        recent.remember(&template);
        let context = [20, 11, 1, 12];
        let draft = lookup.draft(&context, &recent, 8, None);
        assert_eq!(draft.tokens, &[2, 13, 3, 14]);
        let after = [&context[..], &[2, 7]].concat();
        assert_eq!(lookup.draft(&after, &recent, 8, draft.resume_after(1)).tokens, &[3, 14]);
        // A resumed draft turned down goes on no further.
        let resumed = lookup.draft(&after, &recent, 8, draft.resume_after(1));
        assert_eq!(resumed.resume_after(0), None);
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
        assert_eq!(lookup.draft(&[8, 2, 3], &recent, 4, None).tokens, &[9, 9]);
        // "1 2 3" (longer) only in the older generation.
        assert_eq!(lookup.draft(&[1, 2, 3], &recent, 4, None).tokens, &[4, 5, 6]);
        // The context first, at the same length.
        assert_eq!(lookup.draft(&[2, 3, 0, 2, 3], &recent, 4, None).tokens, &[0, 2]);
        // A match at a generation's very end has nothing to draft.
        assert!(lookup.draft(&[5, 6], &Recent::default(), 4, None).tokens.is_empty());
        recent.remember(&[0, 5, 6]);
        assert!(lookup.draft(&[4, 5, 6], &recent, 4, None).tokens.is_empty(), "5 6 ends every generation it is in");
        recent.clear();
        assert!(lookup.draft(&[8, 2, 3], &recent, 4, None).tokens.is_empty());
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
        assert!(lookup.draft(&[1, 2, 3, 4, 5], &Recent::default(), 8, None).tokens.is_empty());
        assert!(
            lookup.draft(&[1, 2, 1], &Recent::default(), 8, None).tokens.is_empty(),
            "a single repeated token is below min_ngram"
        );
        assert!(lookup.draft(&[], &Recent::default(), 8, None).tokens.is_empty());
        assert!(lookup.draft(&[7], &Recent::default(), 8, None).tokens.is_empty());
    }
}
