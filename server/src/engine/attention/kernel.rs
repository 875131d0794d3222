//! The attention arithmetic, on plain slices: rotary embedding, and causal grouped-query
//! attention over a KV cache in blocks of keys with a numerically stable softmax (online
//! softmax, as in flash attention), the queries that read a block computed together.
//!
//! Every query row's result depends only on its own query, its keys and values and its
//! position: keys are taken in fixed blocks counted from key 0, each block gives a partial
//! softmax (its maximum, its sum, its weighted values) and the partials are merged in block
//! order. So a row gives the same bits whether it runs alone, in a prefill chunk or in a
//! speculative draft, and however the work is split across threads.
//!
//! The KV cache is bf16 (`half::bf16`): half the bytes of f32 a decode step reads at long
//! context. The queries and the softmax weights are rounded to bf16 too (`round_bf16`), so every
//! product of the attention is a product of two bf16 numbers, exact in f32. The products are
//! summed in a fixed order, two at a time: with AVX512-BF16 one `VDPBF16PS` adds a pair's two
//! products to an f32 accumulator (the odd element's first, each addition rounded), elsewhere
//! two FMAs in that order do the same, so every path gives the same bits. The dot products do
//! twice the multiply-adds per instruction of f32 FMAs: a speculative draft, bound by its
//! arithmetic, gets cheaper (`timing::time_decode`; docs/configuration.md, `NIB_ATTENTION`).
//!
//! Values are kept in pairs of rows (`value_at`): the two rows' elements of one dimension side
//! by side, the pair a dot product sums. Keys are kept in panels of `PANEL` keys (`key_at`): a
//! panel holds its keys' first two dimensions side by side (each key's pair in turn), then the
//! next two, and so on, which is the layout the score loop multiplies, one register of 16
//! keys' pairs by one query pair. So no call transposes keys. (Transposing each block's keys as
//! it was read, a layer's decode at 4,096 cached tokens took 0.182 ms on one thread with the
//! cache warm, against 0.125 ms in panels: `timing::time_attend`, with the fp16 cache before.)
//! A cache therefore holds a multiple of `PANEL` rows per head.

use std::ops::Range;

use half::bf16;

use crate::engine::kernels::exp;

/// Keys per block: a block of one KV head's keys and values (2 × 256 rows × 64 floats, 128 KiB)
/// stays in the L2 cache while every query of its tile reads it, and the fixed cost of each
/// (query, block) pair (its softmax reductions, the merge) is spread over 256 keys: prefill
/// chunks far into the context measured faster than with 64.
pub(crate) const BLOCK: usize = 256;

/// At most this many query rows run as "decode": the work is split by blocks of keys (each
/// block read once for all rows), else by tiles of rows (prefill). The longest draft (16
/// tokens, `lookup::PromptLookup`, with the token before it) is 17 rows, which as tiles of 16
/// rows were a large tile and a one-row tile per KV head: one thread ran two of the three large
/// ones while the other ran one. By blocks (`timing::time_decode`, two threads, one layer's
/// median, the limits 16 and 32 in one build, AMD EPYC, 2026-12-05), 17 rows took 0.133–0.136
/// ms against 0.165–0.169 at 512 cached tokens, 0.499–0.507 against 0.641–0.648 at 2,048 and
/// 0.988 against 1.280–1.289 at 4,096; 24 rows 0.187–0.191 against 0.196–0.203 at 512 and
/// 1.362–1.370 against 1.524–1.535 at 4,096; 32 rows about the same (0.250–0.252 against
/// 0.246–0.248, 1.794–1.798 against 1.837–1.846).
const FEW_ROWS: usize = 32;

/// From this many rows, a call is a draft, bound by its arithmetic (`pair_order`).
const DRAFT_ROWS: usize = 3;

fn is_draft(call: &Call<'_>) -> bool {
    call.rows >= DRAFT_ROWS
}

/// The most blocks of keys one decode unit runs in turn (1,024 keys, of one KV head or two),
/// each block's keys and values prefetched into L2 while the block before is computed: a decode
/// step at long context reads its whole cache from memory once, and one block at a time the
/// loads waited. Each block still gets its own partials, merged in block order, so the grouping
/// changes no bit.
const BLOCKS_PER_UNIT: usize = 4;

/// Keys per panel of the cache's keys (`key_at`): one 512-bit register, or two 256-bit ones,
/// of f32 scores.
pub(crate) const PANEL: usize = 16;

/// Where dimension `dim` of key `row` lies among one KV head's keys of `head_dim` dimensions:
/// panel `row / PANEL`, in it the pair of dimensions `dim / 2` (each key's two elements side
/// by side, key by key), the element `dim % 2` of the pair (a last dimension without a pair,
/// where `head_dim` is odd, one element per key).
pub(crate) fn key_at(row: usize, dim: usize, head_dim: usize) -> usize {
    let pair = (row / PANEL) * PANEL * head_dim + (dim / 2) * 2 * PANEL;
    if (dim | 1) < head_dim { pair + row % PANEL * 2 + dim % 2 } else { pair + row % PANEL }
}

/// Where dimension `dim` of value `row` lies among one KV head's values of `head_dim`
/// dimensions: the pair of rows `row / 2`, in it the dimension's two elements side by side.
pub(crate) fn value_at(row: usize, dim: usize, head_dim: usize) -> usize {
    (row / 2) * 2 * head_dim + dim * 2 + row % 2
}

/// Magnitudes below this (2^-50) round to +0 (`round_bf16`), so that a product of two rounded
/// numbers is 0 or at least 2^-100, and every sum of such products a multiple of 2^-114: no
/// intermediate result is ever subnormal, where `VDPBF16PS` (which flushes subnormals to 0)
/// and an FMA would differ. Keys, values and queries are never this small but as rounding
/// noise; a softmax weight this small is 2^-50 of the block's largest one.
const TINY: f32 = f32::from_bits((127 - 50) << 23);

/// `x` (finite) rounded to the nearest bf16, ties to even, as an f32 (its low 16 bits 0);
/// magnitudes below `TINY` become +0. Integer arithmetic, so it vectorises and gives the same
/// bits on every CPU.
#[inline(always)]
pub(crate) fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    if x.abs() < TINY { 0.0 } else { f32::from_bits(rounded) }
}

/// `to[i] = from[i]` rounded to bf16 (`round_bf16`).
pub(crate) fn to_bf16(from: &[f32], to: &mut [bf16]) {
    assert_eq!(from.len(), to.len());
    for (to, &from) in to.iter_mut().zip(from) {
        *to = bf16::from_bits((round_bf16(from).to_bits() >> 16) as u16);
    }
}

/// Query rows per unit of work in prefill: with SmolLM2-135M's groups of 3 heads, 48 queries
/// share each read of a block's keys.
const TILE_ROWS: usize = 16;

/// What the node's attributes and the tensors' shapes fix.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Dims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q·k (`1/sqrt(head_dim)` when the node says 0).
    pub scale: f32,
    /// `softcap · tanh(score / softcap)` when positive.
    pub softcap: f32,
    /// Each row sees only its last `window` keys (itself included) when set.
    pub window: Option<usize>,
}

impl Dims {
    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Rotates `x` (one head, `head_dim` floats) by the angles of one position: `cos` and `sin` are
/// that position's row of the caches (`rotary_dim / 2` values; dimensions past `rotary_dim`
/// stay as they are). Non-interleaved pairs dimension `i` with `i + rotary_dim / 2`,
/// interleaved pairs `2i` with `2i + 1`.
pub(crate) fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (x1, x2) = (x[a], x[b]);
        x[a] = x1 * cos[i] - x2 * sin[i];
        x[b] = x2 * cos[i] + x1 * sin[i];
    }
}

/// One call's tensors. `queries` is `[rows][heads][head_dim]` (rotary applied), `keys` and
/// `values` (bf16) hold `stride` rows (a multiple of `PANEL`) per KV head, the new rows already
/// written at `past..past + rows`: `values` is `[kv_heads][stride]` in pairs of rows
/// (`value_at`), `keys` in panels (`key_at`). A value row past the last one written that
/// shares its pair holds finite numbers (`op` writes zeros there): it is multiplied by a
/// weight of 0. `out` is `[rows][heads * head_dim]`.
pub(crate) struct Call<'a> {
    pub dims: &'a Dims,
    pub queries: &'a [f32],
    pub keys: &'a [bf16],
    pub values: &'a [bf16],
    pub stride: usize,
    pub past: usize,
    pub rows: usize,
}

/// Runs `count` independent units, possibly on several threads (ONNX Runtime's pool).
pub(crate) type ForEach<'f> = &'f dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// A pointer that units write disjoint parts of.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every unit writes only its own disjoint range (see each use).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    /// # Safety
    /// `start + len` is within the buffer and no other unit touches the range meanwhile.
    unsafe fn slice(self, start: usize, len: usize) -> &'static mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// How this machine computes the blocks' partials (always the same one on a machine). Every
/// path gives the same bits (`tests::every_path_gives_the_same_bits`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// `fma64`'s register tiles in 512-bit registers, a pair of products a `VDPBF16PS`.
    Bf16,
    /// The same tiles, a pair of products two FMAs.
    Avx512,
    /// `fma64`'s register tiles in 256-bit registers (heads of 64 dimensions), else plain loops
    /// compiled for AVX2 and FMA.
    Avx2,
    /// Plain loops, for CPUs without AVX2 and FMA (and the tests' mirror).
    Portable,
}

impl Path {
    fn detect() -> Path {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            if !std::arch::is_x86_feature_detected!("avx512f") {
                return Path::Avx2;
            }
            let dot =
                std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512bf16");
            return if dot && dot_adds_as_two_fmas() { Path::Bf16 } else { Path::Avx512 };
        }
        Path::Portable
    }

    /// The paths this CPU can run (the tests compare them).
    #[cfg(test)]
    fn available() -> Vec<Path> {
        let all = [Path::Bf16, Path::Avx512, Path::Avx2, Path::Portable];
        all.into_iter().skip_while(|&path| path != Path::detect()).collect()
    }
}

/// Whether this CPU's `VDPBF16PS` adds a pair's two products as two FMAs do, the odd
/// element's first, each addition rounded to nearest even (the instruction's documented
/// arithmetic, which AMD's Zen 4 follows), checked once on `dot_probe`'s lanes: a CPU that
/// differed would change the bits, so it takes the FMA tiles instead.
#[cfg(target_arch = "x86_64")]
fn dot_adds_as_two_fmas() -> bool {
    static MATCHES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MATCHES.get_or_init(|| {
        let (accumulators, a, b) = dot_probe();
        let matches =
            accumulators.chunks_exact(16).zip(a.chunks_exact(32).zip(b.chunks_exact(32))).all(|(acc, (a, b))| {
                // SAFETY: the caller saw AVX-512 F, BW and BF16.
                let lanes =
                    unsafe { fma64::dot_lanes(acc.try_into().unwrap(), a.try_into().unwrap(), b.try_into().unwrap()) };
                lanes.iter().enumerate().all(|(i, lane)| {
                    lane.to_bits() == two_fmas(acc[i], [a[2 * i], a[2 * i + 1]], [b[2 * i], b[2 * i + 1]]).to_bits()
                })
            });
        if !matches {
            tracing::info!("this CPU's VDPBF16PS rounds otherwise than two FMAs: the attention runs on FMAs");
        }
        matches
    })
}

