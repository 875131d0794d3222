//! Latency budgets for prefill: how fast this engine prefills (measured on its own forward
//! passes), and how a prompt is cut so that a cold request's prefill fits its budget while a
//! warm one keeps its whole prompt.

/// Runs shorter than this say more about per-run overhead than about speed.
const MIN_MEASURED: usize = 32;

/// A capped prompt keeps at least this many tokens before its end (the cursor).
pub const MIN_TAIL: usize = 32;

/// Tokens of the previous cut that must match for it to be kept.
const SAME_CUT: usize = 8;

/// Prefill speed: an exponential moving average of milliseconds per token over this engine's
/// prefill runs of at least [`MIN_MEASURED`] tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrefillSpeed {
    ms_per_token: Option<f64>,
}

impl PrefillSpeed {
    pub fn record(&mut self, tokens: usize, ms: f64) {
        if tokens < MIN_MEASURED || !ms.is_finite() {
            return;
        }
        let sample = ms / tokens as f64;
        self.ms_per_token = Some(self.ms_per_token.map_or(sample, |average| average * 0.7 + sample * 0.3));
    }

    /// Tokens this engine prefills within `budget_ms`; `None` before any measurement.
    pub fn tokens_within(&self, budget_ms: u64) -> Option<usize> {
        self.ms_per_token.map(|ms| (budget_ms as f64 / ms.max(1e-6)) as usize)
    }

    pub fn ms_per_token(&self) -> Option<f64> {
        self.ms_per_token
    }
}

/// What to run when only `affordable` new tokens may be prefilled: the whole `prompt` when
/// its part after the `reusable` cached tokens fits; else its cached head (at least the first
/// `keep_first` tokens, e.g. BOS) and then its last tokens, as many as fit but at least
/// [`MIN_TAIL`]. They start where the previous cut started while running from there prefills
/// no more than that and keeps at least half the tokens a fresh cut would (`cached_after`
/// holds the cache's tokens after the reusable ones, so cut prompts typed on one line reuse
/// each other even when the measured speed, and with it the window, shrinks), else after the
/// first line break among them (`breaks_line`: a byte-level BPE joins a newline to the
/// indentation after it, so a token holds it rather than ends with it) when that is in the
/// first half of them (a long line is not given up for a line start).
/// Returns the tokens and how many of the prompt's were left out.
pub fn cap(prompt: &[u32], cut: Cut<'_>, affordable: usize, breaks_line: impl Fn(u32) -> bool) -> (Vec<u32>, usize) {
    let Cut { reusable, keep_first, cached_after } = cut;
    let head = reusable.max(keep_first).min(prompt.len());
    let tail = affordable.max(MIN_TAIL);
    if prompt.len() - reusable.min(prompt.len()) <= affordable || head + tail >= prompt.len() {
        return (prompt.to_vec(), 0);
    }
    let window_start = (prompt.len() - tail).max(head);
    let window = &prompt[window_start..];
    let line_start = window.iter().position(|&id| breaks_line(id)).map_or(0, |end| end + 1);
    let fresh = if line_start <= window.len() / 2 { &window[line_start..] } else { window };
    let rest = &prompt[head..];
    let tail = previous_cut(rest, cached_after, affordable, fresh.len()).map_or(fresh, |start| &rest[start..]);
    let mut capped = prompt[..head].to_vec();
    capped.extend_from_slice(tail);
    let left_out = prompt.len() - capped.len();
    (capped, left_out)
}

/// Where in `rest` (the prompt after its cached head) the previous cut starts, when running
/// the prompt from there prefills at most `affordable` tokens the cache does not hold and keeps
/// at least half of `fresh_tail`, the tokens a fresh cut keeps: the earliest such start, which
/// keeps the most of the prompt. (Another file's cut can start with the lines this prompt ends
/// with, such as a `__main__` guard; taking it would leave a prompt of a few tokens.)
fn previous_cut(rest: &[u32], cached_after: &[u32], affordable: usize, fresh_tail: usize) -> Option<usize> {
    let marker = cached_after.get(..SAME_CUT)?;
    let keeps_enough = |start: usize| 2 * (rest.len() - start) >= fresh_tail;
    (0..rest.len().saturating_sub(SAME_CUT - 1))
        .take_while(|&start| keeps_enough(start))
        .filter(|&start| &rest[start..start + SAME_CUT] == marker)
        .find(|&start| {
            let held = rest[start..].iter().zip(cached_after).take_while(|(new, cached)| new == cached).count();
            rest.len() - start - held <= affordable
        })
}

