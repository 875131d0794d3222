//! The ring of recently edited and viewed regions, in the manner of llama.vim's chunk ring: a
//! few short runs of lines around the places the user worked, newest first; a region mostly
//! equal to a newer one is dropped.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ropey::Rope;

/// Regions kept.
const RING_SIZE: usize = 8;
/// Lines per region, centred on the edit or view.
const REGION_LINES: usize = 16;
/// A new region replaces older ones that share more than this share of their lines (Dice).
const SIMILARITY_TO_EVICT: f64 = 0.9;

/// Why a region is in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    Edited,
    Viewed,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Edited => "edited",
            Reason::Viewed => "viewed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) path: PathBuf,
    pub(crate) lines: Range<usize>,
    pub(crate) text: String,
    pub(crate) reason: Reason,
}

#[derive(Default)]
pub(crate) struct Ring {
    regions: VecDeque<Region>,
}

fn dice(a: &str, b: &str) -> f64 {
    let lines_a: HashSet<&str> = a.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    let lines_b: HashSet<&str> = b.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    if lines_a.is_empty() && lines_b.is_empty() {
        return 1.0;
    }
    2.0 * lines_a.intersection(&lines_b).count() as f64 / (lines_a.len() + lines_b.len()) as f64
}

impl Ring {
    /// Records the region of `rope` around `line` of the file at `path`.
    pub(crate) fn record(&mut self, path: &Path, rope: &Rope, line: usize, reason: Reason) {
        let line_count = rope.len_lines();
        let start = line.saturating_sub(REGION_LINES / 2).min(line_count.saturating_sub(1));
        let end = (start + REGION_LINES).min(line_count);
        let text = rope.byte_slice(rope.line_to_byte(start)..rope.line_to_byte(end)).to_string();
        let text = text.trim_end().to_string();
        if text.trim().is_empty() {
            return;
        }
        self.regions.retain(|region| {
            let same_place = region.path == path && region.lines.start < end && start < region.lines.end;
            !same_place && dice(&region.text, &text) <= SIMILARITY_TO_EVICT
        });
        self.regions.push_front(Region { path: path.to_path_buf(), lines: start..end, text, reason });
        self.regions.truncate(RING_SIZE);
    }

    /// Regions of files other than `current`, newest first.
    pub(crate) fn recent<'a>(&'a self, current: Option<&'a Path>) -> impl Iterator<Item = &'a Region> + 'a {
        self.regions.iter().filter(move |region| Some(region.path.as_path()) != current)
    }

    /// Forgets regions of a file that is gone.
    pub(crate) fn forget(&mut self, path: &Path) {
        self.regions.retain(|region| region.path != path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_one_per_place_and_near_duplicates_evicted() {
        let text: String = (0..100).map(|i| format!("line_{i} = {i}\n")).collect();
        let rope = Rope::from_str(&text);
        let mut ring = Ring::default();
        ring.record(Path::new("/w/a.py"), &rope, 10, Reason::Viewed);
        ring.record(Path::new("/w/b.py"), &rope, 50, Reason::Edited);
        // Editing near the same place replaces the older region of that place.
        ring.record(Path::new("/w/a.py"), &rope, 12, Reason::Edited);
        let regions: Vec<(String, usize, Reason)> =
            ring.recent(None).map(|r| (r.path.display().to_string(), r.lines.start, r.reason)).collect();
        assert_eq!(regions, [("/w/a.py".into(), 4, Reason::Edited), ("/w/b.py".into(), 42, Reason::Edited)]);
        // The same text in another file is a near duplicate: the older copy goes.
        ring.record(Path::new("/w/c.py"), &rope, 50, Reason::Viewed);
        assert_eq!(ring.recent(None).count(), 2);
        // The current file's regions are not offered.
        assert!(ring.recent(Some(Path::new("/w/a.py"))).all(|r| r.path != Path::new("/w/a.py")));
        for i in 0..20 {
            let other = Rope::from_str(&format!("unique_{i}()\n"));
            ring.record(Path::new(&format!("/w/f{i}.py")), &other, 0, Reason::Viewed);
        }
        assert_eq!(ring.recent(None).count(), RING_SIZE, "the ring is bounded");
    }
}