/// `acc` plus the products of two pairs of bf16 numbers (as bits), the odd elements' first,
/// each addition rounded (each product is exact).
fn two_fmas(acc: f32, a: [u16; 2], b: [u16; 2]) -> f32 {
    let number = |bits: u16| f32::from_bits(u32::from(bits) << 16);
    (acc + number(a[1]) * number(b[1])) + number(a[0]) * number(b[0])
}

/// 64 lanes of (accumulator, pair, pair) of numbers between 2^-20 and 2^20 in magnitude (no
/// sum is subnormal), on which adding a pair's products in the other order, or both at once,
/// gives other bits in some lanes (`tests::the_dot_probe_tells_the_orders_apart`).
fn dot_probe() -> (Vec<f32>, Vec<u16>, Vec<u16>) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mantissa = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        round_bf16(mantissa * 2f32.powi((state % 41) as i32 - 20))
    };
    let accumulators = (0..64).map(|_| next()).collect();
    let mut pairs = || (0..128).map(|_| (next().to_bits() >> 16) as u16).collect::<Vec<u16>>();
    let a = pairs();
    (accumulators, a, pairs())
}

/// Causal grouped-query attention of `call`'s rows, written to `out`.
pub(crate) fn attend(call: &Call<'_>, out: &mut [f32], for_each: ForEach<'_>) {
    attend_on(Path::detect(), call, out, for_each)
}

fn attend_on(path: Path, call: &Call<'_>, out: &mut [f32], for_each: ForEach<'_>) {
    let dims = call.dims;
    assert_eq!(out.len(), call.rows * dims.heads * dims.head_dim);
    assert_eq!(call.queries.len(), out.len());
    assert!(call.past + call.rows <= call.stride && call.stride.is_multiple_of(PANEL));
    assert_eq!(call.keys.len(), dims.kv_heads * call.stride * dims.head_dim);
    assert_eq!(call.values.len(), call.keys.len());
    let queries: Vec<f32> = call.queries.iter().map(|&q| round_bf16(q)).collect();
    let call = &Call { queries: &queries, ..*call };
    if call.rows <= FEW_ROWS {
        attend_by_blocks(path, call, out, for_each);
    } else {
        attend_by_tiles(path, call, out, for_each);
    }
}

/// How many units decode's `pairs` (KV head, block) pairs are cut into, unit `u` running pairs
/// `u * pairs / units..(u + 1) * pairs / units`: as few as keep every unit within
/// `BLOCKS_PER_UNIT` pairs, in an even number, so that the units, whose sizes differ by one pair
/// at most, share out evenly between two threads. Units of four at fixed boundaries made 3 of
/// 12 pairs (SmolLM2-135M's 3 KV heads, 769 to 1,024 keys) and 2 of 6 (4 and 2 pairs): one thread
/// of two ran twice the other's pairs while the other waited.
fn decode_units(pairs: usize) -> usize {
    let units = pairs.div_ceil(BLOCKS_PER_UNIT);
    (units + units % 2).min(pairs)
}

/// The (KV head, block) pairs in the order the units run them, and how many units there are
/// (unit `u` runs the pairs `u * pairs / units..(u + 1) * pairs / units` in turn, each
/// prefetching the next one's keys and values).
///
/// A decode step (one row, or two) reads its whole cache from memory: KV head by KV head,
/// in `decode_units` runs of consecutive blocks, so that each block's loads are prefetched
/// while the one before is computed. A draft (`DRAFT_ROWS` rows or more) is bound by its
/// arithmetic instead, and a pair's work is its block's length in keys, a whole `BLOCK` but
/// for each head's last one: one pair per unit, block by block, so that the whole blocks come
/// first and the short last ones fill in at the end, whichever thread is free taking the next.
/// The decode runs of equal pair counts left one thread idle while the other ran a unit holding
/// more whole blocks. `timing::time_decode`, two threads, one layer's median, the two orders in
/// one build (AMD EPYC, 2026-12-05): 9 rows at 512 cached tokens 0.071 ms against 0.087–0.089,
/// 5 rows 0.041 against 0.049–0.050, 3 rows 0.029 against 0.033–0.034; at 2,048 tokens 9 rows
/// 0.266 against 0.285–0.303, at 4,096 0.534 against 0.548–0.566. For a decode step the order
/// made no such difference (one row at 4,096 tokens 0.136–0.139 against 0.126–0.133).
fn pair_order(call: &Call<'_>, blocks: usize) -> (Vec<(usize, usize)>, usize) {
    let kv_heads = call.dims.kv_heads;
    let pairs = kv_heads * blocks;
    if is_draft(call) {
        let order = (0..pairs).map(|at| (at % kv_heads, at / kv_heads)).collect();
        return (order, pairs);
    }
    let order = (0..pairs).map(|at| (at / blocks, at % blocks)).collect();
    (order, decode_units(pairs))
}

/// Floats of one partial: maximum, sum, then the weighted values.
fn partial_len(dims: &Dims) -> usize {
    dims.head_dim + 2
}

fn blocks(call: &Call<'_>) -> usize {
    (call.past + call.rows).div_ceil(BLOCK)
}

/// Decode and drafts: each (KV head, block of keys) pair (fixed boundaries counted from key 0)
/// computes its block's partials of every row and query head of the group, and then one unit
/// per KV head merges them in block order. How the pairs are shared out is `pair_order`'s.
fn attend_by_blocks(path: Path, call: &Call<'_>, out: &mut [f32], for_each: ForEach<'_>) {
    let dims = call.dims;
    let (blocks, group, plen) = (blocks(call), dims.group(), partial_len(dims));
    let per_block = call.rows * group * plen;
    let pairs = dims.kv_heads * blocks;
    let mut partials = vec![0.0f32; pairs * per_block];
    let shared = Shared(partials.as_mut_ptr());
    let (order, units) = pair_order(call, blocks);
    // A draft's unit prefetches the next unit's pair, a decode unit only its own next one.
    let across_units = is_draft(call);
    for_each(units, &|unit| {
        let end = (unit + 1) * pairs / units;
        for at in unit * pairs / units..end {
            let (kv_head, block) = order[at];
            // SAFETY: the unit owns its pairs' partials.
            let slots = unsafe { shared.slice((kv_head * blocks + block) * per_block, per_block) };
            let next = if across_units || at + 1 < end { order.get(at + 1).copied() } else { None };
            block_partials(path, call, (kv_head, block), next, 0..call.rows, slots);
        }
    });
    let output = Shared(out.as_mut_ptr());
    let row_len = dims.heads * dims.head_dim;
    for_each(dims.kv_heads, &|kv_head| {
        let mut state = vec![0.0f32; plen];
        for row in 0..call.rows {
            for member in 0..group {
                state.fill(0.0);
                for block in 0..blocks {
                    let at = (kv_head * blocks + block) * per_block;
                    let slot = &partials[at + (row * group + member) * plen..][..plen];
                    merge(&mut state, slot);
                }
                let head = kv_head * group + member;
                // SAFETY: KV head `kv_head` owns its query heads' columns of every row.
                let target = unsafe { output.slice(row * row_len + head * dims.head_dim, dims.head_dim) };
                finish(&state, target);
            }
        }
    });
}

/// Prefill: one unit per (KV head, tile of rows) runs over the blocks its rows see, merging
/// each block's partials as it goes (the same arithmetic as `attend_by_blocks`).
fn attend_by_tiles(path: Path, call: &Call<'_>, out: &mut [f32], for_each: ForEach<'_>) {
    let dims = call.dims;
    let (group, plen) = (dims.group(), partial_len(dims));
    let tiles = call.rows.div_ceil(TILE_ROWS);
    let output = Shared(out.as_mut_ptr());
    let row_len = dims.heads * dims.head_dim;
    // Later tiles see more keys: interleave the heavy and light ones so contiguous batches
    // of units cost about the same.
    for_each(dims.kv_heads * tiles, &|unit| {
        let (kv_head, order) = (unit % dims.kv_heads, unit / dims.kv_heads);
        let tile = if order % 2 == 0 { order / 2 } else { tiles - 1 - order / 2 };
        let rows = tile * TILE_ROWS..((tile + 1) * TILE_ROWS).min(call.rows);
        // One state per (row, query head of the group), each block's partials folded in as
        // soon as they are computed, so a block's keys and values are read once per tile.
        let queries = rows.len() * group;
        let mut states = vec![0.0f32; queries * plen];
        let mut slots = vec![0.0f32; queries * plen];
        let last_block = (call.past + rows.end - 1) / BLOCK;
        for block in 0..=last_block {
            block_partials(path, call, (kv_head, block), None, rows.clone(), &mut slots);
            for (state, slot) in states.chunks_exact_mut(plen).zip(slots.chunks_exact(plen)) {
                merge(state, slot);
            }
        }
        for (index, row) in rows.enumerate() {
            for member in 0..group {
                let head = kv_head * group + member;
                // SAFETY: each (row, head) is written by exactly one unit.
                let target = unsafe { output.slice(row * row_len + head * dims.head_dim, dims.head_dim) };
                finish(&states[(index * group + member) * plen..][..plen], target);
            }
        }
    });
}

/// The keys `row` sees: `lo..hi`.
fn visible(call: &Call<'_>, row: usize) -> (usize, usize) {
    let hi = call.past + row + 1;
    let lo = call.dims.window.map_or(0, |window| hi.saturating_sub(window));
    (lo, hi)
}

/// The keys of block `block` that `row` sees: `start..end` (empty when none).
fn seen_in_block(call: &Call<'_>, row: usize, block: usize) -> (usize, usize) {
    let (lo, hi) = visible(call, row);
    let (start, end) = ((block * BLOCK).max(lo), ((block + 1) * BLOCK).min(hi));
    (start, end.max(start))
}

