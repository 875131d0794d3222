//! The arithmetic of a quantized linear layer on plain slices: `y = x · Wᵀ` for MatMulNBits'
//! blocks of 32 weights with one scale each, 4-bit (zero point 8) or 8-bit (zero point 128: the
//! LM head), plus the converter's per-block offsets (`w = (q - zero point) · scale + offset`,
//! models/nib_convert/quant.py).
//!
//! The weights are repacked once (`Repacked`, at a node's first run) so that a register holds
//! one block of sixteen outputs side by side: each 32-bit lane is one output, its four bytes
//! four consecutive weights of that output (for 4-bit weights, a byte's low nibble is one of
//! the block's first 16 weights, its high nibble the weight 16 places on). Each activation row
//! is quantized once per block of 32 to int8 (scale `max|x| / 127`, like llama.cpp's Q8 blocks
//! and ONNX Runtime's int8-activation kernel), in order, and four of its values at a time are
//! broadcast to every lane: eight AVX-512 VNNI `dpbusd` (or AVX2 `maddubs` and `madd`, an 8-bit
//! weight taken there as `q − 128` with its sign moved onto the activations so that no sum
//! saturates) give each output's exact integer dot product for the block, the zero point
//! folded in as `−zero point · Σ values`. Then each output takes, per block in block order,
//! one fused multiply-add for it, `acc = float(sum) · (weight scale · activation scale) + acc`,
//! and one for the offsets term, which uses the exact sum of the block's inputs:
//! `acc = Σ x · offset + acc`. A SwiGLU block's down projection first computes its input,
//! `silu(gate) · up` (`swiglu`).
//!
//! The scales and offsets are f32 or f16 (`Scale`: the node narrows them where every value is
//! exactly an f16); the tiles widen f16 to the same f32 values, so the bits do not depend on it.
//!
//! An output's result depends only on its row and the weights: it is the same operations in
//! the same order whatever rows, tile, thread or path it runs with. The 512-bit VNNI path, the
//! AVX2 path and `dot_portable`, the plain-Rust mirror the tests hold them to, give the same
//! bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::ops::Range;

/// Weights per block (MatMulNBits' `block_size`).
pub(crate) const BLOCK: usize = 32;
/// Outputs side by side in one register of the 512-bit path (two of the AVX2 path): the unit
/// of the repacked weights.
pub(crate) const GROUP: usize = 16;
/// Inputs per 32-bit lane: one `dpbusd` step.
const QUAD: usize = 4;
/// f32 lanes of one AVX2 register.
const LANES: usize = 8;
/// The most rows that share each repacked weight block.
const TILE_ROWS: usize = 8;
/// The most groups of outputs in one register tile.
const TILE_GROUPS: usize = 2;
/// Outputs per unit of work in prefill: 4,096 weights of 576 inputs (36 KiB with scales and
/// offsets) stay in the L2 cache while every row of the unit reads them.
const UNIT_COLUMNS: usize = 64;
/// Up to this many rows (a decode step, a draft of one token) run in `stream_columns` units.
const STREAM_ROWS: usize = 2;
/// Outputs per unit of work, about, where the weights stream from memory (`stream_columns`).
const STREAM_COLUMNS: usize = 512;
/// How far ahead of the weights in use the tiles prefetch (bytes of weights, and an eighth of
/// that of scales).
const PREFETCH_BYTES: usize = 2048;
/// Rows per unit of work in long prefill chunks (their activations stay in the L2 cache).
const UNIT_ROWS: usize = 64;

/// How a node stores a block of 32 weights (in MatMulNBits' order; `Repacked` has the
/// kernel's).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Bits {
    /// 16 bytes, element `2i` in the low nibble of byte `i`, `2i + 1` in the high one; zero
    /// point 8.
    Four,
    /// 32 bytes, one per element in order; zero point 128.
    Eight,
}

impl Bits {
    /// MatMulNBits' `bits` attribute, where the kernel implements it.
    pub fn from_attribute(bits: i64) -> Option<Bits> {
        match bits {
            4 => Some(Bits::Four),
            8 => Some(Bits::Eight),
            _ => None,
        }
    }

    pub const fn block_bytes(self) -> usize {
        match self {
            Bits::Four => BLOCK / 2,
            Bits::Eight => BLOCK,
        }
    }

    /// Stored value of `element` (0..32) of a block in MatMulNBits' order (the tests'
    /// reference for `repack_lane`).
    #[cfg(test)]
    fn weight(self, block: &[u8], element: usize) -> u8 {
        match self {
            Bits::Four if element.is_multiple_of(2) => block[element / 2] & 15,
            Bits::Four => block[element / 2] >> 4,
            Bits::Eight => block[element],
        }
    }

    /// The zero point, as a power of two (the integer correction is `−Σ values` times it).
    const fn zero_point_shift(self) -> u32 {
        match self {
            Bits::Four => 3,
            Bits::Eight => 7,
        }
    }

    /// `source`, one output's block in MatMulNBits' order, into lane `lane` of a group's
    /// repacked block `target` (`repacked_at`).
    fn repack_lane(self, source: &[u8], target: &mut [u8], lane: usize) {
        for quad in 0..4 {
            for within in 0..QUAD {
                let at = (quad * GROUP + lane) * QUAD + within;
                let element = quad * QUAD + within;
                match self {
                    Bits::Four => {
                        let nibble = |element: usize| (source[element / 2] >> (4 * (element % 2))) & 15;
                        target[at] = nibble(element) | nibble(element + BLOCK / 2) << 4;
                    }
                    Bits::Eight => {
                        target[at] = source[element];
                        target[at + 4 * GROUP * QUAD] = source[element + BLOCK / 2];
                    }
                }
            }
        }
    }

    /// Where stored `element` (0..32) of output `lane` of a group lies in a repacked block of
    /// the group: its byte, and whether it is that byte's high nibble.
    const fn repacked_at(self, lane: usize, element: usize) -> (usize, bool) {
        let (quad, within) = (element / QUAD, element % QUAD);
        match self {
            Bits::Four => (((quad % 4) * GROUP + lane) * QUAD + within, quad >= 4),
            Bits::Eight => ((quad * GROUP + lane) * QUAD + within, false),
        }
    }
}

/// A node's weights in the kernel's order: `packed` `[groups][blocks][group block]`, where a
/// group block is `bits.block_bytes() · GROUP` bytes (`Bits::repacked_at`), and `scales` and
/// `offsets` `[groups][blocks][GROUP]`, for `groups = ⌈outputs / GROUP⌉` (the last group
/// padded with zeros). Made once per node, from MatMulNBits' `[outputs][blocks][block]` and
/// the converter's `[blocks][outputs]` offsets.
pub(crate) struct Repacked<S> {
    pub bits: Bits,
    pub outputs: usize,
    pub blocks: usize,
    packed: Vec<u8>,
    scales: Vec<S>,
    offsets: Option<Vec<S>>,
}

impl<S: Scale> Repacked<S> {
    /// MatMulNBits' `packed` `[outputs][blocks][bits.block_bytes()]` and `scales`
    /// `[outputs][blocks]`, and the converter's `offsets` `[blocks][outputs]`, in the kernel's
    /// order; one unit of work per group of outputs (loading the default model repacks about
    /// 135 million weights).
    pub fn new(
        bits: Bits,
        (outputs, blocks): (usize, usize),
        (packed, scales, offsets): (&[u8], &[S], Option<&[S]>),
        for_each: ForEach<'_>,
    ) -> Repacked<S> {
        let bytes = bits.block_bytes();
        assert_eq!(packed.len(), outputs * blocks * bytes);
        assert_eq!(scales.len(), outputs * blocks);
        assert!(offsets.is_none_or(|offsets| offsets.len() == blocks * outputs));
        let groups = outputs.div_ceil(GROUP);
        let mut repacked = vec![0u8; groups * blocks * GROUP * bytes];
        let mut repacked_scales = vec![S::ZERO; groups * blocks * GROUP];
        let mut repacked_offsets = offsets.map(|_| vec![S::ZERO; groups * blocks * GROUP]);
        let targets = (
            Shared(repacked.as_mut_ptr()),
            Shared(repacked_scales.as_mut_ptr()),
            repacked_offsets.as_mut().map(|offsets| Shared(offsets.as_mut_ptr())),
        );
        for_each(groups, &|group| {
            let per_group = blocks * GROUP;
            // SAFETY: each unit writes its own group's part of each buffer, which holds `groups`.
            let (target, target_scales, mut target_offsets) = unsafe {
                (
                    std::slice::from_raw_parts_mut(targets.0.at(group * per_group * bytes), per_group * bytes),
                    std::slice::from_raw_parts_mut(targets.1.at(group * per_group), per_group),
                    targets.2.map(|offsets| std::slice::from_raw_parts_mut(offsets.at(group * per_group), per_group)),
                )
            };
            for output in group * GROUP..((group + 1) * GROUP).min(outputs) {
                let lane = output % GROUP;
                for block in 0..blocks {
                    let source = &packed[(output * blocks + block) * bytes..][..bytes];
                    bits.repack_lane(source, &mut target[block * GROUP * bytes..][..GROUP * bytes], lane);
                    target_scales[block * GROUP + lane] = scales[output * blocks + block];
                    if let (Some(offsets), Some(target)) = (offsets, target_offsets.as_deref_mut()) {
                        target[block * GROUP + lane] = offsets[block * outputs + output];
                    }
                }
            }
        });
        Repacked { bits, outputs, blocks, packed: repacked, scales: repacked_scales, offsets: repacked_offsets }
    }

