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
/// no more than that (`cached_after` holds the cache's tokens after the reusable ones, so cut
/// prompts typed on one line reuse each other even when the measured speed, and with it the
/// window, shrinks), else after the first line end among them (`ends_line`).
/// Returns the tokens and how many of the prompt's were left out.
pub fn cap(prompt: &[u32], cut: Cut<'_>, affordable: usize, ends_line: impl Fn(u32) -> bool) -> (Vec<u32>, usize) {
    let Cut { reusable, keep_first, cached_after } = cut;
    let head = reusable.max(keep_first).min(prompt.len());
    let tail = affordable.max(MIN_TAIL);
    if prompt.len() - reusable.min(prompt.len()) <= affordable || head + tail >= prompt.len() {
        return (prompt.to_vec(), 0);
    }
    let window_start = (prompt.len() - tail).max(head);
    let window = &prompt[window_start..];
    let line_start = window.iter().position(|&id| ends_line(id)).map_or(0, |end| end + 1);
    let tail = match previous_cut(&prompt[head..], cached_after, affordable) {
        Some(start) => &prompt[head + start..],
        None if line_start < window.len() => &window[line_start..],
        None => window,
    };
    let mut capped = prompt[..head].to_vec();
    capped.extend_from_slice(tail);
    let left_out = prompt.len() - capped.len();
    (capped, left_out)
}

/// Where in `rest` (the prompt after its cached head) the previous cut starts, when running
/// the prompt from there prefills at most `affordable` tokens the cache does not hold: the
/// earliest such start, which keeps the most of the prompt.
fn previous_cut(rest: &[u32], cached_after: &[u32], affordable: usize) -> Option<usize> {
    let marker = cached_after.get(..SAME_CUT)?;
    (0..rest.len().saturating_sub(SAME_CUT - 1)).filter(|&start| &rest[start..start + SAME_CUT] == marker).find(
        |&start| {
            let held = rest[start..].iter().zip(cached_after).take_while(|(new, cached)| new == cached).count();
            rest.len() - start - held <= affordable
        },
    )
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