/// The partials of block `block` of `kv_head`'s keys for every query head of the group in each
/// of `rows`, written to `slots` (one `[max, sum, weighted values…]` per (row, member), row by
/// row; sum 0 when the row sees none of the block's keys). A query's partial depends only on
/// its own query, keys, values and position, never on the other rows asked for with it.
/// With AVX2 and FMA, heads of 64 dimensions take `fma64`'s register tiles (in 512-bit
/// registers with AVX-512, a `VDPBF16PS` a pair with AVX512-BF16); otherwise plain loops one
/// query at a time (compiled for AVX2 when the CPU has it): every path sums the same products
/// in the same order (`score`, `weigh_values`). A machine always takes the same path,
/// whatever the call. `next`, a (KV head, block) pair to be computed after this one, is
/// prefetched meanwhile (register tiles only; it changes no result).
fn block_partials(
    path: Path,
    call: &Call<'_>,
    (kv_head, block): (usize, usize),
    next: Option<(usize, usize)>,
    rows: Range<usize>,
    slots: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if path != Path::Portable {
        if call.dims.head_dim == fma64::D {
            let width = match path {
                Path::Bf16 => fma64::Width::Dot,
                Path::Avx512 => fma64::Width::Wide,
                _ => fma64::Width::Narrow,
            };
            // SAFETY: the CPU has AVX2 and FMA, AVX-512 F for `Wide`, and AVX-512 BW and BF16
            // too for `Dot` (`Path::detect`).
            return unsafe { fma64::block_partials(call, (kv_head, block), next, rows, slots, width) };
        }
        // SAFETY: as above.
        return unsafe { block_partials_avx2(call, kv_head, block, rows, slots) };
    }
    block_partials_portable(call, kv_head, block, rows, slots)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_partials_avx2(call: &Call<'_>, kv_head: usize, block: usize, rows: Range<usize>, slots: &mut [f32]) {
    block_partials_portable(call, kv_head, block, rows, slots)
}

#[inline(always)]
fn block_partials_portable(call: &Call<'_>, kv_head: usize, block: usize, rows: Range<usize>, slots: &mut [f32]) {
    let plen = partial_len(call.dims);
    let d = call.dims.head_dim;
    let base = kv_head * call.stride * d;
    let (keys, values) = (&call.keys[base..][..call.stride * d], &call.values[base..][..call.stride * d]);
    for (n, slot) in slots.chunks_exact_mut(plen).enumerate() {
        let query = query_of(call, kv_head, &rows, n);
        let (start, end) = seen_in_block(call, query.row, block);
        slot.fill(0.0);
        if start == end {
            continue;
        }
        let mut scores = [0.0f32; BLOCK];
        let scores = &mut scores[..end - start];
        for (j, score) in (start..end).zip(scores.iter_mut()) {
            *score = score_of(query.query, |dim| keys[key_at(j, dim, d)].to_f32()) * call.dims.scale;
        }
        let (head_slot, weighted) = slot.split_at_mut(2);
        softmax(call.dims, scores, head_slot);
        for (dim, weighted) in weighted.iter_mut().enumerate() {
            *weighted = weigh_values(start, scores, |j| values[value_at(j, dim, d)].to_f32());
        }
    }
}

/// The score of `query` (its elements rounded to bf16) and a key whose element `dim` is
/// `key(dim)`, before scaling: pair by pair of dimensions, the odd one's product added first,
/// as `VDPBF16PS` adds them (each product of two bf16 numbers is exact, so each addition
/// rounds once, as an FMA's).
#[inline(always)]
fn score_of(query: &[f32], key: impl Fn(usize) -> f32) -> f32 {
    let mut score = 0.0f32;
    for even in (0..query.len()).step_by(2) {
        if even + 1 < query.len() {
            score += query[even + 1] * key(even + 1);
        }
        score += query[even] * key(even);
    }
    score
}

/// `Σ_j weights[j - start] · value(j)` over keys `start..start + weights.len()`, pair of rows by
/// pair of rows counted from key 0, the odd row's product added first (a row outside the keys
/// weighs 0: skipping it leaves the sum as it is, which is never -0).
#[inline(always)]
fn weigh_values(start: usize, weights: &[f32], value: impl Fn(usize) -> f32) -> f32 {
    let end = start + weights.len();
    let weight = |j: usize| if (start..end).contains(&j) { weights[j - start] } else { 0.0 };
    let mut sum = 0.0f32;
    for even in (start & !1..end).step_by(2) {
        for j in [even + 1, even] {
            let w = weight(j);
            if w != 0.0 {
                sum += w * value(j);
            }
        }
    }
    sum
}

/// One query head of one row.
struct Query<'a> {
    row: usize,
    query: &'a [f32],
}

/// Query `n` of `kv_head`'s group over `rows`: row by row, the group's heads in order.
/// A unit's queries (each row's query heads of the group) in tiles of `per_tile`: each tile's
/// slots, its first query and how many queries it holds.
fn query_tiles<'s>(
    call: &Call<'_>,
    rows: &Range<usize>,
    per_tile: usize,
    slots: &'s mut [f32],
) -> impl Iterator<Item = (&'s mut [f32], usize, usize)> {
    let count = rows.len() * call.dims.group();
    slots.chunks_mut(per_tile * partial_len(call.dims)).enumerate().map(move |(tile, slots)| {
        let first_query = tile * per_tile;
        (slots, first_query, (count - first_query).min(per_tile))
    })
}

fn query_of<'a>(call: &'a Call<'_>, kv_head: usize, rows: &Range<usize>, n: usize) -> Query<'a> {
    let (dims, d) = (call.dims, call.dims.head_dim);
    let (row, member) = (rows.start + n / dims.group(), n % dims.group());
    let head = kv_head * dims.group() + member;
    Query { row, query: &call.queries[(row * dims.heads + head) * d..][..d] }
}

/// Turns scaled q·k scores into softmax weights relative to their maximum (soft-capped first),
/// rounded to bf16 (`round_bf16`), and writes that maximum and the rounded weights' sum to
/// `head` (`[max, sum]`).
#[inline(always)]
fn softmax(dims: &Dims, scores: &mut [f32], head: &mut [f32]) {
    if dims.softcap > 0.0 {
        for score in scores.iter_mut() {
            *score = dims.softcap * (*score / dims.softcap).tanh();
        }
    }
    let max = maximum(scores);
    for score in scores.iter_mut() {
        *score = round_bf16(exp(*score - max));
    }
    head[0] = max;
    head[1] = sum(scores);
}