    pub fn weights(&self) -> Weights<'_, S> {
        let Repacked { bits, outputs, blocks, .. } = *self;
        let (packed, scales, offsets) = (&self.packed[..], &self.scales[..], self.offsets.as_deref());
        Weights { bits, outputs, blocks, packed, scales, offsets }
    }
}

/// One node's weights as the kernel reads them (`Repacked`).
pub(crate) struct Weights<'a, S: Scale = f32> {
    pub bits: Bits,
    pub outputs: usize,
    pub blocks: usize,
    packed: &'a [u8],
    scales: &'a [S],
    offsets: Option<&'a [S]>,
}

impl<S: Scale> Weights<'_, S> {
    /// Inputs per row.
    pub fn inputs(&self) -> usize {
        self.blocks * BLOCK
    }

    fn groups(&self) -> usize {
        self.outputs.div_ceil(GROUP)
    }

    fn check(&self) {
        let padded = self.groups() * GROUP * self.blocks;
        assert_eq!(self.packed.len(), padded * self.bits.block_bytes());
        assert_eq!(self.scales.len(), padded);
        assert!(self.offsets.is_none_or(|offsets| offsets.len() == padded));
    }

    /// The start of `group`'s repacked `block` and of its scales.
    fn group_block(&self, group: usize, block: usize) -> (&[u8], &[S]) {
        let index = group * self.blocks + block;
        let bytes = GROUP * self.bits.block_bytes();
        (&self.packed[index * bytes..][..bytes], &self.scales[index * GROUP..][..GROUP])
    }

    /// The offset of `block` of `output`.
    pub(super) fn offset(&self, output: usize, block: usize) -> Option<S> {
        self.offsets.map(|offsets| offsets[(output / GROUP * self.blocks + block) * GROUP + output % GROUP])
    }

    /// The stored weight `element` of `block` of `output`, and that block's scale.
    pub(super) fn stored(&self, output: usize, block: usize, element: usize) -> (u8, S) {
        let (packed, scales) = self.group_block(output / GROUP, block);
        let (at, high) = self.bits.repacked_at(output % GROUP, element);
        let byte = packed[at];
        let value = match (self.bits, high) {
            (Bits::Four, false) => byte & 15,
            (Bits::Four, true) => byte >> 4,
            (Bits::Eight, _) => byte,
        };
        (value, scales[output % GROUP])
    }
}

/// How a node stores its block scales and offsets: `f32`, as the converter writes them, or
/// `f16` where every one of a node's values is exactly an `f16` (`op.rs` narrows them once),
/// fewer bytes for a decode step to read. Either way the tiles compute with the same f32
/// values, so the results have the same bits.
pub(crate) trait Scale: Copy + Send + Sync + 'static {
    const ZERO: Self;

    /// The value, exactly.
    fn value(self) -> f32;

    /// The sixteen values at `at` (AVX-512 F).
    #[cfg(target_arch = "x86_64")]
    unsafe fn sixteen(at: *const Self) -> __m512;

    /// The eight values at `at`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn eight(at: *const Self) -> __m256;
}

/// `values` as f16, or `None` where any of them is not exactly an f16 (a node's scales at its
/// first run: eight at a time with F16C, as a load takes most of a million values).
pub(crate) fn narrow_exactly(values: &[f32]) -> Option<Vec<half::f16>> {
    let mut narrow = Vec::with_capacity(values.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx2_fma_f16c() {
        // SAFETY: F16C and AVX are there.
        done = unsafe { narrow_exactly_f16c(values, &mut narrow) }?;
    }
    for &value in &values[done..] {
        let half = half::f16::from_f32(value);
        (half.to_f32().to_bits() == value.to_bits()).then_some(())?;
        narrow.push(half);
    }
    Some(narrow)
}

/// `narrow_exactly` for whole groups of eight: how many it narrowed into `narrow`, or `None`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn narrow_exactly_f16c(values: &[f32], narrow: &mut Vec<half::f16>) -> Option<usize> {
    let whole = values.len() / LANES * LANES;
    for eight in values[..whole].chunks_exact(LANES) {
        // SAFETY: eight values in, eight halves out, within the vector's capacity (`values.len()`).
        unsafe {
            let wide = _mm256_loadu_ps(eight.as_ptr());
            let halves = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(wide);
            let back = _mm256_castps_si256(_mm256_cvtph_ps(halves));
            let same = _mm256_cmpeq_epi32(back, _mm256_castps_si256(wide));
            (_mm256_movemask_epi8(same) == -1).then_some(())?;
            _mm_storeu_si128(narrow.as_mut_ptr().add(narrow.len()).cast(), halves);
            narrow.set_len(narrow.len() + LANES);
        }
    }
    Some(whole)
}

impl Scale for f32 {
    const ZERO: f32 = 0.0;

