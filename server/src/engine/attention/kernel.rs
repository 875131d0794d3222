//! The attention arithmetic, on plain slices: rotary embedding, and causal grouped-query
//! attention over a KV cache in blocks of keys with a numerically stable softmax.
//!
//! Every query row's result depends only on its own query, its keys and values and its
//! position: keys are taken in fixed blocks counted from key 0, each block gives a partial
//! softmax (its maximum, its sum, its weighted values) and the partials are merged in block
//! order. So a row gives the same bits whether it runs alone, in a prefill chunk or in a
//! speculative draft, and however the work is split across threads.

/// Keys per block: a block of one KV head's keys and values (2 × 64 rows × 64 floats) stays in
/// the L1 cache while every query of its group reads it.
pub(crate) const BLOCK: usize = 64;

/// At most this many query rows run as "decode": the work is split by blocks of keys (each
/// block read once for all rows), else by tiles of rows (prefill).
const FEW_ROWS: usize = 16;

/// Query rows per unit of work in prefill.
const TILE_ROWS: usize = 4;

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
/// `values` are `[kv_heads][stride][head_dim]` with the new rows already written at
/// `past..past + rows`, `out` is `[rows][heads * head_dim]`.
pub(crate) struct Call<'a> {
    pub dims: &'a Dims,
    pub queries: &'a [f32],
    pub keys: &'a [f32],
    pub values: &'a [f32],
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

/// Causal grouped-query attention of `call`'s rows, written to `out`.
pub(crate) fn attend(call: &Call<'_>, out: &mut [f32], for_each: ForEach<'_>) {
    let dims = call.dims;
    assert_eq!(out.len(), call.rows * dims.heads * dims.head_dim);
    assert_eq!(call.queries.len(), out.len());
    assert!(call.past + call.rows <= call.stride);
    assert_eq!(call.keys.len(), dims.kv_heads * call.stride * dims.head_dim);
    if call.rows <= FEW_ROWS {
        attend_by_blocks(call, out, for_each);
    } else {
        attend_by_tiles(call, out, for_each);
    }
}

/// Floats of one partial: maximum, sum, then the weighted values.
fn partial_len(dims: &Dims) -> usize {
    dims.head_dim + 2
}

fn blocks(call: &Call<'_>) -> usize {
    (call.past + call.rows).div_ceil(BLOCK)
}