/// Register tiles for heads of 64 dimensions with AVX2 and FMA, like a GEMM micro-kernel: six
/// queries at a time, so each key and value row loaded is used by six queries rather than one
/// (one query at a time, the loop was bound by loading every value row again per query).
/// Each score is one chain over the 64 dimensions' pairs in order, each weighted value one
/// chain over the keys' pairs in order (`super::score_of`, `super::weigh_values`): a query's
/// bits do not depend on which queries share its tile. With AVX-512, `Width::Wide` runs the
/// same chains 16 lanes a register, up to 27 queries a tile; `Width::Dot` runs them with
/// `VDPBF16PS`, a pair of products an instruction.
#[cfg(target_arch = "x86_64")]
mod fma64 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use half::bf16;

    use super::{BLOCK, Call, PANEL, key_at, partial_len, query_of, query_tiles, seen_in_block, softmax};

    pub(super) use wide::dot_lanes;

    pub(super) const D: usize = 64;
    /// Queries per register tile: 6 × 2 accumulators, 2 loaded rows and 1 broadcast use 15 of
    /// the 16 AVX registers.
    const QUERIES: usize = 6;
    /// Keys (scores) or dimensions (weighted values) per register tile: two registers.
    const WIDE: usize = 16;

    /// The registers and instructions of the tiles.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Width {
        /// 256-bit registers (AVX2 and FMA), two FMAs a pair of products.
        Narrow,
        /// 512-bit registers (AVX-512 F), two FMAs a pair of products.
        Wide,
        /// 512-bit registers, one `VDPBF16PS` a pair of products (AVX-512 BW and BF16).
        Dot,
    }

    /// See `super::block_partials`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_partials(
        call: &Call<'_>,
        (kv_head, block): (usize, usize),
        next: Option<(usize, usize)>,
        rows: Range<usize>,
        slots: &mut [f32],
        width: Width,
    ) {
        slots.fill(0.0);
        // The keys any of the rows sees in this block, from the start of the first one's panel:
        // `first..first + len` (keys before a row's own weigh 0 for it, see `own_softmax`).
        let spans = rows.clone().map(|row| seen_in_block(call, row, block)).filter(|(start, end)| start < end);
        let Some((first, last)) = spans.reduce(|(a, b), (c, d)| (a.min(c), b.max(d))) else {
            return;
        };
        let first = first / PANEL * PANEL;
        let len = last - first;
        // A panel's keys are `PANEL` whole rows of the row-major layout's bytes, a pair of
        // values two (`first` is even, and a pair's second row is in the cache: see `Call`).
        let base = (kv_head * call.stride + first) * D;
        let keys = &call.keys[base..base + len.next_multiple_of(PANEL) * D];
        let values = &call.values[base..base + len.next_multiple_of(2) * D];
        let mut ahead = match next {
            Some((next_kv_head, next)) => {
                let start = (next * BLOCK).min(call.past + call.rows);
                let end = ((next + 1) * BLOCK).min(call.past + call.rows);
                let range = (next_kv_head * call.stride + start) * D..(next_kv_head * call.stride + end) * D;
                [Ahead::new(&call.keys[range.clone()]), Ahead::new(&call.values[range])]
            }
            None => [Ahead::new(&[]), Ahead::new(&[])],
        };
        if width == Width::Narrow {
            return SCRATCH.with_borrow_mut(|scratch| {
                tiles(call, (kv_head, block, rows), (first, len), (keys, values), slots, &mut ahead, scratch);
            });
        }
        wide::SCRATCH.with_borrow_mut(|scratch| {
            let (tile, data) = ((kv_head, block, rows), (first, len, keys, values));
            // SAFETY: the CPU has AVX-512 F, and BW and BF16 for `Dot` (the caller says so).
            unsafe { wide::tiles(call, tile, data, slots, &mut ahead, scratch, width == Width::Dot) }
        });
    }

    /// The cache lines of the next block's keys or values still to prefetch (into L2), a few
    /// at a time from the compute loops so that the loads overlap the arithmetic.
    struct Ahead {
        at: *const u8,
        end: *const u8,
    }

    impl Ahead {
        fn new(rows: &[bf16]) -> Self {
            let range = rows.as_ptr_range();
            Ahead { at: range.start.cast(), end: range.end.cast() }
        }

        /// Prefetches the next `count` lines, if any are left.
        #[inline(always)]
        fn lines(&mut self, count: usize) {
            for _ in 0..count {
                if self.at >= self.end {
                    return;
                }
                // SAFETY: `at` is inside the slice `new` was given (checked just above); a
                // prefetch reads nothing the program sees.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T1>(self.at.cast());
                    self.at = self.at.add(64.min(self.end.offset_from(self.at) as usize));
                }
            }
        }
    }

    /// Kept per thread so that no call zeroes 6 KiB: a tile's scores and weights; past a tile's
    /// queries and a block's keys they hold what an earlier call left, computed with, never
    /// read.
    struct Scratch {
        weights: [[f32; BLOCK]; QUERIES],
    }

    thread_local! {
        static SCRATCH: std::cell::RefCell<Box<Scratch>> =
            std::cell::RefCell::new(Box::new(Scratch { weights: [[0.0; BLOCK]; QUERIES] }));
    }

    /// The register tiles of `block_partials`, six queries at a time (a lone row's three in
    /// tiles of three), over the keys `first..first + len` (`keys`, whole panels) and their
    /// `values` (whole pairs). A lone row's weighted values take 12 accumulators too (32
    /// dimensions a pass rather than 16: with 6, each FMA waited for the one before it in its
    /// chain); its scores keep 6 (12 measured slower there).
    #[target_feature(enable = "avx2,fma")]
    fn tiles(
        call: &Call<'_>,
        (kv_head, block, rows): (usize, usize, Range<usize>),
        (first, len): (usize, usize),
        (keys, values): (&[bf16], &[bf16]),
        slots: &mut [f32],
        [keys_ahead, values_ahead]: &mut [Ahead; 2],
        scratch: &mut Scratch,
    ) {
        let zero = [0.0f32; D];
        let weights = &mut scratch.weights;
        for (slots, first_query, in_tile) in query_tiles(call, &rows, QUERIES, slots) {
            let query = |n: usize| query_of(call, kv_head, &rows, first_query + n);
            let inputs: [&[f32]; QUERIES] =
                std::array::from_fn(|n| if n < in_tile { query(n).query } else { &zero[..] });
            let scale = call.dims.scale;
            if in_tile <= 3 {
                scores::<3>(&inputs, keys, scale, weights, keys_ahead);
            } else {
                scores::<QUERIES>(&inputs, keys, scale, weights, keys_ahead);
            }
            own_softmax(call, block, (first, len), weights, slots, |n| query(n).row);
            if in_tile <= 3 {
                weighted::<3, 4>(weights, values, slots, in_tile, values_ahead);
            } else {
                weighted::<QUERIES, 2>(weights, values, slots, in_tile, values_ahead);
            }
        }
    }

    /// Each query's softmax over its own keys among the tile's `first..first + len`, in place of
    /// its scores (`weights[n]`), its maximum and sum written to its slot (one per query of
    /// the tile, `row(n)` its row). Keys outside the query's own range weigh 0: a product
    /// with weight 0 leaves its accumulator exactly as it was (values are finite, accumulators
    /// never -0), so sharing the tile's key range changes no bit.
    #[inline(always)]
    fn own_softmax(
        call: &Call<'_>,
        block: usize,
        (first, len): (usize, usize),
        weights: &mut [[f32; BLOCK]],
        slots: &mut [f32],
        row: impl Fn(usize) -> usize,
    ) {
        let plen = partial_len(call.dims);
        for (n, (weights, slot)) in weights.iter_mut().zip(slots.chunks_exact_mut(plen)).enumerate() {
            let (start, end) = seen_in_block(call, row(n), block);
            // (A row that sees none of the block may lie before `first`: clamped, it is empty.)
            let own = start.clamp(first, first + len) - first..end.clamp(first, first + len) - first;
            if own.is_empty() {
                weights.fill(0.0);
                continue;
            }
            softmax(call.dims, &mut weights[own.clone()], &mut slot[..2]);
            weights[..own.start].fill(0.0);
            weights[own.end..].fill(0.0);
        }
    }

    /// `out[n][j] = (queries[n] · key j) · scale` for the first `Q` queries and every key of
    /// `keys` (whole panels, `key_at`): per pair of dimensions, one broadcast query element
    /// times a panel's 16 keys' odd elements, then the even ones (`super::score_of`).
    #[target_feature(enable = "avx2,fma")]
    fn scores<const Q: usize>(
        queries: &[&[f32]; QUERIES],
        keys: &[bf16],
        scale: f32,
        out: &mut [[f32; BLOCK]; QUERIES],
        ahead: &mut Ahead,
    ) {
        const { assert!(Q <= QUERIES && WIDE == PANEL) };
        let scale = _mm256_set1_ps(scale);
        let len = keys.len() / D;
        assert!(len <= BLOCK && len.is_multiple_of(WIDE) && queries.iter().all(|q| q.len() == D));
        for j in (0..len).step_by(WIDE) {
            // The next block's rows, 2 KiB of keys a panel.
            ahead.lines(WIDE * D * 2 / 64);
            // SAFETY: j + WIDE <= len <= BLOCK, so panel j / WIDE (D / 2 rows of WIDE pairs) is
            // inside `keys`; 2 * pair + 1 < D.
            unsafe {
                let panel = keys.as_ptr().add(key_at(j, 0, D));
                let mut acc = [[_mm256_setzero_ps(); 2]; Q];
                for pair in 0..D / 2 {
                    let row = panel.add(pair * 2 * WIDE);
                    for (element, half) in [(2 * pair + 1, Half::Odd), (2 * pair, Half::Even)] {
                        let k = [split8(row, half), split8(row.add(WIDE), half)];
                        for (acc, query) in acc.iter_mut().zip(queries) {
                            let q = _mm256_set1_ps(*query.get_unchecked(element));
                            acc[0] = _mm256_fmadd_ps(q, k[0], acc[0]);
                            acc[1] = _mm256_fmadd_ps(q, k[1], acc[1]);
                        }
                    }
                }
                for (acc, out) in acc.iter().zip(out.iter_mut()) {
                    _mm256_storeu_ps(out.as_mut_ptr().add(j), _mm256_mul_ps(acc[0], scale));
                    _mm256_storeu_ps(out.as_mut_ptr().add(j + 8), _mm256_mul_ps(acc[1], scale));
                }
            }
        }
    }

    /// Which element of each pair of bf16 numbers.
    #[derive(Clone, Copy)]
    enum Half {
        Even,
        Odd,
    }

    /// One element of each of the 8 pairs of bf16 numbers at `from`, as f32 (exactly: a bf16
    /// number is the high half of an f32's bits). It carries its target features and inlines
    /// into the tiles, which enable them too (see the linear kernel's `Format`: an
    /// `inline(always)` helper without them can leave its intrinsics as calls).
    ///
    /// # Safety
    /// `from..from + 16` is readable.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn split8(from: *const bf16, half: Half) -> __m256 {
        let pairs = unsafe { _mm256_loadu_si256(from.cast()) };
        _mm256_castsi256_ps(match half {
            Half::Even => _mm256_slli_epi32::<16>(pairs),
            Half::Odd => _mm256_and_si256(pairs, _mm256_set1_epi32(!0xffff)),
        })
    }

    /// `slots[n][2..] = Σ_j weights[n][j] · values[j]` for the first `count` (at most `Q`)
    /// queries (the values' pairs of rows in order, the odd row first: `super::weigh_values`),
    /// `R` registers of 8 dimensions a pass.
    #[target_feature(enable = "avx2,fma")]
    fn weighted<const Q: usize, const R: usize>(
        weights: &[[f32; BLOCK]; QUERIES],
        values: &[bf16],
        slots: &mut [f32],
        count: usize,
        ahead: &mut Ahead,
    ) {
        const { assert!(Q <= QUERIES && D.is_multiple_of(R * 8)) };
        let (pairs, plen) = (values.len() / (2 * D), D + 2);
        assert!(2 * pairs <= BLOCK && values.len() == pairs * 2 * D && count <= Q && slots.len() >= count * plen);
        for dim in (0..D).step_by(R * 8) {
            // SAFETY: 2 * pair + 1 < 2 * pairs <= BLOCK, dim + R * 8 <= D (so pair `pair`'s
            // elements 2 * dim..2 * (dim + R * 8) are inside `values`), n < count, slots hold
            // count partials.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); R]; Q];
                for pair in 0..pairs {
                    // The next block's values, R lines per pair: all of them within the passes.
                    ahead.lines(R);
                    let row = values.as_ptr().add(pair * 2 * D + 2 * dim);
                    for (j, half) in [(2 * pair + 1, Half::Odd), (2 * pair, Half::Even)] {
                        let v: [__m256; R] = std::array::from_fn(|c| split8(row.add(c * 16), half));
                        for (acc, weights) in acc.iter_mut().zip(weights) {
                            let w = _mm256_set1_ps(*weights.get_unchecked(j));
                            for (acc, &v) in acc.iter_mut().zip(&v) {
                                *acc = _mm256_fmadd_ps(w, v, *acc);
                            }
                        }
                    }
                }
                for (n, acc) in acc.iter().enumerate().take(count) {
                    let out = slots.as_mut_ptr().add(n * plen + 2 + dim);
                    for (c, &acc) in acc.iter().enumerate() {
                        _mm256_storeu_ps(out.add(c * 8), acc);
                    }
                }
            }
        }
    }

    /// The register tiles of `tiles` in 512-bit registers (AVX-512 F): up to 27 queries a tile,
    /// 16 keys or dimensions a register, 12 to 27 accumulators. Each score is the same chain
    /// over the 64 dimensions' pairs in order, each weighted value the same chain over the keys'
    /// pairs in order (a lane's arithmetic does not depend on the register's width, and a
    /// `VDPBF16PS` lane adds a pair's two products as two FMAs do), and the softmax the same
    /// function: the same bits as `tiles`, whatever the number of queries in a tile. A decode
    /// step's queries (2 rows × 3 heads) or the longest draft's (9 rows × 3 heads) share one
    /// pass over the block's keys and values.
    mod wide {
        use std::arch::x86_64::*;
        use std::ops::Range;

        use half::bf16;

        use super::super::{BLOCK, Call, PANEL, key_at, query_of, query_tiles};
        use super::{Ahead, D, Half, WIDE, own_softmax};

        /// Queries per register tile: 27 accumulators, a register of keys or values and a
        /// broadcast use 29 of the 32 registers.
        const QUERIES: usize = 27;

        /// Kept per thread so that no call zeroes 52 KiB: the tile's queries side by side (one
        /// base register for all of them), then their scores and weights, and both as bf16
        /// numbers for `VDPBF16PS`; past a tile's count of queries they hold what an earlier
        /// tile left, computed with, never stored.
        pub(super) struct Scratch {
            queries: [[f32; D]; QUERIES],
            weights: [[f32; BLOCK]; QUERIES],
            bf16_queries: [[u16; D]; QUERIES],
            bf16_weights: [[u16; BLOCK]; QUERIES],
        }

        thread_local! {
            pub(super) static SCRATCH: std::cell::RefCell<Box<Scratch>> =
                std::cell::RefCell::new(Box::new(Scratch {
                    queries: [[0.0; D]; QUERIES],
                    weights: [[0.0; BLOCK]; QUERIES],
                    bf16_queries: [[0; D]; QUERIES],
                    bf16_weights: [[0; BLOCK]; QUERIES],
                }));
        }

        /// Calls `function::<Q, R>(arguments)` for a tile of `queries` queries: `Q` queries (a
        /// size for each multiple of 3, as a row brings its KV head's 3 query heads with
        /// SmolLM2-135M, so that no draft computes stale queries: 5 rows' 15 ran in tiles of
        /// 24), and `R` registers of keys or dimensions a step, more for fewer queries (12
        /// accumulators or more).
        macro_rules! by_tile_size {
            ($queries:expr, $function:ident($($argument:expr),*)) => {
                match $queries {
                    0..=3 => $function::<3, 4>($($argument),*),
                    4..=6 => $function::<6, 4>($($argument),*),
                    7..=9 => $function::<9, 2>($($argument),*),
                    10..=12 => $function::<12, 2>($($argument),*),
                    13..=15 => $function::<15, 1>($($argument),*),
                    16..=18 => $function::<18, 1>($($argument),*),
                    19..=21 => $function::<21, 1>($($argument),*),
                    22..=24 => $function::<24, 1>($($argument),*),
                    _ => $function::<27, 1>($($argument),*),
                }
            };
        }

        /// See `super::tiles`; `scratch` is the thread's `SCRATCH`, `dot` whether to run
        /// `VDPBF16PS`.
        ///
        /// # Safety
        /// The CPU has AVX-512 BW and BF16 when `dot`.
        #[target_feature(enable = "avx512f,avx2,fma")]
        pub(super) unsafe fn tiles(
            call: &Call<'_>,
            (kv_head, block, rows): (usize, usize, Range<usize>),
            (first, len, keys, values): (usize, usize, &[bf16], &[bf16]),
            slots: &mut [f32],
            [keys_ahead, values_ahead]: &mut [Ahead; 2],
            scratch: &mut Scratch,
            dot: bool,
        ) {
            let Scratch { queries, weights, bf16_queries, bf16_weights } = scratch;
            let scale = call.dims.scale;
            for (slots, first_query, in_tile) in query_tiles(call, &rows, QUERIES, slots) {
                let query = |n: usize| query_of(call, kv_head, &rows, first_query + n);
                for (n, to) in queries.iter_mut().enumerate().take(in_tile) {
                    to.copy_from_slice(query(n).query);
                }
                if dot {
                    narrow(&queries[..in_tile], bf16_queries);
                    // SAFETY: the CPU has AVX-512 BW and BF16 (the caller says so).
                    unsafe { by_tile_size!(in_tile, dot_scores(bf16_queries, keys, scale, weights, keys_ahead)) };
                } else {
                    by_tile_size!(in_tile, scores(queries, keys, scale, weights, keys_ahead));
                }
                own_softmax(call, block, (first, len), weights, slots, |n| query(n).row);
                if dot {
                    narrow(&weights[..in_tile], bf16_weights);
                    // SAFETY: as above.
                    unsafe { by_tile_size!(in_tile, dot_weighted(bf16_weights, values, slots, in_tile, values_ahead)) };
                } else {
                    by_tile_size!(in_tile, weighted(weights, values, slots, in_tile, values_ahead));
                }
            }
        }

        /// `to[n][i] = from[n][i]` as bf16 bits, each `from` value a bf16 number already (its low
        /// half 0).
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn narrow<const N: usize>(from: &[[f32; N]], to: &mut [[u16; N]]) {
            for (from, to) in from.iter().zip(to.iter_mut()) {
                for (&from, to) in from.iter().zip(to.iter_mut()) {
                    *to = (from.to_bits() >> 16) as u16;
                }
            }
        }

        /// `out[n][j] = (queries[n] · key j) · scale` for the first `Q` queries and every key of
        /// `keys` (whole panels, `key_at`), `K` panels a step (the last steps one at a time).
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn scores<const Q: usize, const K: usize>(
            queries: &[[f32; D]; QUERIES],
            keys: &[bf16],
            scale: f32,
            out: &mut [[f32; BLOCK]; QUERIES],
            ahead: &mut Ahead,
        ) {
            const { assert!(Q <= QUERIES && WIDE == PANEL) };
            let (whole_steps, panels) = panel_steps::<K>(keys);
            for panel in (0..whole_steps).step_by(K) {
                panel_scores::<Q, K>(queries, keys, panel, scale, out, ahead);
            }
            for panel in whole_steps..panels {
                panel_scores::<Q, 1>(queries, keys, panel, scale, out, ahead);
            }
        }

        /// The panels of `keys` (whole panels, at most a block's): the first of them that
        /// `scores` runs one at a time (a multiple of `K`), and how many there are.
        fn panel_steps<const K: usize>(keys: &[bf16]) -> (usize, usize) {
            let panels = keys.len() / (WIDE * D);
            assert!(panels * WIDE <= BLOCK && keys.len() == panels * WIDE * D);
            (panels / K * K, panels)
        }

        /// `out[n][first * WIDE..]` = the accumulators of a step of panels from panel `first`,
        /// times `scale`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn store_scores<const Q: usize, const K: usize>(
            acc: &[[__m512; K]; Q],
            first: usize,
            scale: f32,
            out: &mut [[f32; BLOCK]; QUERIES],
        ) {
            let scale = _mm512_set1_ps(scale);
            for (acc, out) in acc.iter().zip(out.iter_mut()) {
                for (c, &acc) in acc.iter().enumerate() {
                    assert!((first + c + 1) * WIDE <= BLOCK);
                    // SAFETY: a register's 16 floats at (first + c) * WIDE..(first + c + 1) * WIDE
                    // (asserted) of a row of BLOCK floats.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((first + c) * WIDE), _mm512_mul_ps(acc, scale)) };
                }
            }
        }

        /// `scores` of the `K` panels from panel `first`: per pair of dimensions, one broadcast
        /// query element times a panel's 16 keys' odd elements, then the even ones.
        #[inline]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn panel_scores<const Q: usize, const K: usize>(
            queries: &[[f32; D]; QUERIES],
            keys: &[bf16],
            first: usize,
            scale: f32,
            out: &mut [[f32; BLOCK]; QUERIES],
            ahead: &mut Ahead,
        ) {
            assert!((first + K) * WIDE * D <= keys.len());
            // SAFETY: panels first..first + K (D / 2 rows of WIDE pairs each) are inside `keys`
            // (asserted), 2 * pair + 1 < D, n < Q <= QUERIES, (first + K) * WIDE <= BLOCK
            // (`scores`).
            unsafe {
                let panels = keys.as_ptr().add(key_at(first * WIDE, 0, D));
                let mut acc = [[_mm512_setzero_ps(); K]; Q];
                for pair in 0..D / 2 {
                    // The next block's keys, K lines a pair of dimensions (K × 2 KiB a step).
                    ahead.lines(K);
                    for (element, half) in [(2 * pair + 1, Half::Odd), (2 * pair, Half::Even)] {
                        let k: [__m512; K] =
                            std::array::from_fn(|c| split16(panels.add(key_at(c * WIDE, 2 * pair, D)), half));
                        for (acc, query) in acc.iter_mut().zip(queries) {
                            let q = _mm512_set1_ps(*query.get_unchecked(element));
                            for (acc, &k) in acc.iter_mut().zip(&k) {
                                *acc = _mm512_fmadd_ps(q, k, *acc);
                            }
                        }
                    }
                }
                store_scores(&acc, first, scale, out);
            }
        }

        /// One element of each of the 16 pairs of bf16 numbers at `from`, as f32 (see
        /// `super::split8`).
        ///
        /// # Safety
        /// `from..from + 32` is readable.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn split16(from: *const bf16, half: Half) -> __m512 {
            let pairs = unsafe { _mm512_loadu_si512(from.cast()) };
            _mm512_castsi512_ps(match half {
                Half::Even => _mm512_slli_epi32::<16>(pairs),
                Half::Odd => _mm512_and_si512(pairs, _mm512_set1_epi32(!0xffff)),
            })
        }

        /// `slots[n][2..] = Σ_j weights[n][j] · values[j]` for the first `count` (at most `Q`)
        /// queries, the values' pairs of rows in order (the odd row first), `C` registers of
        /// dimensions a pass.
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn weighted<const Q: usize, const C: usize>(
            weights: &[[f32; BLOCK]; QUERIES],
            values: &[bf16],
            slots: &mut [f32],
            count: usize,
            ahead: &mut Ahead,
        ) {
            const { assert!(Q <= QUERIES && D.is_multiple_of(C * WIDE)) };
            let (pairs, plen) = (values.len() / (2 * D), D + 2);
            assert!(2 * pairs <= BLOCK && values.len() == pairs * 2 * D && count <= Q && slots.len() >= count * plen);
            for dim in (0..D).step_by(C * WIDE) {
                // SAFETY: 2 * pair + 1 < 2 * pairs <= BLOCK, dim + C * WIDE <= D (so pair
                // `pair`'s elements 2 * dim..2 * (dim + C * WIDE) are inside `values`), n < count,
                // slots hold count partials.
                unsafe {
                    let mut acc = [[_mm512_setzero_ps(); C]; Q];
                    for pair in 0..pairs {
                        // The next block's values, 2C lines per pair: all of them within the passes.
                        ahead.lines(2 * C);
                        let row = values.as_ptr().add(pair * 2 * D + 2 * dim);
                        for (j, half) in [(2 * pair + 1, Half::Odd), (2 * pair, Half::Even)] {
                            let v: [__m512; C] = std::array::from_fn(|c| split16(row.add(c * 2 * WIDE), half));
                            for (acc, weights) in acc.iter_mut().zip(weights) {
                                let w = _mm512_set1_ps(*weights.get_unchecked(j));
                                for (acc, &v) in acc.iter_mut().zip(&v) {
                                    *acc = _mm512_fmadd_ps(w, v, *acc);
                                }
                            }
                        }
                    }
                    store(&acc, slots, count, plen, dim);
                }
            }
        }

        /// Writes the first `count` queries' accumulators of dimensions `dim..` to their slots.
        ///
        /// # Safety
        /// `slots` holds `count` partials of `plen` floats, `dim + C * WIDE <= D`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store<const Q: usize, const C: usize>(
            acc: &[[__m512; C]; Q],
            slots: &mut [f32],
            count: usize,
            plen: usize,
            dim: usize,
        ) {
            for (n, acc) in acc.iter().enumerate().take(count) {
                for (c, &acc) in acc.iter().enumerate() {
                    // SAFETY: see the function's.
                    unsafe { _mm512_storeu_ps(slots.as_mut_ptr().add(n * plen + 2 + dim + c * WIDE), acc) };
                }
            }
        }

        /// `dot_scores`' and `dot_weighted`'s broadcast: the pair of bf16 numbers at `at`.
        ///
        /// # Safety
        /// `at..at + 2` is readable.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        unsafe fn pair_at(at: *const u16) -> __m512bh {
            // SAFETY: see the function's; a 512-bit integer vector and a bf16 one are the same bits.
            unsafe { std::mem::transmute(_mm512_set1_epi32(at.cast::<i32>().read_unaligned())) }
        }

        /// One `VDPBF16PS` of 16 lanes: `acc` plus the products of `a`'s and `b`'s pairs (bf16
        /// bits), for `super::super::dot_adds_as_two_fmas`.
        ///
        /// # Safety
        /// The CPU has AVX-512 BW and BF16.
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        pub(in super::super) unsafe fn dot_lanes(acc: &[f32; 16], a: &[u16; 32], b: &[u16; 32]) -> [f32; 16] {
            let mut lanes = [0.0f32; 16];
            // SAFETY: 16 floats and 32 halves read, 16 floats written; a 512-bit integer vector
            // and a bf16 one are the same bits.
            unsafe {
                let a = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(a.as_ptr().cast()));
                let b = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.as_ptr().cast()));
                _mm512_storeu_ps(lanes.as_mut_ptr(), _mm512_dpbf16_ps(_mm512_loadu_ps(acc.as_ptr()), a, b));
            }
            lanes
        }

        /// `scores` with `VDPBF16PS`: per pair of dimensions, a broadcast pair of the query's
        /// elements and a panel's 16 keys' pairs, the odd products added first, then the even.
        ///
        /// # Safety
        /// The CPU has AVX-512 BW and BF16.
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
        unsafe fn dot_scores<const Q: usize, const K: usize>(
            queries: &[[u16; D]; QUERIES],
            keys: &[bf16],
            scale: f32,
            out: &mut [[f32; BLOCK]; QUERIES],
            ahead: &mut Ahead,
        ) {
            const { assert!(Q <= QUERIES && WIDE == PANEL) };
            let (whole_steps, panels) = panel_steps::<K>(keys);
            for panel in (0..whole_steps).step_by(K) {
                // SAFETY: the caller's.
                unsafe { dot_panel_scores::<Q, K>(queries, keys, panel, scale, out, ahead) };
            }
            for panel in whole_steps..panels {
                // SAFETY: the caller's.
                unsafe { dot_panel_scores::<Q, 1>(queries, keys, panel, scale, out, ahead) };
            }
        }

        /// `dot_scores` of the `K` panels from panel `first`.
        ///
        /// # Safety
        /// The CPU has AVX-512 BW and BF16.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
        unsafe fn dot_panel_scores<const Q: usize, const K: usize>(
            queries: &[[u16; D]; QUERIES],
            keys: &[bf16],
            first: usize,
            scale: f32,
            out: &mut [[f32; BLOCK]; QUERIES],
            ahead: &mut Ahead,
        ) {
            assert!((first + K) * WIDE * D <= keys.len());
            // SAFETY: as `panel_scores`.
            unsafe {
                let panels = keys.as_ptr().add(key_at(first * WIDE, 0, D));
                let mut acc = [[_mm512_setzero_ps(); K]; Q];
                for pair in 0..D / 2 {
                    ahead.lines(K);
                    let k: [__m512bh; K] = std::array::from_fn(|c| {
                        std::mem::transmute(_mm512_loadu_si512(panels.add(key_at(c * WIDE, 2 * pair, D)).cast()))
                    });
                    for (acc, query) in acc.iter_mut().zip(queries) {
                        let q = pair_at(query.as_ptr().add(2 * pair));
                        for (acc, &k) in acc.iter_mut().zip(&k) {
                            *acc = _mm512_dpbf16_ps(*acc, k, q);
                        }
                    }
                }
                store_scores(&acc, first, scale, out);
            }
        }

        /// `weighted` with `VDPBF16PS`: per pair of rows, a broadcast pair of weights and the
        /// rows' pairs of elements, 16 dimensions a register.
        ///
        /// # Safety
        /// The CPU has AVX-512 BW and BF16.
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
        unsafe fn dot_weighted<const Q: usize, const C: usize>(
            weights: &[[u16; BLOCK]; QUERIES],
            values: &[bf16],
            slots: &mut [f32],
            count: usize,
            ahead: &mut Ahead,
        ) {
            const { assert!(Q <= QUERIES && D.is_multiple_of(C * WIDE)) };
            let (pairs, plen) = (values.len() / (2 * D), D + 2);
            assert!(2 * pairs <= BLOCK && values.len() == pairs * 2 * D && count <= Q && slots.len() >= count * plen);
            for dim in (0..D).step_by(C * WIDE) {
                // SAFETY: as `weighted`.
                unsafe {
                    let mut acc = [[_mm512_setzero_ps(); C]; Q];
                    for pair in 0..pairs {
                        ahead.lines(2 * C);
                        let row = values.as_ptr().add(pair * 2 * D + 2 * dim);
                        let v: [__m512bh; C] = std::array::from_fn(|c| {
                            std::mem::transmute(_mm512_loadu_si512(row.add(c * 2 * WIDE).cast()))
                        });
                        for (acc, weights) in acc.iter_mut().zip(weights) {
                            let w = pair_at(weights.as_ptr().add(2 * pair));
                            for (acc, &v) in acc.iter_mut().zip(&v) {
                                *acc = _mm512_dpbf16_ps(*acc, v, w);
                            }
                        }
                    }
                    store(&acc, slots, count, plen, dim);
                }
            }
        }
    }
}