    fn value(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sixteen(at: *const f32) -> __m512 {
        // SAFETY: the caller's bounds; AVX-512 F.
        unsafe { _mm512_loadu_ps(at) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn eight(at: *const f32) -> __m256 {
        // SAFETY: the caller's bounds.
        unsafe { _mm256_loadu_ps(at) }
    }
}

impl Scale for half::f16 {
    const ZERO: half::f16 = half::f16::ZERO;

    fn value(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sixteen(at: *const half::f16) -> __m512 {
        // SAFETY: the caller's bounds; AVX-512 F.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(at.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    unsafe fn eight(at: *const half::f16) -> __m256 {
        // SAFETY: the caller's bounds; F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at.cast())) }
    }
}

/// Rows of activations quantized per block of 32, in order: `values[(r * blocks + b) * 32..]`
/// the int8 values of block `b` of row `r`, `value_sums[r * blocks + b]` their sum,
/// `scales[r * blocks + b]` the block's scale, `sums[r * blocks + b]` the exact sum of its
/// inputs (for the offsets term).
struct Activations {
    blocks: usize,
    values: Vec<i8>,
    value_sums: Vec<i32>,
    scales: Vec<f32>,
    sums: Vec<f32>,
}

impl Activations {
    const fn new() -> Activations {
        Activations { blocks: 0, values: Vec::new(), value_sums: Vec::new(), scales: Vec::new(), sums: Vec::new() }
    }
}

/// Runs `count` independent units, possibly on several threads (ONNX Runtime's pool).
pub(crate) type ForEach<'f> = &'f dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// A pointer that units write disjoint parts of.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: every unit writes only its own disjoint elements (see each use).
unsafe impl<T> Sync for Shared<T> {}
unsafe impl<T> Send for Shared<T> {}

impl<T> Shared<T> {
    /// # Safety
    /// `index` is within the buffer.
    unsafe fn at(self, index: usize) -> *mut T {
        unsafe { self.0.add(index) }
    }
}

/// `out` `[rows][outputs]` = `x` `[rows][inputs]` times the weights, transposed.
pub(crate) fn multiply<S: Scale>(
    weights: &Weights<'_, S>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
    for_each: ForEach<'_>,
) {
    multiply_on(Path::detect(), weights, x, rows, out, for_each)
}

fn multiply_on<S: Scale>(
    path: Path,
    weights: &Weights<'_, S>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
    for_each: ForEach<'_>,
) {
    weights.check();
    assert_eq!(x.len(), rows * weights.inputs());
    assert_eq!(out.len(), rows * weights.outputs);
    SCRATCH.with_borrow_mut(|activations| {
        quantize_into(activations, x, rows, weights.blocks, path, for_each);
        let activations = &*activations;
        let width = if rows <= STREAM_ROWS { stream_columns(weights.outputs) } else { UNIT_COLUMNS };
        let column_units = weights.outputs.div_ceil(width);
        let row_units = rows.div_ceil(UNIT_ROWS);
        let output = Shared(out.as_mut_ptr());
        for_each(column_units * row_units, &|unit| {
            let (row_unit, column_unit) = (unit / column_units, unit % column_units);
            let rows = row_unit * UNIT_ROWS..((row_unit + 1) * UNIT_ROWS).min(rows);
            let columns = column_unit * width..((column_unit + 1) * width).min(weights.outputs);
            // SAFETY: this unit alone writes the elements (row, column) of its rows and columns.
            unsafe { multiply_unit(weights, activations, rows, columns, output, path) };
        });
    });
}

/// Outputs per unit of work for one or two rows: an even number of units (two threads share
/// them out evenly) of about `STREAM_COLUMNS` outputs where there are enough, in whole groups
/// of `GROUP`. Each unit reads its weights as one stream, which the prefetchers keep ahead of,
/// except at the start of a unit. Engine bench A/B, runs in turns, 256 tokens decoded (an AMD
/// EPYC with AVX2, 2 cores, 2026-12-03, with the kernel before `Repacked`): against units of
/// 64 outputs, units of at least 256 decoded 5 % faster after a 16-token prompt; 512, 6 %
/// faster than 256 (8 of 10 paired runs) and 5 % faster than 64 after a 512-token prompt (10
/// of 12); 1,024 the same as 512; one unit per thread, 3 % slower than 512. With more rows the
/// tiles read each weight block once per tile of up to eight rows, so the work is bound by
/// arithmetic rather than memory, and units of 64 (re-read from the L1 and L2 caches, shared
/// out more evenly) are used.
fn stream_columns(outputs: usize) -> usize {
    let units = (outputs / STREAM_COLUMNS).max(2);
    outputs.div_ceil(units + units % 2).next_multiple_of(GROUP)
}
/// `out` `[rows][inputs]` = `silu(gate) · up` of `gate_up` `[rows][2 · inputs]` (each row's
/// gate, then its up; `silu(g) = g · sigmoid(g)`): the input of a SwiGLU block's down
/// projection. Units of `UNIT_ROWS` rows (a prefill chunk's run on every thread).
pub(crate) fn swiglu(gate_up: &[f32], inputs: usize, out: &mut Vec<f32>, for_each: ForEach<'_>) {
    let rows = gate_up.len() / (2 * inputs);
    zeroed(out, rows * inputs, 0.0);
    let output = Shared(out.as_mut_ptr());
    let path = Path::detect();
    for_each(rows.div_ceil(UNIT_ROWS), &|unit| {
        for row in unit * UNIT_ROWS..((unit + 1) * UNIT_ROWS).min(rows) {
            let (gate, up) = gate_up[row * 2 * inputs..][..2 * inputs].split_at(inputs);
            // SAFETY: this unit alone writes its rows of `out`, which holds `rows` rows.
            let out = unsafe { std::slice::from_raw_parts_mut(output.at(row * inputs), inputs) };
            gated_on(path, gate, up, out);
        }
    });
}

/// `out[i] = silu(gate[i]) · up[i]`, the loop compiled for this machine's widest registers.
/// Each lane does the same operations in the same order (Rust never fuses a multiply and an
/// add on its own), so every path gives the same bits
/// (`tests::every_gated_path_gives_the_same_bits`).
/// Compiled for the baseline CPU, the loop ran 4 lanes at best. With this and each unit's
/// results zeroed once (`multiply_unit`), the engine bench (`cargo bench --bench engine --
/// --runs 1 --scaling '' --speculation`, the builds in turns, three pairs, AMD EPYC,
/// 2026-12-05) prefilled 512 tokens at 1,285–1,690 against 1,156–1,578 tok/s and decoded at
/// 158–195 against 135–190.
fn gated_on(path: Path, gate: &[f32], up: &[f32], out: &mut [f32]) {
    match path {
        // SAFETY: Path::Vnni512 is detected only with AVX-512 F (and AVX2).
        #[cfg(target_arch = "x86_64")]
        Path::Vnni512 => unsafe { gated_avx512(gate, up, out) },
        // SAFETY: Path::Avx2 is detected only with AVX2.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { gated_avx2(gate, up, out) },
        _ => gated(gate, up, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
fn gated_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    gated(gate, up, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gated_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    gated(gate, up, out)
}

#[inline(always)]
fn gated(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((y, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *y = g * sigmoid(g) * u;
    }
}

/// `1 / (1 + e^-x)`, from `e^-|x|` so that the exponential never overflows.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = crate::engine::kernels::exp(-x.abs());
    if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) }
}

/// How this machine computes (always the same one on a machine; every path gives the same
/// bits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// AVX-512 VNNI on 512-bit registers: sixteen outputs per register.
    Vnni512,
    /// AVX2 and FMA: eight outputs per register.
    Avx2,
    Portable,
}

impl Path {
    /// This machine's path, detected once (every call of a decode step asks).
    fn detect() -> Path {
        static PATH: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
        *PATH.get_or_init(Path::detect_now)
    }

    fn detect_now() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if avx2_fma_f16c() {
                let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni");
                return if avx512 { Path::Vnni512 } else { Path::Avx2 };
            }
        }
        Path::Portable
    }
}

/// Whether the CPU has what the fast paths need (the graph is rewritten only then: the
/// portable path is the tests' mirror, far slower than ONNX Runtime's kernel).
pub(crate) fn avx2_fma_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    /// The activations of the thread's last call, kept so that no call allocates (a prefill
    /// chunk's take about 2 KiB per row at most).
    static SCRATCH: std::cell::RefCell<Activations> = const { std::cell::RefCell::new(Activations::new()) };
}

/// Sets `vector` to `len` zeros, keeping its memory.
fn zeroed<T: Clone>(vector: &mut Vec<T>, len: usize, zero: T) {
    vector.clear();
    vector.resize(len, zero);
}

fn quantize_into(
    activations: &mut Activations,
    x: &[f32],
    rows: usize,
    blocks: usize,
    path: Path,
    for_each: ForEach<'_>,
) {
    activations.blocks = blocks;
    zeroed(&mut activations.values, rows * blocks * BLOCK, 0);
    zeroed(&mut activations.value_sums, rows * blocks, 0);
    zeroed(&mut activations.scales, rows * blocks, 0.0);
    zeroed(&mut activations.sums, rows * blocks, 0.0);
    let values = Shared(activations.values.as_mut_ptr());
    let value_sums = Shared(activations.value_sums.as_mut_ptr());
    let scales = Shared(activations.scales.as_mut_ptr());
    let sums = Shared(activations.sums.as_mut_ptr());
    let units = rows.div_ceil(UNIT_ROWS);
    let unit = |unit: usize| {
        for at in unit * UNIT_ROWS * blocks..((unit + 1) * UNIT_ROWS).min(rows) * blocks {
            let input: &[f32; BLOCK] = x[at * BLOCK..][..BLOCK].try_into().expect("a block");
            // SAFETY: the row's parts of each array are written by this unit alone.
            unsafe {
                let block = &mut *values.at(at * BLOCK).cast::<[i8; BLOCK]>();
                let quantized = quantize_block_on(path, input, block);
                (*scales.at(at), *value_sums.at(at), *sums.at(at)) = quantized;
            }
        }
    };
    if units > 1 {
        for_each(units, &unit);
    } else {
        (0..units).for_each(unit);
    }
}

/// `x`'s rows quantized (tests).
#[cfg(test)]
fn quantize(x: &[f32], rows: usize, blocks: usize, path: Path) -> Activations {
    let mut activations = Activations::new();
    quantize_into(&mut activations, x, rows, blocks, path, &|count, unit| (0..count).for_each(unit));
    activations
}

fn quantize_block_on(path: Path, x: &[f32; BLOCK], values: &mut [i8; BLOCK]) -> (f32, i32, f32) {
    #[cfg(target_arch = "x86_64")]
    if path != Path::Portable {
        // SAFETY: the fast paths are detected only on CPUs with AVX2 and FMA.
        return unsafe { quantize_block_avx2(x, values) };
    }
    let _ = path;
    quantize_block(x, values)
}

/// `quantize_block` in registers, with its bits: the largest magnitude (a maximum, in any
/// order), the rounding and the integer sum are exact; the float sum keeps its order. A
/// decode step quantizes about 3,000 blocks on the calling thread while the pool waits, so this
/// is on every step's critical path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(x: &[f32; BLOCK], out: &mut [i8; BLOCK]) -> (f32, i32, f32) {
    // SAFETY: `x` holds 32 floats and `out` 32 bytes.
    let (scale, value_sum) = unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(LANES * i)));
        // The running maximum goes second: `max_ps` then passes over a NaN, as `f32::max` does.
        let mut largest = _mm256_setzero_ps();
        for &v in &v {
            largest = _mm256_max_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0), v), largest);
        }
        let largest = _mm_max_ps(_mm256_castps256_ps128(largest), _mm256_extractf128_ps::<1>(largest));
        let largest = _mm_max_ps(largest, _mm_movehl_ps(largest, largest));
        let largest = _mm_cvtss_f32(_mm_max_ss(largest, _mm_movehdup_ps(largest)));
        let scale = largest / 127.0;
        let inverse = _mm256_set1_ps(if largest > 0.0 { 127.0 / largest } else { 0.0 });
        let values: [__m256i; 4] = std::array::from_fn(|i| {
            let rounded =
                _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(v[i], inverse));
            // A NaN (an infinite input times 0) becomes 0, as `as i8` makes it.
            let rounded = _mm256_and_ps(rounded, _mm256_cmp_ps::<_CMP_ORD_Q>(rounded, rounded));
            let clamped = _mm256_max_ps(_mm256_min_ps(rounded, _mm256_set1_ps(127.0)), _mm256_set1_ps(-127.0));
            _mm256_cvtps_epi32(clamped)
        });
        // Packing works per 128-bit lane: groups of four elements come out as 0, 2, 4, 6, 1, 3,
        // 5, 7; put them back in order.
        let bytes =
            _mm256_packs_epi16(_mm256_packs_epi32(values[0], values[1]), _mm256_packs_epi32(values[2], values[3]));
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes);
        let total = _mm256_add_epi32(_mm256_add_epi32(values[0], values[1]), _mm256_add_epi32(values[2], values[3]));
        let total = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256::<1>(total));
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b01_00_11_10>(total));
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b10_11_00_01>(total));
        (scale, _mm_cvtsi128_si32(total))
    };
    let sum = x.iter().fold(0.0f32, |sum, &v| sum + v);
    (scale, value_sum, sum)
}