/// Decode and short drafts: one unit per (KV head, block of keys) computes the partials of
/// every row and query head of the group; then one unit per KV head merges them in order.
fn attend_by_blocks(call: &Call<'_>, out: &mut [f32], for_each: ForEach<'_>) {
    let dims = call.dims;
    let (blocks, group, plen) = (blocks(call), dims.group(), partial_len(dims));
    let per_unit = call.rows * group * plen;
    let mut partials = vec![0.0f32; dims.kv_heads * blocks * per_unit];
    let shared = Shared(partials.as_mut_ptr());
    for_each(dims.kv_heads * blocks, &|unit| {
        let (kv_head, block) = (unit / blocks, unit % blocks);
        // SAFETY: unit `unit` owns `partials[unit * per_unit..][..per_unit]`.
        let slots = unsafe { shared.slice(unit * per_unit, per_unit) };
        for row in 0..call.rows {
            for member in 0..group {
                let slot = &mut slots[(row * group + member) * plen..][..plen];
                block_partial(call, kv_head, kv_head * group + member, row, block, slot);
            }
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
                    let unit = kv_head * blocks + block;
                    let slot = &partials[unit * per_unit + (row * group + member) * plen..][..plen];
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
/// each block's partial as it goes (the same arithmetic as `attend_by_blocks`).
fn attend_by_tiles(call: &Call<'_>, out: &mut [f32], for_each: ForEach<'_>) {
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
        // One state per (row, query head of the group); block by block, so that a block's keys
        // and values stay in the L1 cache while every query of the tile reads them.
        let mut states = vec![0.0f32; rows.len() * group * plen];
        let mut slot = vec![0.0f32; plen];
        let last_block = (call.past + rows.end - 1) / BLOCK;
        for block in 0..=last_block {
            for (index, row) in rows.clone().enumerate() {
                if block > (call.past + row) / BLOCK {
                    continue;
                }
                for member in 0..group {
                    block_partial(call, kv_head, kv_head * group + member, row, block, &mut slot);
                    merge(&mut states[(index * group + member) * plen..][..plen], &slot);
                }
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

/// The partial softmax of query head `head` of `row` over block `block` of `kv_head`'s keys,
/// written to `slot` (`[max, sum, weighted values…]`; sum 0 when the row sees none of them).
/// With AVX2 and FMA, heads of 64 dimensions take `fma64`'s loops; otherwise plain loops
/// (compiled for AVX2 when the CPU has it). A machine always takes the same path.
fn block_partial(call: &Call<'_>, kv_head: usize, head: usize, row: usize, block: usize, slot: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        if call.dims.head_dim == fma64::D {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { block_partial_fma64(call, kv_head, head, row, block, slot) };
        }
        // SAFETY: as above.
        return unsafe { block_partial_avx2(call, kv_head, head, row, block, slot) };
    }
    block_partial_with(call, (kv_head, head, row, block), slot, scores_portable, weighted_portable)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_partial_fma64(
    call: &Call<'_>,
    kv_head: usize,
    head: usize,
    row: usize,
    block: usize,
    slot: &mut [f32],
) {
    // SAFETY (both closures): this function runs only where AVX2 and FMA are available.
    let scores = |query: &[f32], keys: &[f32], out: &mut [f32]| unsafe { fma64::scores(query, keys, out) };
    let weighted = |weights: &[f32], values: &[f32], out: &mut [f32]| unsafe { fma64::weighted(weights, values, out) };
    block_partial_with(call, (kv_head, head, row, block), slot, scores, weighted)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_partial_avx2(call: &Call<'_>, kv_head: usize, head: usize, row: usize, block: usize, slot: &mut [f32]) {
    block_partial_with(call, (kv_head, head, row, block), slot, scores_portable, weighted_portable)
}

/// `out[j] = query · keys[j]` (keys row after row).
#[inline(always)]
fn scores_portable(query: &[f32], keys: &[f32], out: &mut [f32]) {
    for (score, key) in out.iter_mut().zip(keys.chunks_exact(query.len())) {
        *score = dot(query, key);
    }
}

/// `out += Σ weights[j] · values[j]`.
#[inline(always)]
fn weighted_portable(weights: &[f32], values: &[f32], out: &mut [f32]) {
    for (&weight, value) in weights.iter().zip(values.chunks_exact(out.len())) {
        axpy(out, weight, value);
    }
}

#[inline(always)]
fn block_partial_with(
    call: &Call<'_>,
    (kv_head, head, row, block): (usize, usize, usize, usize),
    slot: &mut [f32],
    scores_of: impl Fn(&[f32], &[f32], &mut [f32]),
    weighted_of: impl Fn(&[f32], &[f32], &mut [f32]),
) {
    let dims = call.dims;
    let d = dims.head_dim;
    let (lo, hi) = visible(call, row);
    let (start, end) = ((block * BLOCK).max(lo), ((block + 1) * BLOCK).min(hi));
    slot.fill(0.0);
    if start >= end {
        return;
    }
    let query = &call.queries[(row * dims.heads + head) * d..][..d];
    let base = kv_head * call.stride * d;
    let keys = &call.keys[base + start * d..base + end * d];
    let values = &call.values[base + start * d..base + end * d];
    let mut scores = [0.0f32; BLOCK];
    let scores = &mut scores[..end - start];
    scores_of(query, keys, scores);
    for score in scores.iter_mut() {
        *score *= dims.scale;
    }
    if dims.softcap > 0.0 {
        for score in scores.iter_mut() {
            *score = dims.softcap * (*score / dims.softcap).tanh();
        }
    }
    let max = maximum(scores);
    for score in scores.iter_mut() {
        *score = exp(*score - max);
    }
    let (head_slot, weighted) = slot.split_at_mut(2);
    head_slot[0] = max;
    head_slot[1] = sum(scores);
    weighted_of(scores, values, weighted);
}

/// The inner loops for heads of 64 dimensions with AVX2 and FMA: the query and the weighted
/// sum stay in eight registers, eight keys' dot products are summed across lanes together.
#[cfg(target_arch = "x86_64")]
mod fma64 {
    use std::arch::x86_64::*;

    pub(super) const D: usize = 64;
    const CHUNKS: usize = D / 8;

    /// `out[j] = query · keys[j]`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(query: &[f32], keys: &[f32], out: &mut [f32]) {
        assert!(query.len() == D && keys.len() == out.len() * D);
        // SAFETY: every load reads within `query` (D floats) or `keys` (out.len() rows of D).
        unsafe {
            let q: [__m256; CHUNKS] = std::array::from_fn(|c| _mm256_loadu_ps(query.as_ptr().add(c * 8)));
            let key = |j: usize, c: usize| _mm256_loadu_ps(keys.as_ptr().add(j * D + c * 8));
            let mut j = 0;
            while j + 8 <= out.len() {
                let mut acc = [_mm256_setzero_ps(); 8];
                for (c, &q) in q.iter().enumerate() {
                    for (t, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(q, key(j + t, c), *acc);
                    }
                }
                let t0 = _mm256_hadd_ps(acc[0], acc[1]);
                let t1 = _mm256_hadd_ps(acc[2], acc[3]);
                let t2 = _mm256_hadd_ps(acc[4], acc[5]);
                let t3 = _mm256_hadd_ps(acc[6], acc[7]);
                let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
                let sums = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
                _mm256_storeu_ps(out.as_mut_ptr().add(j), sums);
                j += 8;
            }
            for (offset, score) in out[j..].iter_mut().enumerate() {
                let mut acc = _mm256_setzero_ps();
                for (c, &q) in q.iter().enumerate() {
                    acc = _mm256_fmadd_ps(q, key(j + offset, c), acc);
                }
                let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let pairs = _mm_hadd_ps(half, half);
                *score = _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs));
            }
        }
    }

    /// `out += Σ weights[j] · values[j]`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted(weights: &[f32], values: &[f32], out: &mut [f32]) {
        assert!(out.len() == D && values.len() == weights.len() * D);
        // SAFETY: every access is within `out` (D floats) or `values` (weights.len() rows of D).
        unsafe {
            let mut acc: [__m256; CHUNKS] = std::array::from_fn(|c| _mm256_loadu_ps(out.as_ptr().add(c * 8)));
            for (j, &weight) in weights.iter().enumerate() {
                let weight = _mm256_set1_ps(weight);
                for (c, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(weight, _mm256_loadu_ps(values.as_ptr().add(j * D + c * 8)), *acc);
                }
            }
            for (c, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(c * 8), *acc);
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
    let (a, b) = (exp(state[0] - max), exp(partial[0] - max));
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

/// Lanes of the dot product and sum accumulators (two AVX2 or one AVX-512 register).
const LANES: usize = 16;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let ((a_chunks, a_rest), (b_chunks, b_rest)) = (a.as_chunks::<LANES>(), b.as_chunks::<LANES>());
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let mut total = reduce(&lanes);
    for (x, y) in a_rest.iter().zip(b_rest) {
        total += x * y;
    }
    total
}

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

/// `y += a · x`.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `e^x` for `x <= 0` (softmax weights), within about 2 ulp, 0 below -87; plain arithmetic so
/// that loops over it vectorise (Cephes' polynomial on the range-reduced argument).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let n = (clamped * LOG2E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scaled = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { scaled }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The textbook computation in f64: scores, masked softmax, weighted values.
    fn reference(call: &Call<'_>) -> Vec<f32> {
        let dims = call.dims;
        let d = dims.head_dim;
        let mut out = vec![0.0f32; call.rows * dims.heads * d];
        for row in 0..call.rows {
            let (lo, hi) = visible(call, row);
            for head in 0..dims.heads {
                let kv_head = head / dims.group();
                let query = &call.queries[(row * dims.heads + head) * d..][..d];
                let key = |j: usize| &call.keys[(kv_head * call.stride + j) * d..][..d];
                let value = |j: usize| &call.values[(kv_head * call.stride + j) * d..][..d];
                let scores: Vec<f64> = (lo..hi)
                    .map(|j| {
                        let s = query.iter().zip(key(j)).map(|(&q, &k)| f64::from(q) * f64::from(k)).sum::<f64>()
                            * f64::from(dims.scale);
                        if dims.softcap > 0.0 {
                            f64::from(dims.softcap) * (s / f64::from(dims.softcap)).tanh()
                        } else {
                            s
                        }
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for i in 0..d {
                    let v: f64 = (lo..hi).zip(&weights).map(|(j, w)| w * f64::from(value(j)[i])).sum();
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
        let mut noise = Noise(seed);
        let d = dims.head_dim;
        let queries = noise.fill(rows * dims.heads * d, 2.0);
        let keys = noise.fill(dims.kv_heads * stride * d, 2.0);
        let values = noise.fill(dims.kv_heads * stride * d, 1.0);
        let call = Call { dims: &dims, queries: &queries, keys: &keys, values: &values, stride, past, rows };
        let expected = reference(&call);
        let mut out = vec![f32::NAN; expected.len()];
        attend(&call, &mut out, &sequential);
        for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
            assert!((got - want).abs() <= 2e-5 + 2e-5 * want.abs(), "element {i}: {got} vs {want} ({dims:?})");
        }
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
        // Decode (the engine pads a lone token to two rows), a first prefill, a prefill chunk
        // after a past, a speculative draft, a shared buffer with unused rows past the cache.
        for (past, rows, stride) in [(0, 1, 1), (0, 2, 2), (300, 2, 512), (0, 40, 40), (77, 33, 256), (129, 7, 136)] {
            check(Case { dims: smollm(), past, rows, stride }, 7 + past as u64 + rows as u64);
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

    /// A row gives the same bits alone (decode), in a prefill chunk and in a draft.
    #[test]
    fn a_row_does_not_depend_on_the_rows_run_with_it() {
        let dims = smollm();
        let d = dims.head_dim;
        let (stride, total) = (320, 300);
        let mut noise = Noise(11);
        let queries = noise.fill(total * dims.heads * d, 2.0);
        let keys = noise.fill(dims.kv_heads * stride * d, 2.0);
        let values = noise.fill(dims.kv_heads * stride * d, 1.0);
        let run = |past: usize, rows: usize| {
            let q = &queries[past * dims.heads * d..(past + rows) * dims.heads * d];
            let call = Call { dims: &dims, queries: q, keys: &keys, values: &values, stride, past, rows };
            let mut out = vec![0.0; q.len()];
            attend(&call, &mut out, &threaded);
            out
        };
        let row_len = dims.heads * d;
        let whole = run(0, total);
        for (past, rows) in [(250, 1), (250, 2), (240, 16), (200, 60)] {
            let part = run(past, rows);
            assert_eq!(part[..row_len], whole[past * row_len..(past + 1) * row_len], "row {past} in {rows} rows");
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

    #[test]
    fn exp_is_close_to_the_library_exp() {
        for i in 0..=20_000 {
            let x = -90.0 * i as f32 / 20_000.0;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= want * 3e-7 || (x < -87.0 && got == 0.0), "exp({x}) = {got}, not {want}");
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// `cargo test --release --lib engine::attention::kernel::timing -- --ignored --nocapture`:
    /// the median time of one call (one layer), one thread, the cache warm.
    #[test]
    #[ignore]
    fn time_attend() {
        let dims = Dims { heads: 9, kv_heads: 3, head_dim: 64, scale: 0.125, softcap: 0.0, window: None };
        for (past, rows) in [(1024usize, 2usize), (4096, 2), (512, 128), (3968, 128)]
            .into_iter()
            .filter(|&(_, rows)| std::env::var("ROWS").map_or(true, |r| r == rows.to_string()))
        {
            let stride = past + 256;
            let queries: Vec<f32> = (0..rows * 9 * 64).map(|i| (i % 7) as f32 * 0.01).collect();
            let keys: Vec<f32> = (0..3 * stride * 64).map(|i| (i % 13) as f32 * 0.01).collect();
            let values = keys.clone();
            let call = Call { dims: &dims, queries: &queries, keys: &keys, values: &values, stride, past, rows };
            let mut out = vec![0.0; queries.len()];
            let seq = |count: usize, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit);
            let mut times: Vec<f64> = (0..if rows > 2 { 40 } else { 400 })
                .map(|_| {
                    let start = std::time::Instant::now();
                    attend(&call, &mut out, &seq);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            eprintln!(
                "nib attention past {past} rows {rows} threads 1: median {median:.3} ms per call, x30 = {:.2} ms",
                median * 30.0
            );
        }
    }
}