/// Folds a partial into the running state (same layout); a partial with sum 0 changes nothing.
fn merge(state: &mut [f32], partial: &[f32]) {
    if partial[1] == 0.0 {
        return;
    }
    if state[1] == 0.0 {
        state.copy_from_slice(partial);
        return;
    }
    let max = state[0].max(partial[0]);
    // The side that holds the maximum has the factor exp(0), exactly 1: not computed.
    let factor = |side: f32| if side == max { 1.0 } else { exp(side - max) };
    let (a, b) = (factor(state[0]), factor(partial[0]));
    state[0] = max;
    state[1] = state[1] * a + partial[1] * b;
    for (s, &p) in state[2..].iter_mut().zip(&partial[2..]) {
        *s = *s * a + p * b;
    }
}

/// The attention output of a merged state: the weighted values over the sum.
fn finish(state: &[f32], target: &mut [f32]) {
    let inverse = if state[1] > 0.0 { 1.0 / state[1] } else { 0.0 };
    for (t, &s) in target.iter_mut().zip(&state[2..]) {
        *t = s * inverse;
    }
}

/// Lanes of the sum and maximum accumulators (two AVX2 or one AVX-512 register).
const LANES: usize = 16;

#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (chunks, rest) = values.as_chunks::<LANES>();
    for chunk in chunks {
        for lane in 0..LANES {
            lanes[lane] += chunk[lane];
        }
    }
    rest.iter().fold(reduce(&lanes), |total, x| total + x)
}