/// One block of inputs to int8 values, in order; returns the scale, the values' sum and the
/// inputs' exact sum. Plain IEEE arithmetic in a fixed order: the same bits however it is
/// compiled.
#[inline(always)]
fn quantize_block(x: &[f32; BLOCK], values: &mut [i8; BLOCK]) -> (f32, i32, f32) {
    let largest = x.iter().fold(0.0f32, |largest, v| largest.max(v.abs()));
    let scale = largest / 127.0;
    let inverse = if largest > 0.0 { 127.0 / largest } else { 0.0 };
    for (value, &v) in values.iter_mut().zip(x) {
        *value = (v * inverse).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    let value_sum = values.iter().map(|&v| i32::from(v)).sum();
    let sum = x.iter().fold(0.0f32, |sum, &v| sum + v);
    (scale, value_sum, sum)
}

/// # Safety
/// No other unit writes the elements `(rows, columns)` of `output` meanwhile, and `columns`
/// starts at a whole group (`GROUP`).
unsafe fn multiply_unit<S: Scale>(
    weights: &Weights<'_, S>,
    activations: &Activations,
    rows: Range<usize>,
    columns: Range<usize>,
    output: Shared<f32>,
    path: Path,
) {
    let outputs = weights.outputs;
    debug_assert!(columns.start.is_multiple_of(GROUP));
    let groups = columns.start / GROUP..columns.end.div_ceil(GROUP);
    // Zeroed once per unit, not once per tile (a decode step has thousands of tiles of one
    // group): each tile writes every result it copies out.
    let mut results = [[[0.0f32; GROUP]; TILE_ROWS]; TILE_GROUPS];
    let mut row = rows.start;
    while row < rows.end {
        let tile = tile_rows(path, rows.end - row);
        let mut group = groups.start;
        while group < groups.end {
            let width = tile_groups(path, tile).min(groups.end - group);
            dot_tile(path, weights, activations, (row, tile), (group, width), &mut results);
            for (g, results) in results.iter().enumerate().take(width) {
                let first = (group + g) * GROUP;
                let count = GROUP.min(outputs - first);
                for (r, result) in results.iter().enumerate().take(tile) {
                    // SAFETY: outputs `first..first + count` of row `row + r` lie in this unit's
                    // rows and columns (its columns end at a whole group or at `outputs`).
                    unsafe { output.at((row + r) * outputs + first).copy_from_nonoverlapping(result.as_ptr(), count) };
                }
            }
            group += width;
        }
        row += tile;
    }
}

/// Rows of the next register tile, of `left`: 8, 4, 3, 2 or 1 (at most 4 on the AVX2 path,
/// whose 16 registers would not hold eight rows' accumulators beside a block's weights). Three
/// rows in one tile read the weights once: from memory, a gate and up projection took
/// 0.097–0.100 ms as tiles of two and one rows against 0.077 ms for four rows.
fn tile_rows(path: Path, left: usize) -> usize {
    let most = if path == Path::Vnni512 { TILE_ROWS } else { 4 };
    [8, 4, 3, 2, 1].into_iter().find(|&rows| rows <= left.min(most)).expect("a row is left")
}

/// Groups of outputs per register tile of `rows` rows: one, so that a tile reads its weights
/// as one stream, except on the AVX2 path with more than two rows, whose tiles of four rows ran
/// faster with two (`timing::time_multiply`, eight rows of gate and up: 0.18 ms against 0.36
/// with one group, AMD EPYC, 2026-12-05). Decode steps and drafts stream their weights from
/// memory, where several streams at once were slower (`timing::time_scales_from_memory`, a
/// gate and up projection, one thread, 2026-12-05): a lone row took 0.050–0.060 ms with one
/// group against 0.09–0.11 with four, two rows 0.061–0.071 against 0.089–0.093 with two; and
/// the engine decoded at 168–182 tok/s against 128–151 (`cargo bench --bench engine -- --runs 3
/// --scaling 256 --speculation`, the builds in turns).
fn tile_groups(path: Path, rows: usize) -> usize {
    if path == Path::Avx2 && rows > 2 { 2 } else { 1 }
}

/// The dot products of rows `tile.0..tile.0 + tile.1` with the outputs of groups
/// `groups.0..groups.0 + groups.1` into `results[group][row][lane]`.
fn dot_tile<S: Scale>(
    path: Path,
    weights: &Weights<'_, S>,
    activations: &Activations,
    tile: (usize, usize),
    groups: (usize, usize),
    results: &mut [[[f32; GROUP]; TILE_ROWS]; TILE_GROUPS],
) {
    macro_rules! dispatch {
        ($function:ident, $format:ty) => {
            match (tile.1, groups.1) {
                (4, 2) => $function::<$format, S, 4, 2>((weights, activations), (tile.0, groups.0), results),
                (rows, count) => (0..count).for_each(|g| {
                    let results = &mut results[g..];
                    match rows {
                        1 => $function::<$format, S, 1, 1>((weights, activations), (tile.0, groups.0 + g), results),
                        2 => $function::<$format, S, 2, 1>((weights, activations), (tile.0, groups.0 + g), results),
                        3 => $function::<$format, S, 3, 1>((weights, activations), (tile.0, groups.0 + g), results),
                        4 => $function::<$format, S, 4, 1>((weights, activations), (tile.0, groups.0 + g), results),
                        8 => $function::<$format, S, 8, 1>((weights, activations), (tile.0, groups.0 + g), results),
                        other => unreachable!("no tile of {other} rows (`tile_rows`)"),
                    }
                }),
            }
        };
        ($function:ident) => {
            match weights.bits {
                Bits::Four => dispatch!($function, Nibbles),
                Bits::Eight => dispatch!($function, Bytes),
            }
        };
    }
    debug_assert!(
        groups.0 + groups.1 <= weights.groups() && (tile.0 + tile.1) * weights.blocks <= activations.scales.len()
    );
    match path {
        // SAFETY: Path::Vnni512 is detected only with AVX-512 VNNI, BW, VL and F, AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Path::Vnni512 => unsafe { dispatch!(dot_vnni512) },
        // SAFETY: Path::Avx2 is detected only with AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { dispatch!(dot_avx2) },
        _ => {
            for (g, results) in results.iter_mut().enumerate().take(groups.1) {
                for (r, results) in results.iter_mut().enumerate().take(tile.1) {
                    for (lane, result) in results.iter_mut().enumerate() {
                        let output = (groups.0 + g) * GROUP + lane;
                        if output < weights.outputs {
                            *result = dot_portable(weights, activations, tile.0 + r, output);
                        }
                    }
                }
            }
        }
    }
}

/// One output of one row in plain Rust: the SIMD paths' arithmetic, operation for operation
/// (`mul_add` is the fused multiply-add they use; integer sums are exact in any order).
fn dot_portable<S: Scale>(weights: &Weights<'_, S>, activations: &Activations, row: usize, output: usize) -> f32 {
    let mut total = 0.0f32;
    for block in 0..weights.blocks {
        let at = row * weights.blocks + block;
        let values = &activations.values[at * BLOCK..][..BLOCK];
        let mut sum = -(activations.value_sums[at] << weights.bits.zero_point_shift());
        for (element, &value) in values.iter().enumerate() {
            sum += i32::from(weights.stored(output, block, element).0) * i32::from(value);
        }
        let factor = weights.stored(output, block, 0).1.value() * activations.scales[at];
        total = (sum as f32).mul_add(factor, total);
        if let Some(offset) = weights.offset(output, block) {
            total = activations.sums[at].mul_add(offset.value(), total);
        }
    }
    total
}

/// A weight format's part of the register tiles: how a group's repacked block unpacks into the
/// weights of each quad of inputs, and its AVX2 integer dot product.
///
/// These helpers, and `Scale`'s loads, carry the target features their intrinsics need, and
/// inline into the tiles, which enable a superset. Marked `inline(always)` without them, their
/// intrinsics could be inlined only after the helper itself, which LLVM's order did not always
/// give: a new function elsewhere in this file once left `_mm512_loadu_si512` and
/// `_mm512_and_si512` as calls in every 4-bit tile, 18× slower (`timing::time_multiply`, one
/// row of 3,072 × 576: 0.38 ms against 0.021).
#[cfg(target_arch = "x86_64")]
trait Format {
    const BITS: Bits;
    /// Bytes of a group's repacked block.
    const GROUP_BYTES: usize = Self::BITS.block_bytes() * GROUP;

    /// The block at `at`: for each quad of inputs, its four weights in each output's lane (for
    /// 4-bit weights, those of the last four quads times 16: see `Nibbles::dot_512`).
    unsafe fn unpack_512(at: *const u8) -> [__m512i; BLOCK / QUAD];

    /// `zero_point` + each lane's dot product of `unpack_512`'s weights and the block's values
    /// at `x` (each quad broadcast), with AVX-512 VNNI: two chains of four `dpbusd`, for their
    /// latency; the integer sums are exact.
    unsafe fn dot_512(zero_point: __m512i, quads: &[__m512i; BLOCK / QUAD], x: *const i32) -> __m512i;

    /// Half `half` (outputs `8 half..+ 8`) of the block at `at`, as `unpack_512`'s.
    unsafe fn unpack_256(at: *const u8, half: usize) -> [__m256i; BLOCK / QUAD];

    /// `zero_point` + each lane's dot product of its weights and the block's values `x`
    /// (each quad broadcast), with AVX2 alone: exactly the `dpbusd` sums.
    unsafe fn dot_avx2(zero_point: __m256i, weights: &[__m256i; BLOCK / QUAD], x: &[__m256i; BLOCK / QUAD]) -> __m256i;
}

/// 4-bit weights (`Bits::Four`).
#[cfg(target_arch = "x86_64")]
struct Nibbles;

/// 8-bit weights (`Bits::Eight`).
#[cfg(target_arch = "x86_64")]
struct Bytes;

#[cfg(target_arch = "x86_64")]
impl Format for Nibbles {
    const BITS: Bits = Bits::Four;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn unpack_512(at: *const u8) -> [__m512i; BLOCK / QUAD] {
        // SAFETY: the caller's bounds (256 bytes); AVX-512 BW.
        unsafe {
            let (low, high) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0xf0u8 as i8));
            std::array::from_fn(|quad| {
                let chunk = _mm512_loadu_si512(at.add(64 * (quad % 4)).cast());
                _mm512_and_si512(chunk, if quad < 4 { low } else { high })
            })
        }
    }

    /// The high nibbles stay in place, as 16 times their weights: their chain's sum is 16 times
    /// the dot product (at most 16 × 15 × 127 × 16 in a lane), shifted back exactly. That
    /// spares a shift per register of weights.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dot_512(zero_point: __m512i, quads: &[__m512i; BLOCK / QUAD], x: *const i32) -> __m512i {
        // SAFETY: the caller's bounds (32 values at `x`); AVX-512 VNNI.
        unsafe {
            let (mut low, mut high) = (zero_point, _mm512_setzero_si512());
            for quad in 0..4 {
                low = _mm512_dpbusd_epi32(low, quads[quad], _mm512_set1_epi32(x.add(quad).read_unaligned()));
                let next = _mm512_set1_epi32(x.add(quad + 4).read_unaligned());
                high = _mm512_dpbusd_epi32(high, quads[quad + 4], next);
            }
            _mm512_add_epi32(low, _mm512_srai_epi32(high, 4))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_256(at: *const u8, half: usize) -> [__m256i; BLOCK / QUAD] {
        // SAFETY: the caller's bounds (256 bytes); AVX2.
        unsafe {
            let mask = _mm256_set1_epi8(0x0f);
            let chunks: [__m256i; 4] = std::array::from_fn(|k| _mm256_loadu_si256(at.add(64 * k + 32 * half).cast()));
            std::array::from_fn(|quad| {
                let chunk = chunks[quad % 4];
                if quad < 4 {
                    _mm256_and_si256(chunk, mask)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16(chunk, 4), mask)
                }
            })
        }
    }

    /// Each 16-bit lane adds 16 products of a weight (0..=15) and a value (|v| ≤ 127): at most
    /// 30,480, so the eight `maddubs` add up in 16 bits without saturating.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot_avx2(zero_point: __m256i, weights: &[__m256i; BLOCK / QUAD], x: &[__m256i; BLOCK / QUAD]) -> __m256i {
        let mut pairs = _mm256_maddubs_epi16(weights[0], x[0]);
        for quad in 1..BLOCK / QUAD {
            pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(weights[quad], x[quad]));
        }
        _mm256_add_epi32(zero_point, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
}