/// What the cache holds, for [`cap`].
#[derive(Clone, Copy)]
pub struct Cut<'a> {
    /// Leading prompt tokens the cache holds.
    pub reusable: usize,
    /// Leading tokens always kept (BOS).
    pub keep_first: usize,
    /// The cache's tokens after the reusable ones (a previous cut's kept lines).
    pub cached_after: &'a [u32],
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWLINE: u32 = 10;

    fn cut(reusable: usize, keep_first: usize) -> Cut<'static> {
        Cut { reusable, keep_first, cached_after: &[] }
    }

    fn prompt(len: u32) -> Vec<u32> {
        // Token 10 ends a line every 8 tokens.
        (1..=len).map(|n| if n % 8 == 0 { NEWLINE } else { 100 + n }).collect()
    }

    #[test]
    fn a_cold_prompt_keeps_its_first_token_and_the_lines_before_its_end_that_fit() {
        let prompt = prompt(400);
        let (capped, left_out) = cap(&prompt, cut(0, 1), 50, |id| id == NEWLINE);
        // The last 50 tokens start mid-line; the cut moves to the next line start.
        assert_eq!(capped[0], prompt[0]);
        assert_eq!(capped[1..], prompt[prompt.len() - 48..]);
        assert_eq!(left_out, prompt.len() - capped.len());
        assert!(capped.len() - 1 <= 50);
    }

    /// A window whose first line break comes late (indented code: its newlines are inside
    /// tokens with the next line's indentation; or one long line) is kept whole, not cut down to
    /// the few tokens after that break.
    #[test]
    fn a_late_first_line_break_does_not_shrink_the_window() {
        let mut prompt: Vec<u32> = (1..=400).map(|n| 100 + n).collect();
        prompt[395] = NEWLINE;
        let (capped, _) = cap(&prompt, cut(0, 1), 50, |id| id == NEWLINE);
        assert_eq!(capped[1..], prompt[prompt.len() - 50..]);
    }

    #[test]
    fn a_warm_prompt_is_whole_and_a_half_warm_one_keeps_its_cached_head() {
        let prompt = prompt(400);
        assert_eq!(cap(&prompt, cut(380, 1), 50, |id| id == NEWLINE), (prompt.clone(), 0), "warm: 20 new tokens fit");
        let (capped, left_out) = cap(&prompt, cut(200, 1), 50, |id| id == NEWLINE);
        assert_eq!(capped[..200], prompt[..200], "the cached head is free");
        assert_eq!(capped[200..], prompt[prompt.len() - 48..]);
        assert_eq!(left_out, 400 - 248);
    }

    #[test]
    fn a_tiny_budget_still_keeps_a_minimum_tail_and_short_prompts_are_never_cut() {
        let prompt = prompt(400);
        let (capped, _) = cap(&prompt, cut(0, 0), 0, |_| false);
        assert_eq!(capped, prompt[400 - MIN_TAIL..]);
        let short = &prompt[..MIN_TAIL];
        assert_eq!(cap(short, cut(0, 1), 0, |_| false), (short.to_vec(), 0));
    }

    #[test]
    fn the_previous_cut_is_kept_while_it_fits_so_keystrokes_reuse_it() {
        let first = prompt(400);
        let (capped, _) = cap(&first, cut(0, 1), 50, |id| id == NEWLINE);
        // The cache now holds `capped` (after its first token) and the user types 2 tokens more:
        // the first line end in the window is now another one, but the previous cut still fits.
        let typed = prompt(402);
        let cached_after = &capped[1..];
        let (next, _) = cap(&typed, Cut { reusable: 1, keep_first: 1, cached_after }, 50, |id| id == NEWLINE);
        assert_eq!(next[..capped.len()], capped[..], "the cut prompt extends the cached one");
        // A slower measured speed shrinks the window past the previous cut's start, but the
        // tokens between are cached: the cut stays where it was.
        let (slower, _) = cap(&typed, Cut { reusable: 1, keep_first: 1, cached_after }, 20, |id| id == NEWLINE);
        assert_eq!(slower, next, "the same cut at a smaller budget");
        // Far beyond the previous cut it moves on to a line start.
        let far = prompt(480);
        let (moved, _) = cap(&far, Cut { reusable: 1, keep_first: 1, cached_after }, 50, |id| id == NEWLINE);
        assert_eq!(moved[1..], far[far.len() - 48..]);
    }

    /// The cache holds another file's cut, whose first lines this prompt ends with: keeping
    /// that "previous cut" would leave a prompt of a few tokens, so the cut is a fresh one.
    #[test]
    fn a_previous_cut_that_keeps_less_than_half_a_fresh_one_is_not_kept() {
        let other = prompt(400);
        let (capped, _) = cap(&other, cut(0, 1), 50, |id| id == NEWLINE);
        let cached_after = &capped[1..];
        let mut this: Vec<u32> = (1..=400).map(|n| if n % 8 == 0 { NEWLINE } else { 1000 + n }).collect();
        this.extend_from_slice(&cached_after[..12]);
        let (next, _) = cap(&this, Cut { reusable: 1, keep_first: 1, cached_after }, 50, |id| id == NEWLINE);
        assert!(next.len() > 40, "a fresh cut keeps the lines that fit: {} tokens", next.len());
        assert_eq!(next[next.len() - 12..], cached_after[..12]);
    }

    #[test]
    fn speed_is_measured_on_long_runs_only() {
        let mut speed = PrefillSpeed::default();
        assert_eq!(speed.tokens_within(300), None);
        speed.record(4, 100.0);
        assert_eq!(speed.tokens_within(300), None, "a short run measures overhead");
        speed.record(100, 300.0);
        assert_eq!(speed.tokens_within(300), Some(100));
        speed.record(100, 100.0);
        assert_eq!(speed.tokens_within(300), Some(125), "3 ms/token averaged with 1 ms/token: 2.4");
    }
}