/// The largest of `values` (not empty, no NaN), lane by lane so that it vectorises.
#[inline(always)]
fn maximum(values: &[f32]) -> f32 {
    let larger = |a: f32, b: f32| if a > b { a } else { b };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let (chunks, rest) = values.as_chunks::<LANES>();
    for chunk in chunks {
        for lane in 0..LANES {
            lanes[lane] = larger(lanes[lane], chunk[lane]);
        }
    }
    lanes.iter().chain(rest).copied().fold(f32::NEG_INFINITY, larger)
}

/// A fixed-order pairwise sum of the lanes.
#[inline(always)]
fn reduce(lanes: &[f32; LANES]) -> f32 {
    let mut half = [0.0f32; LANES / 2];
    for lane in 0..LANES / 2 {
        half[lane] = lanes[lane] + lanes[lane + LANES / 2];
    }
    let mut quarter = [0.0f32; LANES / 4];
    for lane in 0..LANES / 4 {
        quarter[lane] = half[lane] + half[lane + LANES / 4];
    }
    (quarter[0] + quarter[2]) + (quarter[1] + quarter[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_units_are_even_and_near_equal() {
        assert_eq!([1, 3, 6, 9, 12, 48].map(decode_units), [1, 2, 2, 4, 4, 12]);
        for pairs in 1..=200 {
            let units = decode_units(pairs);
            assert!(units.is_multiple_of(2) || units == pairs, "{pairs} pairs: {units} units");
            let sizes: Vec<usize> = (0..units).map(|u| (u + 1) * pairs / units - u * pairs / units).collect();
            assert_eq!(sizes.iter().sum::<usize>(), pairs, "{pairs} pairs: every pair once");
            let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(*least >= 1 && most - least <= 1 && *most <= BLOCKS_PER_UNIT, "{pairs} pairs: {sizes:?}");
        }
    }

    /// A small deterministic generator (xorshift), values in -1..1.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }

        fn fill(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| self.next() * scale).collect()
        }

        /// Keys or values as the cache holds them.
        fn bf16s(&mut self, n: usize, scale: f32) -> Vec<bf16> {
            let mut numbers = vec![bf16::ZERO; n];
            to_bf16(&self.fill(n, scale), &mut numbers);
            numbers
        }
    }

    fn sequential(count: usize, unit: &(dyn Fn(usize) + Sync)) {
        (0..count).for_each(unit);
    }

    /// Runs units in reverse on two threads: the result may not depend on the order.
    fn threaded(count: usize, unit: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|scope| {
            scope.spawn(|| (0..count).rev().filter(|u| u % 2 == 0).for_each(unit));
            scope.spawn(|| (0..count).rev().filter(|u| u % 2 == 1).for_each(unit));
        });
    }

    /// The textbook computation in f64: scores, masked softmax, weighted values, over the same
    /// bf16 numbers as the kernel (keys and values, the queries rounded to bf16, and each
    /// weight rounded to bf16 relative to the largest score of its block of keys, as the kernel
    /// rounds it before it merges the blocks), so the kernel may differ from it only by its f32
    /// arithmetic: the tolerance of `check` is that of an f32 kernel.
    fn reference(call: &Call<'_>) -> Vec<f32> {
        let dims = call.dims;
        let d = dims.head_dim;
        let mut out = vec![0.0f32; call.rows * dims.heads * d];
        for row in 0..call.rows {
            let (lo, hi) = visible(call, row);
            for head in 0..dims.heads {
                let kv_head = head / dims.group();
                let query: Vec<f32> =
                    call.queries[(row * dims.heads + head) * d..][..d].iter().map(|&q| round_bf16(q)).collect();
                let head_keys = &call.keys[kv_head * call.stride * d..][..call.stride * d];
                let head_values = &call.values[kv_head * call.stride * d..][..call.stride * d];
                let key = |j: usize| (0..d).map(|p| head_keys[key_at(j, p, d)]).collect::<Vec<bf16>>();
                let value = |j: usize, i: usize| head_values[value_at(j, i, d)];
                let scores: Vec<f64> = (lo..hi)
                    .map(|j| {
                        let s = query.iter().zip(&key(j)).map(|(&q, &k)| f64::from(q) * f64::from(k)).sum::<f64>()
                            * f64::from(dims.scale);
                        if dims.softcap > 0.0 {
                            f64::from(dims.softcap) * (s / f64::from(dims.softcap)).tanh()
                        } else {
                            s
                        }
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let block_max = |j: usize| {
                    let keys = (j / BLOCK * BLOCK).max(lo)..((j / BLOCK + 1) * BLOCK).min(hi);
                    keys.map(|k| scores[k - lo]).fold(f64::NEG_INFINITY, f64::max)
                };
                let weights: Vec<f64> = (lo..hi)
                    .zip(&scores)
                    .map(|(j, s)| {
                        let block_max = block_max(j);
                        f64::from(round_bf16((s - block_max).exp() as f32)) * (block_max - max).exp()
                    })
                    .collect();
                let total: f64 = weights.iter().sum();
                for i in 0..d {
                    let v: f64 = (lo..hi).zip(&weights).map(|(j, w)| w * f64::from(value(j, i))).sum();
                    out[(row * dims.heads + head) * d + i] = (v / total) as f32;
                }
            }
        }
        out
    }

    struct Case {
        dims: Dims,
        past: usize,
        rows: usize,
        stride: usize,
    }

    fn check(case: Case, seed: u64) -> Vec<f32> {
        let Case { dims, past, rows, stride } = case;
        let stride = stride.next_multiple_of(PANEL);
        let mut noise = Noise(seed);
        let d = dims.head_dim;
        let queries = noise.fill(rows * dims.heads * d, 2.0);
        let keys = noise.bf16s(dims.kv_heads * stride * d, 2.0);
        let values = noise.bf16s(dims.kv_heads * stride * d, 1.0);
        let call = Call { dims: &dims, queries: &queries, keys: &keys, values: &values, stride, past, rows };
        let expected = reference(&call);
        let mut out = vec![f32::NAN; expected.len()];
        attend(&call, &mut out, &sequential);
        // A weight whose f32 score lies within the arithmetic's error of a point halfway between
        // two bf16 numbers may round to the other one than the reference's: a few elements
        // then differ by up to about 3e-5 (4 of 4,032 in these cases); every other one is
        // within an f32 kernel's tolerance.
        let mut off = 0;
        for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
            let error = (got - want).abs();
            assert!(error <= 1e-4 + 2e-5 * want.abs(), "element {i}: {got} vs {want} ({dims:?})");
            off += usize::from(error > 2e-5 + 2e-5 * want.abs());
        }
        assert!(off * 500 <= out.len(), "{off} of {} elements off by a weight's rounding ({dims:?})", out.len());
        let mut again = vec![f32::NAN; expected.len()];
        attend(&call, &mut again, &threaded);
        assert_eq!(out, again, "the split across threads changes nothing");
        out
    }

    fn smollm() -> Dims {
        Dims { heads: 9, kv_heads: 3, head_dim: 64, scale: 0.125, softcap: 0.0, window: None }
    }

    #[test]
    fn decode_and_chunks_match_the_reference() {
        // Decode (one row, and the two a lone token runs as where the engine pads it; past
        // 1,100: two units of blocks), a first prefill, a prefill chunk after a past, a
        // speculative draft, a shared buffer with unused rows past the cache.
        let decode = [(0, 1, 1), (0, 2, 2), (300, 1, 512), (300, 2, 512), (1100, 1, 1280), (1100, 2, 1280)];
        let cases = decode.into_iter().chain([(0, 40, 40), (77, 33, 256), (129, 7, 136)]);
        for (past, rows, stride) in cases {
            check(Case { dims: smollm(), past, rows, stride }, 7 + past as u64 + rows as u64);
        }
        // A window: the rows of one register tile see different first keys of a block.
        for window in [50, 5] {
            check(Case { dims: Dims { window: Some(window), ..smollm() }, past: 100, rows: 40, stride: 150 }, 5);
        }
    }

    #[test]
    fn other_head_shapes_softcap_and_window_match_the_reference() {
        let tiny = Dims { heads: 4, kv_heads: 2, head_dim: 16, scale: 0.25, softcap: 0.0, window: None };
        check(Case { dims: tiny.clone(), past: 5, rows: 3, stride: 8 }, 1);
        let odd = Dims { heads: 2, kv_heads: 1, head_dim: 20, scale: 0.3, softcap: 0.0, window: None };
        check(Case { dims: odd, past: 70, rows: 20, stride: 90 }, 2);
        let capped = Dims { softcap: 2.0, ..tiny.clone() };
        check(Case { dims: capped, past: 90, rows: 2, stride: 92 }, 3);
        let windowed = Dims { window: Some(50), ..tiny };
        check(Case { dims: windowed, past: 100, rows: 30, stride: 130 }, 4);
    }

    /// A row gives the same bits alone (decode, and the two rows a lone token runs as where
    /// the engine pads it), in a draft (8 rows, the longest draft's 17, and the 32 that still
    /// run by blocks) and in a prefill chunk, past several units of blocks, on every path the
    /// CPU has.
    #[test]
    fn a_row_does_not_depend_on_the_rows_run_with_it() {
        let dims = smollm();
        let d = dims.head_dim;
        let (stride, total) = (1136, 1100);
        let mut noise = Noise(11);
        let queries = noise.fill(total * dims.heads * d, 2.0);
        let keys = noise.bf16s(dims.kv_heads * stride * d, 2.0);
        let values = noise.bf16s(dims.kv_heads * stride * d, 1.0);
        let run = |path: Path, past: usize, rows: usize| {
            let q = &queries[past * dims.heads * d..(past + rows) * dims.heads * d];
            let call = Call { dims: &dims, queries: q, keys: &keys, values: &values, stride, past, rows };
            let mut out = vec![0.0; q.len()];
            attend_on(path, &call, &mut out, &threaded);
            out
        };
        let row_len = dims.heads * d;
        for path in Path::available() {
            let whole = run(path, 0, total);
            for (past, rows) in
                [(250, 1), (250, 2), (1050, 1), (1050, 2), (1045, 8), (1040, 17), (1000, 32), (1000, 60)]
            {
                let part = run(path, past, rows);
                let (row, row_in_whole) = (&part[..row_len], &whole[past * row_len..(past + 1) * row_len]);
                assert_eq!(row, row_in_whole, "row {past} in {rows} rows ({path:?})");
            }
        }
    }

    /// Every path this CPU has gives the same bits (`VDPBF16PS`, the 512-bit and 256-bit
    /// register tiles, plain loops): for a lone row's 3 queries a tile (and 2, with 2 heads per
    /// KV head), drafts' 6, 9, 12, 18, 24 and 27, 40 (27 and 13) with 8 heads per KV head, a
    /// prefill tile's 48 (27 and 21), rows ending on odd keys (a pair's second row past the
    /// cache), a window, a softcap, and queries, keys and values near the rounding's limits.
    #[test]
    fn every_path_gives_the_same_bits() {
        let paths = Path::available();
        eprintln!("paths compared: {paths:?}");
        let cases = [
            (smollm(), 0, 1),
            (smollm(), 600, 1),
            (smollm(), 600, 2),
            (smollm(), 1100, 8),
            (smollm(), 1100, 9),
            (smollm(), 70, 4),
            (smollm(), 254, 1),
        ];
        let windowed = Dims { window: Some(100), ..smollm() };
        let grouped = Dims { heads: 8, kv_heads: 1, head_dim: 64, scale: 0.125, softcap: 0.0, window: None };
        let capped = Dims { softcap: 3.0, ..smollm() };
        let pairs = Dims { heads: 4, kv_heads: 2, ..smollm() };
        let more = [
            (windowed, 300, 40),
            (grouped, 200, 5),
            (capped, 500, 3),
            (smollm(), 250, 60),
            (pairs, 400, 1),
            (smollm(), 900, 6),
        ];
        for (seed, (dims, past, rows)) in cases.into_iter().chain(more).enumerate() {
            let stride = (past + rows + 3usize).next_multiple_of(PANEL);
            let mut noise = Noise(seed as u64 + 21);
            let d = dims.head_dim;
            let mut queries = noise.fill(rows * dims.heads * d, 2.0);
            let mut keys = noise.bf16s(dims.kv_heads * stride * d, 2.0);
            let mut values = noise.bf16s(dims.kv_heads * stride * d, 1.0);
            if seed % 2 == 1 {
                // Elements that round to 0 or just above `TINY`, and large ones.
                for (i, q) in queries.iter_mut().enumerate().step_by(7) {
                    *q = [1e-16, 1.1e-15, -3e-15, 40.0][i % 4];
                }
                for (i, k) in keys.iter_mut().enumerate().step_by(5) {
                    *k = bf16::from_f32([0.0, 1.0e-15, -2.0e-15, 30.0][i % 4]);
                }
                for (i, v) in values.iter_mut().enumerate().step_by(3) {
                    *v = bf16::from_f32([0.0, -0.0, 1.5e-15, -20.0][i % 4]);
                }
            }
            let call = Call { dims: &dims, queries: &queries, keys: &keys, values: &values, stride, past, rows };
            let bits = |path: Path| {
                let mut out = vec![f32::NAN; queries.len()];
                attend_on(path, &call, &mut out, &threaded);
                out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            let first = bits(paths[0]);
            for &path in &paths[1..] {
                assert_eq!(first, bits(path), "{path:?} against {:?}: past {past} rows {rows} {dims:?}", paths[0]);
            }
        }
    }

    /// On the probe's lanes, adding a pair's products even element first, or both at once with
    /// one rounding, gives other bits than two FMAs odd first: a `VDPBF16PS` that did either
    /// would be caught (`dot_adds_as_two_fmas`).
    #[test]
    fn the_dot_probe_tells_the_orders_apart() {
        let (accumulators, a, b) = dot_probe();
        let number = |bits: u16| f32::from_bits(u32::from(bits) << 16);
        let (mut even_first, mut at_once) = (0, 0);
        for (lane, &acc) in accumulators.iter().enumerate() {
            let (a, b) = ([a[2 * lane], a[2 * lane + 1]], [b[2 * lane], b[2 * lane + 1]]);
            let expected = two_fmas(acc, a, b).to_bits();
            let (odd, even) = (number(a[1]) * number(b[1]), number(a[0]) * number(b[0]));
            even_first += usize::from(((acc + even) + odd).to_bits() != expected);
            at_once += usize::from(((f64::from(acc) + f64::from(odd) + f64::from(even)) as f32).to_bits() != expected);
        }
        assert!(even_first > 0 && at_once > 0, "{even_first} and {at_once} of 64 lanes differ");
    }

    /// bf16 rounding is to nearest, ties to even, as `half`'s; magnitudes below `TINY` are +0.
    #[test]
    fn bf16_rounding_is_to_nearest_even_and_flushes_the_tiny() {
        let mut noise = Noise(3);
        let mut from: Vec<f32> = noise.fill(1001, 70_000.0);
        // Exact ties between two bf16 numbers (1 + 2^-8 lies halfway between 1 and 1 + 2^-7).
        from.extend([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.0, 1e-8, 3e38]);
        let mut rounded = vec![bf16::ZERO; from.len()];
        to_bf16(&from, &mut rounded);
        let plain: Vec<bf16> = from.iter().map(|&x| bf16::from_f32(x)).collect();
        assert_eq!(rounded, plain);
        assert_eq!(rounded[1001], bf16::from_f32(1.0), "a tie rounds to the even neighbour");
        assert_eq!(rounded[1002], bf16::from_f32(1.0 + 4.0 / 256.0), "and up to the even one");
        assert_eq!(round_bf16(TINY), TINY, "2^-50 is kept");
        for tiny in [TINY * 0.999, -TINY * 0.5, 1e-30, -0.0] {
            assert_eq!(round_bf16(tiny).to_bits(), 0, "{tiny} becomes +0");
        }
        assert!(from.iter().all(|&x| round_bf16(x).to_bits() & 0xffff == 0));
    }

    /// A head's keys of any `stride` (a multiple of `PANEL`) fill its region exactly once, and
    /// a panel's keys are whole rows of the row-major layout's bytes (what the session copies);
    /// a pair of rows' values too.
    #[test]
    fn key_at_and_value_at_place_every_element_once() {
        for (stride, d) in [(16, 64), (48, 64), (32, 20), (16, 1), (16, 3)] {
            let mut seen = vec![0u8; stride * d];
            for row in 0..stride {
                for dim in 0..d {
                    seen[value_at(row, dim, d)] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "values: stride {stride}, {d} dimensions");
            for pair in (0..stride).step_by(2) {
                let places: Vec<usize> =
                    (0..d).flat_map(|dim| [value_at(pair, dim, d), value_at(pair + 1, dim, d)]).collect();
                assert_eq!(places, (pair * d..(pair + 2) * d).collect::<Vec<_>>());
            }
            let mut seen = vec![0u8; stride * d];
            for row in 0..stride {
                for dim in 0..d {
                    seen[key_at(row, dim, d)] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "stride {stride}, {d} dimensions");
            for panel in (0..stride).step_by(PANEL) {
                let places: Vec<usize> = (panel..panel + PANEL)
                    .flat_map(|row| (0..d).map(move |dim| (row, dim)))
                    .map(|(row, dim)| key_at(row, dim, d))
                    .collect();
                assert_eq!(places.iter().min(), Some(&(panel * d)));
                assert_eq!(places.iter().max(), Some(&((panel + PANEL) * d - 1)));
            }
        }
    }

    #[test]
    fn rotary_matches_the_definition() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rotate(&mut x, &[0.5, 1.0], &[0.25, 0.0], false);
        assert_eq!(x, [1.0 * 0.5 - 3.0 * 0.25, 2.0, 3.0 * 0.5 + 1.0 * 0.25, 4.0]);
        let mut y = [1.0f32, 2.0, 3.0, 4.0];
        rotate(&mut y, &[0.5, 1.0], &[0.25, 0.0], true);
        assert_eq!(y, [1.0 * 0.5 - 2.0 * 0.25, 2.0 * 0.5 + 1.0 * 0.25, 3.0, 4.0]);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// `cargo test --release --lib engine::attention::kernel::timing -- --ignored --nocapture`:
    /// the median CPU time of one call (one layer), one thread, the cache warm; the same cases
    /// as `benches/attention_kernel.py` (decode as two rows, as the engine runs a lone token
    /// where ONNX Runtime's MatMulNBits is left in the graph), and decode as one row (as it runs
    /// with nib's linear kernel); decode again with 30 caches read in turn from memory. `ROWS=N`
    /// keeps the cases of N rows.
    #[test]
    #[ignore]
    fn time_attend() {
        let dims = Dims { heads: 9, kv_heads: 3, head_dim: 64, scale: 0.125, softcap: 0.0, window: None };
        for (past, rows) in [
            (256usize, 1usize),
            (1024, 1),
            (4096, 1),
            (256, 2),
            (1024, 2),
            (4096, 2),
            (0, 128),
            (1024, 128),
            (3968, 128),
        ]
        .into_iter()
        .filter(|&(_, rows)| std::env::var("ROWS").map_or(true, |r| r == rows.to_string()))
        {
            let stride = past + 256;
            let queries: Vec<f32> = (0..rows * 9 * 64).map(|i| (i % 7) as f32 * 0.01).collect();
            let keys: Vec<bf16> = (0..3 * stride * 64).map(|i| bf16::from_f32((i % 13) as f32 * 0.01)).collect();
            let values = keys.clone();
            let call = Call { dims: &dims, queries: &queries, keys: &keys, values: &values, stride, past, rows };
            let mut out = vec![0.0; queries.len()];
            let seq = |count: usize, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit);
            let mut times: Vec<f64> = (0..if rows > 2 { 60 } else { 600 })
                .map(|_| {
                    let start = crate::engine::kernels::thread_cpu_seconds();
                    attend(&call, &mut out, &seq);
                    (crate::engine::kernels::thread_cpu_seconds() - start) * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            eprintln!("nib attention past {past} rows {rows} threads 1: median {median:.3} ms CPU per call");
            if rows <= 2 {
                eprintln!("{}", decode_from_memory(&dims, &queries, past, rows));
            }
        }
    }

    /// `cargo test --release --lib engine::attention::kernel::timing::time_decode -- --ignored --nocapture`:
    /// decode (1 row, and the 2 a lone token runs as where it is padded) and drafts (3, 5, 8 and 9
    /// rows, and the 17 of the longest draft with the token before it; `ROWS=3,5` keeps those) at
    /// depths 512, 2,048 and 4,096, 30 caches in turn as a step reads them; the 512-bit register
    /// tiles with two FMAs a pair of products and with a `VDPBF16PS` called in turn on one
    /// thread, so that the machine's load weighs on both alike, and the second's units
    /// scheduled on two threads. Median CPU time per call (one layer).
    #[test]
    #[ignore]
    fn time_decode() {
        if Path::detect() != Path::Bf16 {
            eprintln!("no AVX512-BF16: nothing to compare");
            return;
        }
        const LAYERS: usize = 30;
        let dims = Dims { heads: 9, kv_heads: 3, head_dim: 64, scale: 0.125, softcap: 0.0, window: None };
        let seq = |count: usize, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit);
        for (past, rows) in [512usize, 2048, 4096]
            .into_iter()
            .flat_map(|past| [1usize, 2, 3, 5, 8, 9, 17].map(|rows| (past, rows)))
            .filter(|&(_, rows)| std::env::var("ROWS").map_or(true, |r| r.split(',').any(|r| r == rows.to_string())))
        {
            let stride = past + 256;
            let queries: Vec<f32> = (0..rows * 9 * 64).map(|i| ((i * 7919) % 23) as f32 * 0.02 - 0.2).collect();
            let caches: Vec<Vec<bf16>> = (0..2 * LAYERS)
                .map(|layer| {
                    (0..3 * stride * 64).map(|i| bf16::from_f32(((i * 31 + layer) % 29) as f32 * 0.03 - 0.42)).collect()
                })
                .collect();
            let mut out = vec![0.0; queries.len()];
            // Each unit timed, then given to whichever of two threads is free first (as a pool
            // of two idle threads takes them): the time two threads would take, without their
            // contention for memory.
            let two_threads = std::cell::Cell::new(0.0);
            let scheduled = |count: usize, unit: &(dyn Fn(usize) + Sync)| {
                let mut busy = [0.0f64; 2];
                for index in 0..count {
                    let start = crate::engine::kernels::thread_cpu_seconds();
                    unit(index);
                    let spent = crate::engine::kernels::thread_cpu_seconds() - start;
                    let free = if busy[0] <= busy[1] { 0 } else { 1 };
                    busy[free] += spent;
                }
                two_threads.set(two_threads.get() + busy[0].max(busy[1]));
            };
            let mut times = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..40 {
                for (path, times) in [Path::Avx512, Path::Bf16].into_iter().zip(&mut times) {
                    let start = crate::engine::kernels::thread_cpu_seconds();
                    for layer in caches.chunks_exact(2) {
                        let (keys, values) = (&layer[0], &layer[1]);
                        let call = Call { dims: &dims, queries: &queries, keys, values, stride, past, rows };
                        attend_on(path, &call, &mut out, &seq);
                    }
                    times.push((crate::engine::kernels::thread_cpu_seconds() - start) * 1e3 / LAYERS as f64);
                }
                two_threads.set(0.0);
                for layer in caches.chunks_exact(2) {
                    let (keys, values) = (&layer[0], &layer[1]);
                    let call = Call { dims: &dims, queries: &queries, keys, values, stride, past, rows };
                    attend_on(Path::Bf16, &call, &mut out, &scheduled);
                }
                times[2].push(two_threads.get() * 1e3 / LAYERS as f64);
            }
            let [fma, dot, two_threads] = times.map(|mut times| {
                times.sort_by(f64::total_cmp);
                times[times.len() / 2]
            });
            eprintln!(
                "nib attention past {past} rows {rows}, {LAYERS} caches in turn: median ms CPU per call, one thread: \
                 FMA pairs {fma:.3}, VDPBF16PS {dot:.3} ({:.2}x); VDPBF16PS on two threads {two_threads:.3}",
                fma / dot
            );
        }
    }

    /// Decode as a step runs it: 30 layers, each with its own cache, one after the other, so
    /// that every call reads its keys and values from memory rather than a warm cache.
    fn decode_from_memory(dims: &Dims, queries: &[f32], past: usize, rows: usize) -> String {
        const LAYERS: usize = 30;
        let stride = past + 256;
        let caches: Vec<Vec<bf16>> = (0..2 * LAYERS)
            .map(|layer| (0..3 * stride * 64).map(|i| bf16::from_f32(((i + layer) % 13) as f32 * 0.01)).collect())
            .collect();
        let mut out = vec![0.0; queries.len()];
        let seq = |count: usize, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit);
        let mut times: Vec<f64> = (0..20)
            .map(|_| {
                let start = crate::engine::kernels::thread_cpu_seconds();
                for layer in caches.chunks_exact(2) {
                    let (keys, values) = (&layer[0], &layer[1]);
                    let call = Call { dims, queries, keys, values, stride, past, rows };
                    attend(&call, &mut out, &seq);
                }
                (crate::engine::kernels::thread_cpu_seconds() - start) * 1e3 / LAYERS as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        format!(
            "nib attention past {past} rows {rows} threads 1, {LAYERS} caches in turn: median {:.3} ms CPU per call",
            times[times.len() / 2]
        )
    }
}