#[cfg(target_arch = "x86_64")]
impl Format for Bytes {
    const BITS: Bits = Bits::Eight;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn unpack_512(at: *const u8) -> [__m512i; BLOCK / QUAD] {
        // SAFETY: the caller's bounds (512 bytes); AVX-512 F.
        unsafe { std::array::from_fn(|quad| _mm512_loadu_si512(at.add(64 * quad).cast())) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dot_512(zero_point: __m512i, quads: &[__m512i; BLOCK / QUAD], x: *const i32) -> __m512i {
        // SAFETY: the caller's bounds (32 values at `x`); AVX-512 VNNI.
        unsafe {
            let (mut even, mut odd) = (zero_point, _mm512_setzero_si512());
            for quad in (0..BLOCK / QUAD).step_by(2) {
                even = _mm512_dpbusd_epi32(even, quads[quad], _mm512_set1_epi32(x.add(quad).read_unaligned()));
                let next = _mm512_set1_epi32(x.add(quad + 1).read_unaligned());
                odd = _mm512_dpbusd_epi32(odd, quads[quad + 1], next);
            }
            _mm512_add_epi32(even, odd)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_256(at: *const u8, half: usize) -> [__m256i; BLOCK / QUAD] {
        // SAFETY: the caller's bounds (512 bytes); AVX2.
        unsafe { std::array::from_fn(|quad| _mm256_loadu_si256(at.add(64 * quad + 32 * half).cast())) }
    }

    /// `maddubs` multiplies unsigned bytes by signed ones and would saturate on whole stored
    /// bytes (up to 255): the weights go in as `q − 128`, signed, their magnitude on the
    /// unsigned side and their sign moved onto the activations (`|w| · sign(x, w) = w · x`, each
    /// 16-bit pair sum at most 2 × 128 × 127). That sum already holds the zero point, exactly
    /// the `zero_point` + `q · x` of the other paths, so `zero_point` is not read.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot_avx2(
        _zero_point: __m256i,
        weights: &[__m256i; BLOCK / QUAD],
        x: &[__m256i; BLOCK / QUAD],
    ) -> __m256i {
        let (flip, ones) = (_mm256_set1_epi8(i8::MIN), _mm256_set1_epi16(1));
        let mut sum = _mm256_setzero_si256();
        for quad in 0..BLOCK / QUAD {
            let signed = _mm256_xor_si256(weights[quad], flip);
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(signed), _mm256_sign_epi8(x[quad], signed));
            // Two pair sums may not fit 16 bits together: each quad is widened first.
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, ones));
        }
        sum
    }
}

/// Where a register tile's operands start: the repacked weights and scales of `group`'s first
/// block, and the first block of `row`'s values, value sums and scales.
#[cfg(target_arch = "x86_64")]
struct TileStart<S> {
    packed: *const u8,
    scales: *const S,
    /// Null without offsets.
    offsets: *const S,
    values: *const i8,
    value_sums: *const i32,
    row_scales: *const f32,
    sums: *const f32,
}

#[cfg(target_arch = "x86_64")]
impl<S: Scale> TileStart<S> {
    /// # Safety
    /// `row` and `group` are within the activations and the weights.
    #[inline(always)]
    unsafe fn new(weights: &Weights<'_, S>, activations: &Activations, row: usize, group: usize) -> TileStart<S> {
        let (blocks, bytes) = (weights.blocks, weights.bits.block_bytes());
        // SAFETY: the caller's bounds.
        unsafe {
            TileStart {
                packed: weights.packed.as_ptr().add(group * blocks * GROUP * bytes),
                scales: weights.scales.as_ptr().add(group * blocks * GROUP),
                offsets: weights
                    .offsets
                    .map_or(std::ptr::null(), |offsets| offsets.as_ptr().add(group * blocks * GROUP)),
                values: activations.values.as_ptr().add(row * blocks * BLOCK),
                value_sums: activations.value_sums.as_ptr().add(row * blocks),
                row_scales: activations.scales.as_ptr().add(row * blocks),
                sums: activations.sums.as_ptr().add(row * blocks),
            }
        }
    }

    /// The integer zero-point correction, the scale and the exact input sum of `row`'s (from
    /// the tile's first) `block`.
    #[inline(always)]
    unsafe fn row_block<F: Format>(&self, blocks: usize, row: usize, block: usize) -> (i32, f32, f32) {
        // SAFETY: the caller's bounds.
        unsafe {
            let at = row * blocks + block;
            (-(*self.value_sums.add(at) << F::BITS.zero_point_shift()), *self.row_scales.add(at), *self.sums.add(at))
        }
    }

    /// The tile's group `c` (from its first), repacked `block`: where its weights start, and the
    /// index of its sixteen scales and offsets.
    #[inline(always)]
    unsafe fn group_block<F: Format>(&self, blocks: usize, c: usize, block: usize) -> (*const u8, usize) {
        let index = c * blocks + block;
        // SAFETY: the caller's bounds.
        (unsafe { self.packed.add(index * F::GROUP_BYTES) }, index * GROUP)
    }

    /// Asks for the weights `PREFETCH_BYTES` ahead of a group block at `packed`, and their scales.
    #[inline(always)]
    unsafe fn prefetch<F: Format>(packed: *const u8, scales: *const S) {
        // SAFETY: prefetches are hints; the addresses need not be valid.
        unsafe {
            for line in (0..F::GROUP_BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(packed.wrapping_add(PREFETCH_BYTES + line).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(scales.wrapping_add(PREFETCH_BYTES / F::GROUP_BYTES * GROUP).cast());
        }
    }
}

/// `body(0)`, …, `body(N - 1)`, written out: a loop over a tile's rows compiled as a loop
/// kept its accumulators in memory.
#[inline(always)]
fn unrolled<const N: usize>(mut body: impl FnMut(usize)) {
    macro_rules! each {
        ($($index:literal)*) => { $(if $index < N { body($index) })* };
    }
    const { assert!(N <= TILE_ROWS) };
    each!(0 1 2 3 4 5 6 7);
}

/// The register tile of the 512-bit path: `R` rows × `C` groups of sixteen outputs, one
/// accumulator each; each group's block is unpacked once for the `R` rows, and each quad of a
/// row's values is broadcast to every lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed by group and row
unsafe fn dot_vnni512<F: Format, S: Scale, const R: usize, const C: usize>(
    (weights, activations): (&Weights<'_, S>, &Activations),
    (row, group): (usize, usize),
    results: &mut [[[f32; GROUP]; TILE_ROWS]],
) {
    let blocks = weights.blocks;
    let mut acc = [[_mm512_setzero_ps(); R]; C];
    // SAFETY (whole body): the caller's tile lies within the weights and activations
    // (`multiply` checked their lengths), so every offset below is in bounds.
    unsafe {
        let start = TileStart::new(weights, activations, row, group);
        for block in 0..blocks {
            let columns: [_; C] = std::array::from_fn(|c| {
                let (packed, at) = start.group_block::<F>(blocks, c, block);
                let scales = start.scales.add(at);
                TileStart::<S>::prefetch::<F>(packed, scales);
                let offsets = (!start.offsets.is_null()).then(|| S::sixteen(start.offsets.add(at)));
                (F::unpack_512(packed), S::sixteen(scales), offsets)
            });
            unrolled::<R>(|r| {
                let (zero_point, row_scale, input_sum) = start.row_block::<F>(blocks, r, block);
                let (zero_point, row_scale) = (_mm512_set1_epi32(zero_point), _mm512_set1_ps(row_scale));
                let x = start.values.add((r * blocks + block) * BLOCK).cast::<i32>();
                for (c, (quads, scale, offsets)) in columns.iter().enumerate() {
                    let sum = _mm512_cvtepi32_ps(F::dot_512(zero_point, quads, x));
                    acc[c][r] = _mm512_fmadd_ps(sum, _mm512_mul_ps(*scale, row_scale), acc[c][r]);
                    if let Some(offsets) = offsets {
                        acc[c][r] = _mm512_fmadd_ps(_mm512_set1_ps(input_sum), *offsets, acc[c][r]);
                    }
                }
            });
        }
        for c in 0..C {
            for r in 0..R {
                _mm512_storeu_ps(results[c][r].as_mut_ptr(), acc[c][r]);
            }
        }
    }
}

/// The register tile of the AVX2 path: `dot_vnni512`'s, each group in two halves of eight
/// outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed by group and row
unsafe fn dot_avx2<F: Format, S: Scale, const R: usize, const C: usize>(
    (weights, activations): (&Weights<'_, S>, &Activations),
    (row, group): (usize, usize),
    results: &mut [[[f32; GROUP]; TILE_ROWS]],
) {
    let blocks = weights.blocks;
    let mut acc = [[[_mm256_setzero_ps(); 2]; R]; C];
    // SAFETY (whole body): as in `dot_vnni512`.
    unsafe {
        let start = TileStart::new(weights, activations, row, group);
        for block in 0..blocks {
            let rows: [_; R] = std::array::from_fn(|r| {
                let (zero_point, row_scale, input_sum) = start.row_block::<F>(blocks, r, block);
                let x = start.values.add((r * blocks + block) * BLOCK).cast::<i32>();
                let quads = std::array::from_fn(|quad| _mm256_set1_epi32(x.add(quad).read_unaligned()));
                (_mm256_set1_epi32(zero_point), _mm256_set1_ps(row_scale), _mm256_set1_ps(input_sum), quads)
            });
            for c in 0..C {
                let (packed, at) = start.group_block::<F>(blocks, c, block);
                let scales = start.scales.add(at);
                TileStart::<S>::prefetch::<F>(packed, scales);
                for half in 0..2 {
                    let (quads, scale) = (F::unpack_256(packed, half), S::eight(scales.add(half * LANES)));
                    let offsets = (!start.offsets.is_null()).then(|| S::eight(start.offsets.add(at + half * LANES)));
                    for (r, (zero_point, row_scale, input_sum, x)) in rows.iter().enumerate() {
                        let sum = _mm256_cvtepi32_ps(F::dot_avx2(*zero_point, &quads, x));
                        let mut total = _mm256_fmadd_ps(sum, _mm256_mul_ps(scale, *row_scale), acc[c][r][half]);
                        if let Some(offsets) = offsets {
                            total = _mm256_fmadd_ps(*input_sum, offsets, total);
                        }
                        acc[c][r][half] = total;
                    }
                }
            }
        }
        for c in 0..C {
            for r in 0..R {
                for half in 0..2 {
                    _mm256_storeu_ps(results[c][r][half * LANES..].as_mut_ptr(), acc[c][r][half]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift).
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Values in -scale..scale.
        fn floats(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| ((self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale).collect()
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| (self.next() >> 32) as u8).collect()
        }
    }

    const BOTH: [Bits; 2] = [Bits::Four, Bits::Eight];

    /// A node's weights as MatMulNBits stores them, and repacked.
    struct Layer {
        bits: Bits,
        outputs: usize,
        blocks: usize,
        packed: Vec<u8>,
        scales: Vec<f32>,
        offsets: Vec<f32>,
        repacked: Repacked<f32>,
    }

    impl Layer {
        /// 4-bit weights.
        fn new(outputs: usize, inputs: usize, seed: u64) -> Layer {
            Layer::with_bits(Bits::Four, outputs, inputs, seed)
        }

        fn with_bits(bits: Bits, outputs: usize, inputs: usize, seed: u64) -> Layer {
            let blocks = inputs / BLOCK;
            let mut noise = Noise(seed);
            let packed = noise.bytes(outputs * blocks * bits.block_bytes());
            let scales = noise.floats(outputs * blocks, 0.02);
            let offsets = noise.floats(blocks * outputs, 0.05);
            Layer::from_parts(bits, outputs, packed, scales, offsets)
        }

        fn from_parts(bits: Bits, outputs: usize, packed: Vec<u8>, scales: Vec<f32>, offsets: Vec<f32>) -> Layer {
            let blocks = scales.len() / outputs;
            let repacked = Repacked::new(bits, (outputs, blocks), (&packed, &scales, Some(&offsets)), &sequential);
            Layer { bits, outputs, blocks, packed, scales, offsets, repacked }
        }

        fn weights(&self) -> Weights<'_> {
            self.repacked.weights()
        }

        /// The dequantized weight (output, input), exactly as f64.
        fn weight(&self, output: usize, input: usize) -> f64 {
            let (block, i, bytes) = (input / BLOCK, input % BLOCK, self.bits.block_bytes());
            let stored = match self.bits {
                Bits::Four => {
                    let byte = self.packed[(output * self.blocks + block) * bytes + i / 2];
                    f64::from(if i % 2 == 0 { byte & 15 } else { byte >> 4 }) - 8.0
                }
                Bits::Eight => f64::from(self.packed[(output * self.blocks + block) * bytes + i]) - 128.0,
            };
            stored * f64::from(self.scales[output * self.blocks + block])
                + f64::from(self.offsets[block * self.outputs + output])
        }
    }

    /// The SIMD paths this machine can run: AVX2, and the VNNI one where AVX-512 has it.
    fn simd_paths() -> Vec<Path> {
        [(Path::Avx2, avx2_fma_f16c()), (Path::Vnni512, Path::detect() == Path::Vnni512)]
            .into_iter()
            .filter_map(|(path, runs)| runs.then_some(path))
            .collect()
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

    fn run(layer: &Layer, x: &[f32], rows: usize, for_each: ForEach<'_>) -> Vec<f32> {
        let mut out = vec![f32::NAN; rows * layer.outputs];
        multiply(&layer.weights(), x, rows, &mut out, for_each);
        out
    }

    /// Against the f64 product of the dequantized weights and the exact inputs. The kernel
    /// rounds each input to its block's int8 grid, off by at most half a step
    /// (`max|x| / 254` in the block), so output n may be off by at most
    /// `Σ_block step/2 · Σ_i |w_n,i − offset|` (the offsets term uses the exact sums), plus f32
    /// rounding of the sums (a relative 1e-5 of `Σ |w·x|` is far above it).
    #[test]
    fn matches_the_dequantized_weights_within_the_int8_rounding() {
        let shapes = [(8, 32, 1, 1), (70, 96, 5, 2), (576, 1536, 3, 3), (130, 576, 9, 4)];
        for (bits, (outputs, inputs, rows, seed)) in BOTH.into_iter().flat_map(|bits| shapes.map(|s| (bits, s))) {
            let layer = Layer::with_bits(bits, outputs, inputs, seed);
            let x = Noise(seed + 100).floats(rows * inputs, 3.0);
            let out = run(&layer, &x, rows, &sequential);
            for row in 0..rows {
                let x = &x[row * inputs..][..inputs];
                for n in 0..outputs {
                    let mut exact = 0.0f64;
                    let (mut bound, mut magnitude) = (0.0f64, 0.0f64);
                    for block in 0..inputs / BLOCK {
                        let span = block * BLOCK..(block + 1) * BLOCK;
                        let largest = x[span.clone()].iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        let offset = f64::from(layer.offsets[block * outputs + n]);
                        let mut weights = 0.0;
                        for i in span {
                            let w = layer.weight(n, i);
                            exact += w * f64::from(x[i]);
                            magnitude += (w * f64::from(x[i])).abs();
                            weights += (w - offset).abs();
                        }
                        bound += f64::from(largest) / 254.0 * weights;
                    }
                    let got = f64::from(out[row * outputs + n]);
                    let tolerance = bound * 1.001 + 1e-5 * magnitude;
                    assert!(
                        (got - exact).abs() <= tolerance,
                        "{bits:?}: row {row} output {n}: {got} vs {exact} (±{tolerance})"
                    );
                }
            }
        }
    }

    /// A row gives the same bits alone (decode), in a draft, in a prefill chunk, however the
    /// units are split across threads, and on every path this machine has (VNNI, AVX2 and the
    /// plain-Rust mirror).
    #[test]
    fn a_row_does_not_depend_on_the_rows_run_with_it() {
        let (outputs, inputs, total) = (200, 576, 150);
        for bits in BOTH {
            let layer = Layer::with_bits(bits, outputs, inputs, 9);
            let x = Noise(10).floats(total * inputs, 2.0);
            let whole = run(&layer, &x, total, &threaded);
            for (first, rows) in [(0, 1), (7, 1), (100, 2), (40, 3), (60, 9), (120, 17), (1, 80)] {
                let part = run(&layer, &x[first * inputs..(first + rows) * inputs], rows, &sequential);
                let expected = &whole[first * outputs..(first + rows) * outputs];
                assert_eq!(part[..], *expected, "{bits:?}: rows {first}.. in {rows}");
            }
            let weights = layer.weights();
            let activations = quantize(&x, total, weights.blocks, Path::Portable);
            for row in [0, 5, 77, 149] {
                for n in [0, 1, 63, 64, 199] {
                    let expected = dot_portable(&weights, &activations, row, n);
                    let path = Path::detect();
                    assert_eq!(whole[row * outputs + n], expected, "{bits:?}: row {row} output {n} on {path:?}");
                }
            }
        }
    }

    /// One or two rows' units cover every output once, in an even number of non-empty units of
    /// whole groups of outputs, of about `STREAM_COLUMNS` where a node has enough outputs.
    #[test]
    fn stream_units_are_even_and_cover_every_output() {
        for outputs in [1, 3, 8, 200, 576, 960, 1536, 3072, 49152] {
            let width = stream_columns(outputs);
            let units = outputs.div_ceil(width);
            assert!(width.is_multiple_of(GROUP), "{outputs}: width {width}");
            assert!((units - 1) * width < outputs, "{outputs}: an empty unit");
            assert!(units.is_multiple_of(2) || units == 1, "{outputs}: {units} units");
            if outputs >= 2 * STREAM_COLUMNS {
                assert!(width <= STREAM_COLUMNS * 2 && width * 2 >= STREAM_COLUMNS, "{outputs}: width {width}");
            }
        }
        assert_eq!([576, 960, 3072, 49152].map(stream_columns), [288, 480, 512, 512]);
    }

    /// Repacking keeps every stored weight and scale, in every lane of whole and partial
    /// groups.
    #[test]
    fn repacking_keeps_every_weight_and_scale() {
        for (bits, outputs) in [(Bits::Four, 37), (Bits::Eight, 21), (Bits::Four, 16)] {
            let layer = Layer::with_bits(bits, outputs, 3 * BLOCK, 31);
            let weights = layer.weights();
            for (output, block, element) in
                (0..outputs).flat_map(|o| (0..3).flat_map(move |b| (0..BLOCK).map(move |e| (o, b, e))))
            {
                let bytes = bits.block_bytes();
                let source = &layer.packed[(output * 3 + block) * bytes..][..bytes];
                let expected = (bits.weight(source, element), layer.scales[output * 3 + block]);
                assert_eq!(weights.stored(output, block, element), expected, "{bits:?} {output} {block} {element}");
                assert_eq!(weights.offset(output, block), Some(layer.offsets[block * outputs + output]));
            }
        }
    }

    /// Each SIMD path this machine has gives the bits of the plain-Rust mirror, for both widths
    /// of weights, whole and partial groups of outputs, every tile shape (1 to 9 rows and a
    /// prefill chunk's), and the largest sums there are (every weight and value at its
    /// extreme: no integer sum may saturate).
    #[test]
    fn every_path_gives_the_bits_of_the_portable_mirror() {
        let paths = simd_paths();
        if paths.is_empty() {
            return;
        }
        let cases = [(1, 45, 20), (3, 16, 21), (18, 100, 22), (48, 12, 23), (6, 70, 24), (5, 40, 0)];
        for (bits, (blocks, outputs, seed)) in BOTH.into_iter().flat_map(|bits| cases.map(|case| (bits, case))) {
            let mut layer = Layer::with_bits(bits, outputs, blocks * BLOCK, seed);
            let rows = if seed == 0 { 9 } else { 70 };
            let mut x = Noise(seed + 50).floats(rows * blocks * BLOCK, 2.0);
            if seed == 0 {
                // Extremes: the largest stored weights against ±127, and the smallest.
                let half = layer.packed.len() / 2;
                layer.packed[..half].fill(0xff);
                layer.packed[half..].fill(0);
                layer = Layer::from_parts(bits, outputs, layer.packed, layer.scales, layer.offsets);
                x.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 64 < 32 { 2.0 } else { -2.0 });
            }
            let all = [1, 2, 3, 4, 5, 9, 70];
            for (&path, rows) in
                paths.iter().flat_map(|path| all.iter().filter(|&&r| r <= rows).map(move |&r| (path, r)))
            {
                let x = &x[..rows * blocks * BLOCK];
                let (mut got, mut expected) = (vec![0.0; rows * outputs], vec![0.0; rows * outputs]);
                multiply_on(path, &layer.weights(), x, rows, &mut got, &sequential);
                multiply_on(Path::Portable, &layer.weights(), x, rows, &mut expected, &sequential);
                let bits_of = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits_of(&got),
                    bits_of(&expected),
                    "{bits:?} on {path:?}, {blocks} blocks, {outputs} outputs, {rows} rows"
                );
            }
        }
    }

    /// Scales and offsets stored as f16 give the bits of the same values stored as f32, on
    /// every path this machine has and the portable one, for one row (a decode step), a few
    /// and a prefill tile's, block counts that fill the last step and that do not, both widths
    /// of weights, and every output width of the offsets term.
    #[test]
    fn f16_scales_and_offsets_give_the_bits_of_their_f32_values() {
        let paths: Vec<Path> = std::iter::once(Path::Portable).chain(simd_paths()).collect();
        let to_f16 = |values: &[f32]| values.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>();
        for (bits, (outputs, blocks, seed)) in
            BOTH.into_iter().flat_map(|bits| [(12, 1, 60), (45, 3, 61), (100, 18, 62), (37, 5, 63)].map(|c| (bits, c)))
        {
            let mut layer = Layer::with_bits(bits, outputs, blocks * BLOCK, seed);
            let (scales, offsets) = (to_f16(&layer.scales), to_f16(&layer.offsets));
            layer.scales = scales.iter().map(|v| v.to_f32()).collect();
            layer.offsets = offsets.iter().map(|v| v.to_f32()).collect();
            layer = Layer::from_parts(bits, outputs, layer.packed, layer.scales, layer.offsets);
            let narrow = Repacked::new(bits, (outputs, blocks), (&layer.packed, &scales, Some(&offsets)), &sequential);
            let narrow = narrow.weights();
            for (&path, rows) in paths.iter().flat_map(|path| [1, 2, 5, 70].map(|rows| (path, rows))) {
                let x = Noise(seed + rows as u64).floats(rows * blocks * BLOCK, 2.0);
                let (mut wide, mut narrowed) = (vec![0.0; rows * outputs], vec![0.0; rows * outputs]);
                multiply_on(path, &layer.weights(), &x, rows, &mut wide, &sequential);
                multiply_on(path, &narrow, &x, rows, &mut narrowed, &sequential);
                let bits_of = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits_of(&wide), bits_of(&narrowed), "{bits:?} on {path:?}, {blocks} blocks, {rows} rows");
            }
        }
    }

    /// The vector narrowing gives `half`'s conversion and refuses what is not exactly an f16:
    /// too many digits, past the range, below it, a NaN whose payload f16 cannot hold, in the vector
    /// part and in the tail.
    #[test]
    fn narrowing_keeps_exact_values_only() {
        let exact: Vec<f32> =
            (0..38).map(|i| (i as f32 - 18.0) / 64.0).chain([-0.0, 65504.0, 2f32.powi(-24)]).collect();
        let narrow = narrow_exactly(&exact).expect("every value is an f16");
        assert_eq!(narrow, exact.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>());
        for inexact in [0.1, 70000.0, 1.0e-9, f32::from_bits(0x7fc0_0001)] {
            for at in [0, 13, 40] {
                let mut values = exact.clone();
                values[at] = inexact;
                assert_eq!(narrow_exactly(&values), None, "{inexact} at {at}");
            }
        }
    }

    #[test]
    fn swiglu_is_silu_of_the_gate_times_up() {
        let inputs = 40;
        let gate_up: Vec<f32> = (0..3 * 2 * inputs).map(|i| (i as f32 - 120.0) * 0.37).collect();
        let mut out = vec![f32::NAN; 7];
        swiglu(&gate_up, inputs, &mut out, &threaded);
        assert_eq!(out.len(), 3 * inputs);
        for (row, (pair, got)) in gate_up.chunks(2 * inputs).zip(out.chunks(inputs)).enumerate() {
            for (i, &got) in got.iter().enumerate() {
                let (g, u) = (f64::from(pair[i]), f64::from(pair[inputs + i]));
                let want = g / (1.0 + (-g).exp()) * u;
                assert!((f64::from(got) - want).abs() <= want.abs() * 1e-6 + 1e-30, "row {row} {i}: {got} vs {want}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_gated_path_gives_the_same_bits() {
        let mut gate: Vec<f32> = (0..997).map(|i| (i as f32 - 500.0) * 0.213).collect();
        gate.extend([0.0, -0.0, -87.0, -87.5, 88.0, -1.0e-30, 1.0e30, -1.0e30, f32::MIN_POSITIVE]);
        let up: Vec<f32> = gate.iter().enumerate().map(|(i, g)| (i % 7) as f32 * 0.5 - 1.25 + g * 0.01).collect();
        let mut want = vec![0.0; gate.len()];
        gated(&gate, &up, &mut want);
        let mut paths = vec![Path::detect_now()];
        if avx2_fma_f16c() {
            paths.push(Path::Avx2);
        }
        for path in paths {
            let mut got = vec![f32::NAN; gate.len()];
            gated_on(path, &gate, &up, &mut got);
            for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(got.to_bits(), want.to_bits(), "{path:?}: silu({}) · {}", gate[i], up[i]);
            }
        }
    }

    /// The AVX2 quantizer gives the plain one's bits: values, their order, their sum, scale
    /// and sum.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vector_quantizer_gives_the_plain_ones_bits() {
        if !avx2_fma_f16c() {
            return;
        }
        let mut noise = Noise(77);
        let mut blocks: Vec<[f32; BLOCK]> =
            (0..200).map(|n| noise.floats(BLOCK, 10f32.powi(n % 7 - 3)).try_into().unwrap()).collect();
        // Ties (largest 127, so every other value is scaled by 1 and lies halfway between two
        // integers), zeros of both signs, infinities and NaNs.
        blocks.push(std::array::from_fn(|i| if i == 0 { 127.0 } else { i as f32 - 16.5 }));
        blocks.push(std::array::from_fn(|i| if i % 2 == 0 { 0.0 } else { -0.0 }));
        blocks.push(std::array::from_fn(|i| [1.0, -3.0, f32::INFINITY, 2.5][i % 4]));
        blocks.push(std::array::from_fn(|i| [1.0, -3.0, f32::NEG_INFINITY, f32::NAN][i % 4]));
        blocks.push(std::array::from_fn(|i| if i == 7 { f32::NAN } else { i as f32 }));
        for (index, block) in blocks.iter().enumerate() {
            let (mut plain, mut vector) = ([99i8; BLOCK], [99i8; BLOCK]);
            let expected = quantize_block(block, &mut plain);
            // SAFETY: AVX2 and FMA are present (checked above).
            let got = unsafe { quantize_block_avx2(block, &mut vector) };
            assert_eq!(got.0.to_bits(), expected.0.to_bits(), "block {index}: scale");
            assert_eq!(got.1, expected.1, "block {index}: value sum");
            assert_eq!(got.2.to_bits(), expected.2.to_bits(), "block {index}: sum");
            assert_eq!(vector, plain, "block {index}: values");
        }
    }

    #[test]
    fn zero_and_extreme_inputs_stay_finite() {
        let layer = Layer::new(16, 64, 5);
        let mut x = vec![0.0f32; 64];
        x[40] = 1e30;
        x[41] = -1e30;
        let out = run(&layer, &x, 1, &sequential);
        assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        let zeros = run(&layer, &[0.0; 64], 1, &sequential);
        assert!(zeros.iter().all(|&v| v == 0.0));
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// `cargo test --release --lib engine::linear::kernel::timing::time_quantize -- --ignored --nocapture`:
    /// the median CPU time of quantizing one row of activations (K 576: the attention and gate
    /// and up projections' inputs; K 1,536: the down projection's), this machine's path against
    /// the plain Rust one. A decode step quantizes 90 rows of the first kind and 30 of the
    /// second on the calling thread.
    #[test]
    #[ignore]
    fn time_quantize() {
        let sequential = |count: usize, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit);
        for (inputs, path) in [576usize, 1536].into_iter().flat_map(|k| [(k, Path::detect()), (k, Path::Portable)]) {
            let x: Vec<f32> = (0..inputs).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
            let blocks = inputs / BLOCK;
            let mut activations = quantize(&x, 1, blocks, path);
            let mut times: Vec<f64> = (0..2000)
                .map(|_| {
                    let start = crate::engine::kernels::thread_cpu_seconds();
                    for _ in 0..10 {
                        quantize_into(&mut activations, &x, 1, blocks, path, &sequential);
                    }
                    (crate::engine::kernels::thread_cpu_seconds() - start) * 1e5
                })
                .collect();
            times.sort_by(f64::total_cmp);
            eprintln!("nib quantize K {inputs} ({path:?}): median {:.2} us CPU per row", times[times.len() / 2]);
        }
    }

    /// One row (a decode step), a few (a verifying run's draft) and a prefill chunk's through
    /// 90 gate|up projections read in turn (100 MB: 30 of them, 33 MB, partly stayed in a 32 MB
    /// L3 cache), so that they stream from memory as in a decode step: f32 and f16 scales and
    /// offsets in turns (the median CPU time per projection, one thread), and against them a
    /// plain read of the same bytes (f16), one load per cache line: the rate at which one
    /// thread can stream them at all.
    #[test]
    #[ignore]
    fn time_scales_from_memory() {
        let (outputs, inputs, layers) = (3072usize, 576usize, 90);
        let blocks = inputs / BLOCK;
        let packed: Vec<Vec<u8>> =
            (0..layers).map(|l| (0..outputs * blocks * 16).map(|i| ((i + l) * 7 % 251) as u8).collect()).collect();
        let wide: Vec<Vec<f32>> =
            (0..layers).map(|l| (0..outputs * blocks).map(|i| ((i + l) % 13) as f32 / 1024.0).collect()).collect();
        fn repack<S: Scale>(packed: &[u8], scales: Vec<S>, blocks: usize) -> (Repacked<S>, Vec<S>) {
            let (sizes, sequential) =
                ((scales.len() / blocks, blocks), |count, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit));
            (Repacked::new(Bits::Four, sizes, (packed, &scales, Some(&scales)), &sequential), scales)
        }
        let narrow: Vec<_> = wide.iter().map(|v| narrow_exactly(v).expect("exact")).collect();
        let narrow: Vec<_> = packed.iter().zip(narrow).map(|(p, v)| repack(p, v, blocks)).collect();
        let wide: Vec<_> = packed.iter().zip(wide).map(|(p, v)| repack(p, v, blocks)).collect();
        /// The time per projection of one pass over them (the offsets: a copy of the scales).
        fn per_layer<S: Scale>(layers: &[(Repacked<S>, Vec<S>)], x: &[f32]) -> f64 {
            let (outputs, blocks) = (layers[0].0.outputs, layers[0].0.blocks);
            let rows = x.len() / (blocks * BLOCK);
            let mut out = vec![0.0; rows * outputs];
            let start = crate::engine::kernels::thread_cpu_seconds();
            for (repacked, _) in layers {
                let weights = repacked.weights();
                multiply_on(Path::detect(), &weights, x, rows, &mut out, &|count, unit| (0..count).for_each(unit));
            }
            (crate::engine::kernels::thread_cpu_seconds() - start) * 1e3 / layers.len() as f64
        }
        /// The time per projection of one load of every cache line of its bytes.
        fn plain_read(packed: &[Vec<u8>], scales: &[(Repacked<half::f16>, Vec<half::f16>)]) -> f64 {
            let start = crate::engine::kernels::thread_cpu_seconds();
            let mut total = 0u64;
            for (packed, (repacked, _)) in packed.iter().zip(scales) {
                let offsets = repacked.offsets.iter().flatten();
                let halves = repacked.scales.iter().chain(offsets).step_by(32).map(|half| u64::from(half.to_bits()));
                let lines = packed.chunks(64).map(|line| u64::from(line[0]));
                total = lines.chain(halves).fold(total, u64::wrapping_add);
            }
            std::hint::black_box(total);
            (crate::engine::kernels::thread_cpu_seconds() - start) * 1e3 / packed.len() as f64
        }
        for (rows, passes) in [(1, 40), (2, 30), (3, 30), (4, 20), (9, 10), (64, 4)] {
            let x: Vec<f32> = (0..rows * inputs).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
            let (mut f32_times, mut f16_times, mut read_times) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..passes {
                f32_times.push(per_layer(&wide, &x));
                f16_times.push(per_layer(&narrow, &x));
                read_times.push(plain_read(&packed, &narrow));
            }
            for times in [&mut f32_times, &mut f16_times, &mut read_times] {
                times.sort_by(f64::total_cmp);
            }
            eprintln!(
                "{rows} row(s), N 3072 K 576 from memory ({:?}): f32 scales median {:.4} ms, f16 median {:.4} ms; \
                 a plain read of the same bytes {:.4} ms",
                Path::detect(),
                f32_times[passes / 2],
                f16_times[passes / 2],
                read_times[passes / 2]
            );
        }
    }

    /// `cargo test --release --lib engine::linear::kernel::timing -- --ignored --nocapture`:
    /// the median CPU time of one call, one thread, the weights warm in the cache (the gate and
    /// up projections, N 3,072 × K 576, and the down projection, N 576 × K 1,536, of
    /// SmolLM2-135M, 4-bit; its 8-bit LM head, N 49,152 × K 576, whose 28 MB stream from
    /// memory) for a decode step, a draft and a prefill chunk. Compare with
    /// `.venv/bin/python benches/linear_kernel.py`.
    #[test]
    #[ignore]
    fn time_multiply() {
        for (bits, outputs, inputs) in
            [(Bits::Four, 3072usize, 576usize), (Bits::Four, 576, 1536), (Bits::Eight, 49152, 576)]
        {
            let blocks = inputs / BLOCK;
            let packed: Vec<u8> = (0..outputs * blocks * bits.block_bytes()).map(|i| (i * 7 % 251) as u8).collect();
            let scales: Vec<f32> = (0..outputs * blocks).map(|i| (i % 13) as f32 * 1e-3).collect();
            let offsets: Vec<f32> = (0..outputs * blocks).map(|i| (i % 11) as f32 * 1e-3).collect();
            let offsets = (bits == Bits::Four).then_some(&offsets[..]);
            let seq = |count: usize, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit);
            let repacked = Repacked::new(bits, (outputs, blocks), (&packed, &scales, offsets), &seq);
            let weights = repacked.weights();
            let paths = match Path::detect() {
                Path::Vnni512 => vec![Path::Vnni512, Path::Avx2],
                path => vec![path],
            };
            let rows = if bits == Bits::Four { &[1usize, 2, 4, 8, 16, 128][..] } else { &[1, 2, 8] };
            for (rows, path) in rows.iter().flat_map(|&rows| paths.iter().map(move |&p| (rows, p))) {
                let x: Vec<f32> = (0..rows * inputs).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
                let mut out = vec![0.0; rows * outputs];
                let seq = |count: usize, unit: &(dyn Fn(usize) + Sync)| (0..count).for_each(unit);
                let mut times: Vec<f64> = (0..if rows > 8 { 40 } else { 400 })
                    .map(|_| {
                        let start = crate::engine::kernels::thread_cpu_seconds();
                        multiply_on(path, &weights, &x, rows, &mut out, &seq);
                        (crate::engine::kernels::thread_cpu_seconds() - start) * 1e3
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                let (median, least) = (times[times.len() / 2], times[0]);
                eprintln!(
                    "nib linear {bits:?} N {outputs} K {inputs} rows {rows} ({path:?}): median {median:.4} ms CPU per call (least {least:.4})"
                );
            }
        }
    }
}
