//! The arithmetic of a quantized linear layer on plain slices: `y = x · Wᵀ` for MatMulNBits'
//! blocks of 32 weights with one scale each, 4-bit (zero point 8) or 8-bit (zero point 128: the
//! LM head), plus the converter's per-block offsets (`w = (q - zero point) · scale + offset`,
//! models/nib_convert/quant.py).
//!
//! Each activation row is quantized once per block of 32 to int8 (scale `max|x| / 127`, like
//! llama.cpp's Q8 blocks and ONNX Runtime's int8-activation kernel), stored in the order the
//! weights unpack to (the even elements, then the odd ones). Each weight block is unpacked
//! once per tile of rows and multiplied with every row of the tile in integers (AVX2 `maddubs`
//! and `madd`, an 8-bit weight taken there as `q − 128` with its sign moved onto the
//! activations so that no sum saturates, or AVX-512 VNNI `dpbusd`: the same exact sums), the
//! zero point folded in as an integer correction; each block's integer sums are scaled into
//! eight f32 lanes per output, reduced in a fixed order at the end. The offsets term uses the
//! exact block sums of `x`, four chains of eight outputs side by side. A SwiGLU block's down
//! projection first computes its input, `silu(gate) · up` (`swiglu`).
//!
//! The scales and offsets are f32 or f16 (`Scale`: the node narrows them where every value is
//! exactly an f16); the tiles widen f16 to the same f32 values, so the bits do not depend on it.
//!
//! A row's result depends only on that row and the weights: every output is the same
//! operations in the same order whatever rows, tile or thread it runs with. The VNNI and AVX2
//! paths give the same bits, and so does `dot_portable`, the plain-Rust mirror the tests hold
//! them to.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::ops::Range;

/// Weights per block (MatMulNBits' `block_size`).
pub(crate) const BLOCK: usize = 32;
/// Values per half of a block: the even elements of a block of activations, then the odd ones.
const HALF: usize = BLOCK / 2;
/// f32 lanes each output accumulates in (one AVX2 register).
const LANES: usize = 8;
/// The most blocks per step (see `Activations`).
const MAX_GROUP: usize = 4;
/// Rows that share each unpacked weight block.
const TILE_ROWS: usize = 4;
/// Outputs per unit of work in prefill: 4,096 weights of 576 inputs (36 KiB with scales and
/// offsets) stay in the L2 cache while every row of the unit reads them.
const UNIT_COLUMNS: usize = 64;
/// Up to this many rows (a decode step, a draft of one token) run in `stream_columns` units.
const STREAM_ROWS: usize = 2;
/// Outputs per unit of work, about, where the weights stream from memory (`stream_columns`).
const STREAM_COLUMNS: usize = 512;
/// How far ahead of the weights in use the tiles prefetch (bytes of nibbles, and a quarter of
/// that of scales).
const PREFETCH_BYTES: usize = 2048;
/// Rows per unit of work in long prefill chunks (their activations stay in the L2 cache).
const UNIT_ROWS: usize = 64;

/// How a node stores a block of 32 weights.
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

    /// Stored value of `element` (0..32) of a block.
    fn weight(self, block: &[u8], element: usize) -> u8 {
        match self {
            Bits::Four if element.is_multiple_of(2) => block[element / 2] & 15,
            Bits::Four => block[element / 2] >> 4,
            Bits::Eight => block[element],
        }
    }

    /// The zero point over 8, as a power of two (the activations' zero points are −8 × each
    /// lane's sum; 8-bit weights need 16 times that).
    const fn zero_point_shift(self) -> u32 {
        match self {
            Bits::Four => 0,
            Bits::Eight => 4,
        }
    }
}

/// One node's weights: `packed` `[outputs][blocks][bits.block_bytes()]`, `scales`
/// `[outputs][blocks]`, `offsets` `[blocks][outputs]`.
pub(crate) struct Weights<'a, S: Scale = f32> {
    pub bits: Bits,
    pub outputs: usize,
    pub blocks: usize,
    pub packed: &'a [u8],
    pub scales: &'a [S],
    pub offsets: Option<&'a [S]>,
}

impl<S: Scale> Weights<'_, S> {
    /// Inputs per row.
    pub fn inputs(&self) -> usize {
        self.blocks * BLOCK
    }

    fn check(&self) {
        assert_eq!(self.packed.len(), self.outputs * self.blocks * self.bits.block_bytes());
        assert_eq!(self.scales.len(), self.outputs * self.blocks);
        if let Some(offsets) = self.offsets {
            assert_eq!(offsets.len(), self.blocks * self.outputs);
        }
    }
}

/// How a node stores its block scales and offsets: `f32`, as the converter writes them, or
/// `f16` where every one of a node's values is exactly an `f16` (`op.rs` narrows them once),
/// a sixth fewer bytes for a decode step to read. Either way the tiles compute with the same
/// f32 values, so the results have the same bits.
pub(crate) trait Scale: Copy + Send + Sync + 'static {
    /// The value, exactly.
    fn value(self) -> f32;

    /// Two blocks' scales at `at`, each spread over its four lanes (the second zero unless
    /// `complete`).
    #[cfg(target_arch = "x86_64")]
    unsafe fn pair(at: *const Self, complete: bool) -> __m256;

    /// Four blocks' scales (`present` of them, the rest zero), each spread over its four lanes.
    #[cfg(target_arch = "x86_64")]
    unsafe fn quad(at: *const Self, present: usize) -> __m512;

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

/// Each of two values over four lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn spread_pair(two: __m128) -> __m256 {
    // SAFETY: the caller's tile runs with AVX2.
    unsafe { _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1)) }
}

/// Each of four values over four lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn spread_quad(four: __m128) -> __m512 {
    // SAFETY: the caller's tile runs with AVX-512 F.
    unsafe {
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(four))
    }
}

impl Scale for f32 {
    fn value(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn pair(at: *const f32, complete: bool) -> __m256 {
        // SAFETY: the caller's bounds: two values, or one without `complete`.
        unsafe { spread_pair(if complete { _mm_castpd_ps(_mm_load_sd(at.cast())) } else { _mm_load_ss(at) }) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn quad(at: *const f32, present: usize) -> __m512 {
        // SAFETY: the caller's bounds: `present` values; the rest of the load is masked.
        unsafe {
            spread_quad(if present == MAX_GROUP {
                _mm_loadu_ps(at)
            } else {
                _mm_maskz_loadu_ps((1u8 << present) - 1, at)
            })
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(at: *const f32) -> __m256 {
        // SAFETY: the caller's bounds.
        unsafe { _mm256_loadu_ps(at) }
    }
}

impl Scale for half::f16 {
    fn value(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn pair(at: *const half::f16, complete: bool) -> __m256 {
        // SAFETY: the caller's bounds: two values, or one without `complete`; F16C with AVX2.
        unsafe {
            let bits = if complete { at.cast::<i32>().read_unaligned() } else { i32::from(at.cast::<u16>().read()) };
            spread_pair(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn quad(at: *const half::f16, present: usize) -> __m512 {
        // SAFETY: the caller's bounds: `present` values; the rest of the load is masked (AVX-512
        // BW and VL, which the 512-bit tiles run with).
        unsafe {
            let four = if present == MAX_GROUP {
                _mm_loadl_epi64(at.cast())
            } else {
                _mm_maskz_loadu_epi16((1u8 << present) - 1, at.cast())
            };
            spread_quad(_mm_cvtph_ps(four))
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(at: *const half::f16) -> __m256 {
        // SAFETY: the caller's bounds; F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at.cast())) }
    }
}

/// Rows of activations quantized per block, kept in steps of `group` blocks (the last step
/// padded with zero blocks) in the order the weights unpack to: one load of a step's 4-bit
/// weights (`group` × 16 bytes: 32 on the 256-bit paths, 64 on the 512-bit one) masks to the
/// even elements of its blocks, and shifts to the odd ones (8-bit weights are shuffled into
/// the same order). For row `r` and step `s`
/// (`at = r * steps + s`): `values[at * group * 32..]` holds the even elements of block
/// `group * s`, then of the next blocks of the step (16 bytes each), then their odd elements;
/// lane `l` of the step's `4 * group`-lane dot product covers elements `8 (l % 4)..+ 8` of
/// block `group * s + l / 4`. `zero_points[at * 4 * group..]` is −8 × each lane's sum of values
/// (so that the dot product with the raw 4-bit weights is the one with `q − 8`; 16 times that
/// for 8-bit ones and `q − 128`),
/// `lane_scales[at * 4 * group..]` each lane's block scale; `sums[r * blocks + b]` the exact
/// sums of the inputs.
struct Activations {
    /// Blocks per step.
    group: usize,
    steps: usize,
    values: Vec<i8>,
    zero_points: Vec<i32>,
    lane_scales: Vec<f32>,
    sums: Vec<f32>,
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
        quantize_into(activations, x, rows, weights.blocks, (path, path.group()), for_each);
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
/// them out evenly) of about `STREAM_COLUMNS` outputs where there are enough, in multiples of
/// four (the register tiles' width). Each unit reads its weights as one stream, which the
/// prefetchers keep ahead of, except at the start of a unit. Engine bench A/B, runs in turns,
/// 256 tokens decoded (an AMD EPYC with AVX2, 2 cores, 2026-12-03): against units of 64
/// outputs, units of at least 256 decoded 5 % faster after a 16-token prompt; 512, 6 % faster
/// than 256 (8 of 10 paired runs) and 5 % faster than 64 after a 512-token prompt (10 of 12);
/// 1,024 the same as 512; one unit per thread, 3 % slower than 512. With more rows the tiles
/// read each weight block once per four rows, so the work is bound by arithmetic rather than
/// memory, and units of 64 (re-read from the L1 and L2 caches, shared out more evenly) were
/// faster: 30 layers' 4-bit weights in turn, units of 64 against these, 4 rows 4 % faster,
/// 9 rows 7 % faster; 1 and 2 rows 3–10 % slower.
fn stream_columns(outputs: usize) -> usize {
    let units = (outputs / STREAM_COLUMNS).max(2);
    outputs.div_ceil(units + units % 2).next_multiple_of(4)
}

/// `out` `[rows][inputs]` = `silu(gate) · up` of `gate_up` `[rows][2 · inputs]` (each row's
/// gate, then its up; `silu(g) = g · sigmoid(g)`): the input of a SwiGLU block's down
/// projection. Units of `UNIT_ROWS` rows (a prefill chunk's run on every thread).
pub(crate) fn swiglu(gate_up: &[f32], inputs: usize, out: &mut Vec<f32>, for_each: ForEach<'_>) {
    let rows = gate_up.len() / (2 * inputs);
    zeroed(out, rows * inputs, 0.0);
    let output = Shared(out.as_mut_ptr());
    for_each(rows.div_ceil(UNIT_ROWS), &|unit| {
        for row in unit * UNIT_ROWS..((unit + 1) * UNIT_ROWS).min(rows) {
            let (gate, up) = gate_up[row * 2 * inputs..][..2 * inputs].split_at(inputs);
            // SAFETY: this unit alone writes its rows of `out`, which holds `rows` rows.
            let out = unsafe { std::slice::from_raw_parts_mut(output.at(row * inputs), inputs) };
            for ((y, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *y = g * sigmoid(g) * u;
            }
        }
    });
}

/// `1 / (1 + e^-x)`, from `e^-|x|` so that the exponential never overflows.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = crate::engine::kernels::exp(-x.abs());
    if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) }
}

/// How this machine computes (always the same one on a machine).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// AVX-512 VNNI on 512-bit registers: four blocks per step.
    Vnni512,
    /// AVX-512 VNNI on 256-bit registers (the tests' second opinion on the 512-bit machines).
    Vnni,
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
                let has = |feature: &str| match feature {
                    "f" => std::arch::is_x86_feature_detected!("avx512f"),
                    "bw" => std::arch::is_x86_feature_detected!("avx512bw"),
                    "vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                    _ => std::arch::is_x86_feature_detected!("avx512vnni"),
                };
                if ["f", "bw", "vl", "vnni"].iter().all(|feature| has(feature)) {
                    return Path::Vnni512;
                }
                return if ["f", "vl", "vnni"].iter().all(|feature| has(feature)) { Path::Vnni } else { Path::Avx2 };
            }
        }
        Path::Portable
    }

    /// Blocks per step of the dot products (see `Activations`).
    fn group(self) -> usize {
        if self == Path::Vnni512 { 4 } else { 2 }
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
    static SCRATCH: std::cell::RefCell<Activations> = const {
        std::cell::RefCell::new(Activations {
            group: 0,
            steps: 0,
            values: Vec::new(),
            zero_points: Vec::new(),
            lane_scales: Vec::new(),
            sums: Vec::new(),
        })
    };
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
    (path, group): (Path, usize),
    for_each: ForEach<'_>,
) {
    let (steps, lanes) = (blocks.div_ceil(group), 4 * group);
    (activations.group, activations.steps) = (group, steps);
    zeroed(&mut activations.values, rows * steps * group * BLOCK, 0);
    zeroed(&mut activations.zero_points, rows * steps * lanes, 0);
    zeroed(&mut activations.lane_scales, rows * steps * lanes, 0.0);
    zeroed(&mut activations.sums, rows * blocks, 0.0);
    let values = Shared(activations.values.as_mut_ptr());
    let zero_points = Shared(activations.zero_points.as_mut_ptr());
    let lane_scales = Shared(activations.lane_scales.as_mut_ptr());
    let sums = Shared(activations.sums.as_mut_ptr());
    let units = rows.div_ceil(UNIT_ROWS);
    let unit = |unit: usize| {
        for row in unit * UNIT_ROWS..((unit + 1) * UNIT_ROWS).min(rows) {
            for block in 0..blocks {
                let input: &[f32; BLOCK] = x[(row * blocks + block) * BLOCK..][..BLOCK].try_into().expect("a block");
                let (at, part) = (row * steps + block / group, block % group);
                // SAFETY: the row's parts of each array are written by this unit alone.
                unsafe {
                    let step = std::slice::from_raw_parts_mut(values.at(at * group * BLOCK), group * BLOCK);
                    let zero_points = std::slice::from_raw_parts_mut(zero_points.at(at * lanes + part * 4), 4);
                    let (scale, sum) = quantize_block_on(path, input, step, part, zero_points);
                    std::slice::from_raw_parts_mut(lane_scales.at(at * lanes + part * 4), 4).fill(scale);
                    *sums.at(row * blocks + block) = sum;
                }
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
fn quantize(x: &[f32], rows: usize, blocks: usize, path: (Path, usize), for_each: ForEach<'_>) -> Activations {
    let mut activations = Activations {
        group: 0,
        steps: 0,
        values: Vec::new(),
        zero_points: Vec::new(),
        lane_scales: Vec::new(),
        sums: Vec::new(),
    };
    quantize_into(&mut activations, x, rows, blocks, path, for_each);
    activations
}

fn quantize_block_on(
    path: Path,
    x: &[f32; BLOCK],
    step: &mut [i8],
    part: usize,
    zero_points: &mut [i32],
) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if path != Path::Portable {
        // SAFETY: the fast paths are detected only on CPUs with AVX2 and FMA.
        return unsafe { quantize_block_avx2(x, step, part, zero_points) };
    }
    let _ = path;
    quantize_block(x, step, part, zero_points)
}

/// `quantize_block` in registers, with its bits: the largest magnitude (a maximum, in any
/// order), the rounding and the integer sums are exact; the float sum keeps its order. A
/// decode step quantizes about 3,000 blocks on the calling thread while the pool waits, so this
/// is on every step's critical path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(x: &[f32; BLOCK], step: &mut [i8], part: usize, zero_points: &mut [i32]) -> (f32, f32) {
    let odd = step.len() / 2;
    assert!(part * HALF + HALF <= odd && zero_points.len() == 4);
    // SAFETY: `x` holds 32 floats; the stores stay within `step` and `zero_points` (checked).
    let scale = unsafe {
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
        // 5, 7; put them back in order, then the even elements before the odd ones.
        let bytes =
            _mm256_packs_epi16(_mm256_packs_epi32(values[0], values[1]), _mm256_packs_epi32(values[2], values[3]));
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let order = _mm_loadu_si128(EVEN_THEN_ODD.as_ptr().cast());
        let split = _mm256_shuffle_epi8(bytes, _mm256_broadcastsi128_si256(order));
        let split = _mm256_permute4x64_epi64::<0b11_01_10_00>(split);
        _mm_storeu_si128(step.as_mut_ptr().add(part * HALF).cast(), _mm256_castsi256_si128(split));
        _mm_storeu_si128(step.as_mut_ptr().add(odd + part * HALF).cast(), _mm256_extracti128_si256::<1>(split));
        // Each lane of four zero points is the sum of one register of eight values.
        let pairs = _mm256_hadd_epi32(_mm256_hadd_epi32(values[0], values[1]), _mm256_hadd_epi32(values[2], values[3]));
        let lanes = _mm_add_epi32(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256::<1>(pairs));
        _mm_storeu_si128(zero_points.as_mut_ptr().cast(), _mm_mullo_epi32(lanes, _mm_set1_epi32(-8)));
        scale
    };
    let sum = x.iter().fold(0.0f32, |sum, &v| sum + v);
    (scale, sum)
}

/// One block of inputs to int8 values, written as block `part` of its step (see
/// `Activations`) with its four lanes' zero points; returns the scale and the exact sum. Plain
/// IEEE arithmetic in a fixed order: the same bits however it is compiled.
#[inline(always)]
fn quantize_block(x: &[f32; BLOCK], step: &mut [i8], part: usize, zero_points: &mut [i32]) -> (f32, f32) {
    let largest = x.iter().fold(0.0f32, |largest, v| largest.max(v.abs()));
    let scale = largest / 127.0;
    let inverse = if largest > 0.0 { 127.0 / largest } else { 0.0 };
    let mut values = [0i8; BLOCK];
    for (value, &v) in values.iter_mut().zip(x) {
        *value = (v * inverse).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    let odd = step.len() / 2;
    for i in 0..HALF {
        step[part * HALF + i] = values[2 * i];
        step[odd + part * HALF + i] = values[2 * i + 1];
    }
    for (lane, zero_point) in zero_points.iter_mut().enumerate() {
        *zero_point = -8 * values[8 * lane..8 * lane + 8].iter().map(|&v| i32::from(v)).sum::<i32>();
    }
    let sum = x.iter().fold(0.0f32, |sum, &v| sum + v);
    (scale, sum)
}

/// # Safety
/// No other unit writes the elements `(rows, columns)` of `output` meanwhile.
unsafe fn multiply_unit<S: Scale>(
    weights: &Weights<'_, S>,
    activations: &Activations,
    rows: Range<usize>,
    columns: Range<usize>,
    output: Shared<f32>,
    path: Path,
) {
    let outputs = weights.outputs;
    if let Some(offsets) = weights.offsets {
        prefetch_offsets(offsets, weights.blocks, outputs, &columns);
    }
    let mut row = rows.start;
    while row < rows.end {
        let tile = (rows.end - row).min(TILE_ROWS);
        let mut column = columns.start;
        while column < columns.end {
            let width = if tile == TILE_ROWS { 2 } else { 4 }.min(columns.end - column);
            let mut results = [[0.0f32; TILE_ROWS]; 4];
            dot_tile(path, weights, activations, (row, tile), (column, width), &mut results);
            for (c, results) in results.iter().enumerate().take(width) {
                for (r, &result) in results.iter().enumerate().take(tile) {
                    // SAFETY: (row + r, column + c) lies in this unit's rows and columns.
                    unsafe { *output.at((row + r) * outputs + column + c) = result };
                }
            }
            column += width;
        }
        row += tile;
    }
    if let Some(offsets) = weights.offsets {
        for row in rows {
            // SAFETY: as above; the row's columns of this unit, contiguous.
            let out =
                unsafe { std::slice::from_raw_parts_mut(output.at(row * outputs + columns.start), columns.len()) };
            let sums = &activations.sums[row * weights.blocks..][..weights.blocks];
            add_offsets(path, out, sums, offsets, outputs, columns.start);
        }
    }
}

/// `out[c] += Σ_block sums[block] · offsets[block][first + c]`: the sum is one fused
/// multiply-add chain over the blocks in order, from 0, then added (eight outputs at a time
/// with AVX2 and FMA, the same operations one at a time otherwise).
fn add_offsets<S: Scale>(path: Path, out: &mut [f32], sums: &[f32], offsets: &[S], outputs: usize, first: usize) {
    #[cfg(target_arch = "x86_64")]
    if path != Path::Portable {
        // SAFETY: the fast paths are detected only on CPUs with AVX2, FMA and F16C.
        return unsafe { add_offsets_avx2(out, sums, offsets, outputs, first) };
    }
    let _ = path;
    add_offsets_portable(out, sums, offsets, outputs, first)
}

fn add_offsets_portable<S: Scale>(out: &mut [f32], sums: &[f32], offsets: &[S], outputs: usize, first: usize) {
    for (c, y) in out.iter_mut().enumerate() {
        let term = sums
            .iter()
            .enumerate()
            .fold(0.0f32, |term, (block, &sum)| sum.mul_add(offsets[block * outputs + first + c].value(), term));
        *y += term;
    }
}

/// Outputs whose offset chains `add_offsets_avx2` runs side by side: each chain waits for its
/// last multiply-add, so one chain at a time left the core idle most of each step.
const OFFSET_CHAINS: usize = 4;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_offsets_avx2<S: Scale>(out: &mut [f32], sums: &[f32], offsets: &[S], outputs: usize, first: usize) {
    assert!(sums.len() * outputs <= offsets.len() && first + out.len() <= outputs);
    let (wide, whole) = (out.len() / (OFFSET_CHAINS * LANES) * OFFSET_CHAINS * LANES, out.len() / LANES * LANES);
    for c in (0..wide).step_by(OFFSET_CHAINS * LANES) {
        // SAFETY: c + 32 <= out.len(), and the assertion above bounds the offsets read.
        unsafe { add_offsets_lanes::<S, OFFSET_CHAINS>(out, sums, offsets, outputs, first, c) };
    }
    for c in (wide..whole).step_by(LANES) {
        // SAFETY: as above, c + 8 <= out.len().
        unsafe { add_offsets_lanes::<S, 1>(out, sums, offsets, outputs, first, c) };
    }
    add_offsets_portable(&mut out[whole..], sums, offsets, outputs, first + whole);
}

/// `add_offsets` for outputs `c..c + 8 V`: `V` chains of eight lanes, each in block order.
///
/// # Safety
/// AVX2, FMA and F16C; `c + 8 V <= out.len()`, `first + out.len() <= outputs` and
/// `sums.len() * outputs <= offsets.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_offsets_lanes<S: Scale, const V: usize>(
    out: &mut [f32],
    sums: &[f32],
    offsets: &[S],
    outputs: usize,
    first: usize,
    c: usize,
) {
    // SAFETY: the caller's bounds.
    unsafe {
        let mut terms = [_mm256_setzero_ps(); V];
        for (block, &sum) in sums.iter().enumerate() {
            let (at, sum) = (offsets.as_ptr().add(block * outputs + first + c), _mm256_set1_ps(sum));
            for (v, term) in terms.iter_mut().enumerate() {
                *term = _mm256_fmadd_ps(sum, S::eight(at.add(v * LANES)), *term);
            }
        }
        for (v, term) in terms.into_iter().enumerate() {
            let y = out.as_mut_ptr().add(c + v * LANES);
            _mm256_storeu_ps(y, _mm256_add_ps(_mm256_loadu_ps(y), term));
        }
    }
}

/// Asks for a unit's offsets (`blocks` rows of its columns, `outputs` apart) before its dot
/// products run, so that they are in the cache when `add_offsets` reads them: read at the end,
/// one strided row after another, they each waited on memory.
fn prefetch_offsets<S: Scale>(offsets: &[S], blocks: usize, outputs: usize, columns: &Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for block in 0..blocks {
        let row = &offsets[block * outputs + columns.start..block * outputs + columns.end];
        for line in row.chunks(64 / size_of::<S>()) {
            // SAFETY: a prefetch of an address within the slice.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (offsets, blocks, outputs, columns);
}

/// The dot products of rows `tile.0..tile.0 + tile.1` with outputs `columns.0..columns.0 +
/// columns.1` into `results[column][row]` (without the offsets term).
fn dot_tile<S: Scale>(
    path: Path,
    weights: &Weights<'_, S>,
    activations: &Activations,
    tile: (usize, usize),
    columns: (usize, usize),
    results: &mut [[f32; TILE_ROWS]; 4],
) {
    macro_rules! dispatch {
        ($function:ident, $format:ty) => {
            match (tile.1, columns.1) {
                (4, 2) => $function::<$format, S, 4, 2>(weights, activations, tile.0, columns.0, results),
                (4, 1) => $function::<$format, S, 4, 1>(weights, activations, tile.0, columns.0, results),
                (3, 4) => $function::<$format, S, 3, 4>(weights, activations, tile.0, columns.0, results),
                (3, c) => (0..c).for_each(|c| {
                    $function::<$format, S, 3, 1>(weights, activations, tile.0, columns.0 + c, &mut results[c..])
                }),
                (2, 4) => $function::<$format, S, 2, 4>(weights, activations, tile.0, columns.0, results),
                (2, c) => (0..c).for_each(|c| {
                    $function::<$format, S, 2, 1>(weights, activations, tile.0, columns.0 + c, &mut results[c..])
                }),
                (1, 4) => $function::<$format, S, 1, 4>(weights, activations, tile.0, columns.0, results),
                (1, c) => (0..c).for_each(|c| {
                    $function::<$format, S, 1, 1>(weights, activations, tile.0, columns.0 + c, &mut results[c..])
                }),
                other => unreachable!("tile {other:?}"),
            }
        };
        ($function:ident) => {
            match weights.bits {
                Bits::Four => dispatch!($function, Nibbles),
                Bits::Eight => dispatch!($function, Bytes),
            }
        };
    }
    match path {
        // SAFETY: Path::Vnni is detected only with AVX-512 VNNI, VL and F, AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Path::Vnni => unsafe { dispatch!(dot_vnni) },
        // SAFETY: Path::Vnni512 is detected only with AVX-512 VNNI, BW, VL and F, AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Path::Vnni512 => unsafe { dispatch!(dot_vnni512) },
        // SAFETY: Path::Avx2 is detected only with AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { dispatch!(dot_avx2) },
        _ => {
            for (c, results) in results.iter_mut().enumerate().take(columns.1) {
                for (r, result) in results.iter_mut().enumerate().take(tile.1) {
                    *result = dot_portable(weights, activations, tile.0 + r, columns.0 + c);
                }
            }
        }
    }
}

/// One output of one row in plain Rust: the SIMD paths' arithmetic, operation for operation
/// (`mul_add` is the fused multiply-add they use; integer sums are exact in any order).
fn dot_portable<S: Scale>(weights: &Weights<'_, S>, activations: &Activations, row: usize, column: usize) -> f32 {
    let (blocks, group, steps) = (weights.blocks, activations.group, activations.steps);
    let mut lanes = [0.0f32; 4 * MAX_GROUP];
    let lanes = &mut lanes[..4 * group];
    let (odd, bytes) = (group * HALF, weights.bits.block_bytes());
    for step in 0..steps {
        let at = row * steps + step;
        let values = &activations.values[at * group * BLOCK..][..group * BLOCK];
        for (lane, total) in lanes.iter_mut().enumerate() {
            let (block, first) = (group * step + lane / 4, 8 * (lane % 4));
            let mut sum = activations.zero_points[at * 4 * group + lane] << weights.bits.zero_point_shift();
            let mut scale = 0.0;
            if block < blocks {
                let packed = &weights.packed[(column * blocks + block) * bytes..][..bytes];
                for element in first..first + 8 {
                    let half = if element % 2 == 0 { 0 } else { odd };
                    let value = values[half + (lane / 4) * HALF + element / 2];
                    sum += i32::from(weights.bits.weight(packed, element)) * i32::from(value);
                }
                scale = weights.scales[column * blocks + block].value();
            }
            let factor = scale * activations.lane_scales[at * 4 * group + lane];
            *total = (sum as f32).mul_add(factor, *total);
        }
    }
    reduce(lanes)
}

/// The lanes' sum in the order the SIMD paths take: sixteen lanes add their upper eight to
/// their lower eight first; of eight, halves, then quarters, then the pair.
fn reduce(lanes: &[f32]) -> f32 {
    if lanes.len() == 2 * LANES {
        let lower: [f32; LANES] = std::array::from_fn(|i| lanes[i] + lanes[i + LANES]);
        return reduce(&lower);
    }
    let half: [f32; 4] = std::array::from_fn(|i| lanes[i] + lanes[i + 4]);
    (half[0] + half[2]) + (half[1] + half[3])
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn reduce_avx(v: __m256) -> f32 {
    unsafe {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1)))
    }
}

/// A weight format's part of the register tiles: how a step's blocks unpack into
/// `Activations`' order (even elements, odd elements, each lane's scale) and how the integer
/// dot product folds its zero point in.
#[cfg(target_arch = "x86_64")]
trait Format {
    const BITS: Bits;
    const BLOCK_BYTES: usize = Self::BITS.block_bytes();

    /// Blocks `block` and `block + 1` at `packed` and `scales` (without the second block,
    /// `complete` false, its half is zero).
    unsafe fn unpack_pair<S: Scale>(packed: *const u8, scales: *const S, complete: bool) -> (__m256i, __m256i, __m256);

    /// The step of blocks at `packed` and `scales` (`present` of them, 1 to 4; the rest of the
    /// step reads as zero).
    unsafe fn unpack_quad<S: Scale>(packed: *const u8, scales: *const S, present: usize) -> (__m512i, __m512i, __m512);

    /// The activations' zero points (−8 × each lane's sum) for this format's zero point.
    #[inline(always)]
    unsafe fn zero_points_256(zero_point: __m256i) -> __m256i {
        // SAFETY: the caller's tile runs with AVX2.
        unsafe { _mm256_sll_epi32(zero_point, _mm_cvtsi32_si128(Self::BITS.zero_point_shift() as i32)) }
    }

    #[inline(always)]
    unsafe fn zero_points_512(zero_point: __m512i) -> __m512i {
        // SAFETY: the caller's tile runs with AVX-512 F.
        unsafe { _mm512_sll_epi32(zero_point, _mm_cvtsi32_si128(Self::BITS.zero_point_shift() as i32)) }
    }

    /// `zero_point` + the dot products of each lane's weights and values, with AVX2 alone.
    unsafe fn dot_avx2(zero_point: __m256i, even: __m256i, x_even: __m256i, odd: __m256i, x_odd: __m256i) -> __m256i;
}

/// 4-bit weights (`Bits::Four`).
#[cfg(target_arch = "x86_64")]
struct Nibbles;

/// 8-bit weights (`Bits::Eight`).
#[cfg(target_arch = "x86_64")]
struct Bytes;

/// The mask of a load of the first `count` bytes of 64.
#[cfg(target_arch = "x86_64")]
fn first_bytes(count: usize) -> u64 {
    if count >= 64 { u64::MAX } else { (1u64 << count) - 1 }
}

#[cfg(target_arch = "x86_64")]
impl Format for Nibbles {
    const BITS: Bits = Bits::Four;

    #[inline(always)]
    unsafe fn unpack_pair<S: Scale>(packed: *const u8, scales: *const S, complete: bool) -> (__m256i, __m256i, __m256) {
        unsafe {
            let packed = if complete {
                _mm256_loadu_si256(packed.cast())
            } else {
                _mm256_zextsi128_si256(_mm_loadu_si128(packed.cast()))
            };
            let mask = _mm256_set1_epi8(0x0f);
            let even = _mm256_and_si256(packed, mask);
            let odd = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
            (even, odd, S::pair(scales, complete))
        }
    }

    #[inline(always)]
    unsafe fn unpack_quad<S: Scale>(packed: *const u8, scales: *const S, present: usize) -> (__m512i, __m512i, __m512) {
        unsafe {
            let packed = _mm512_maskz_loadu_epi8(first_bytes(present * Self::BLOCK_BYTES), packed.cast());
            let mask = _mm512_set1_epi8(0x0f);
            let even = _mm512_and_si512(packed, mask);
            let odd = _mm512_and_si512(_mm512_srli_epi16(packed, 4), mask);
            (even, odd, S::quad(scales, present))
        }
    }

    #[inline(always)]
    unsafe fn dot_avx2(zero_point: __m256i, even: __m256i, x_even: __m256i, odd: __m256i, x_odd: __m256i) -> __m256i {
        // |sum| ≤ 2 × 2 × 15 × 127 per 16-bit lane: no saturation.
        unsafe {
            let pairs = _mm256_add_epi16(_mm256_maddubs_epi16(even, x_even), _mm256_maddubs_epi16(odd, x_odd));
            _mm256_add_epi32(zero_point, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

/// Within each 16 bytes: the 8 even ones, then the 8 odd ones.
#[cfg(target_arch = "x86_64")]
const EVEN_THEN_ODD: [i8; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15];

#[cfg(target_arch = "x86_64")]
impl Format for Bytes {
    const BITS: Bits = Bits::Eight;

    #[inline(always)]
    unsafe fn unpack_pair<S: Scale>(packed: *const u8, scales: *const S, complete: bool) -> (__m256i, __m256i, __m256) {
        unsafe {
            let split = _mm256_broadcastsi128_si256(_mm_loadu_si128(EVEN_THEN_ODD.as_ptr().cast()));
            let first = _mm256_shuffle_epi8(_mm256_loadu_si256(packed.cast()), split);
            let second = if complete {
                _mm256_shuffle_epi8(_mm256_loadu_si256(packed.add(BLOCK).cast()), split)
            } else {
                _mm256_setzero_si256()
            };
            // Quadwords [even, odd] of elements 0..16 and 16..32 of each block, in order.
            const IN_ORDER: i32 = 0b11_01_10_00;
            let even = _mm256_permute4x64_epi64::<IN_ORDER>(_mm256_unpacklo_epi64(first, second));
            let odd = _mm256_permute4x64_epi64::<IN_ORDER>(_mm256_unpackhi_epi64(first, second));
            (even, odd, S::pair(scales, complete))
        }
    }

    #[inline(always)]
    unsafe fn unpack_quad<S: Scale>(packed: *const u8, scales: *const S, present: usize) -> (__m512i, __m512i, __m512) {
        unsafe {
            let split = _mm512_broadcast_i32x4(_mm_loadu_si128(EVEN_THEN_ODD.as_ptr().cast()));
            let bytes = present * BLOCK;
            let first = _mm512_maskz_loadu_epi8(first_bytes(bytes), packed.cast());
            let second = _mm512_maskz_loadu_epi8(first_bytes(bytes.saturating_sub(64)), packed.add(64).cast());
            let (first, second) = (_mm512_shuffle_epi8(first, split), _mm512_shuffle_epi8(second, split));
            let even = _mm512_permutex2var_epi64(first, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), second);
            let odd = _mm512_permutex2var_epi64(first, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), second);
            (even, odd, S::quad(scales, present))
        }
    }

    /// `maddubs` multiplies unsigned bytes by signed ones and would saturate on whole stored
    /// bytes (up to 255): the weights go in as `q − 128`, signed, their magnitude on the
    /// unsigned side and their sign moved onto the activations (`|w| · sign(x, w) = w · x`, each
    /// 16-bit pair sum at most 2 × 128 × 127). That sum already holds the zero point, exactly
    /// the `zero_point` + `q · x` of the other paths, so `zero_point` is not read.
    #[inline(always)]
    unsafe fn dot_avx2(_zero_point: __m256i, even: __m256i, x_even: __m256i, odd: __m256i, x_odd: __m256i) -> __m256i {
        // SAFETY: the caller's tile runs with AVX2.
        unsafe {
            let flip = _mm256_set1_epi8(i8::MIN);
            let (even, odd) = (_mm256_xor_si256(even, flip), _mm256_xor_si256(odd, flip));
            let evens = _mm256_maddubs_epi16(_mm256_abs_epi8(even), _mm256_sign_epi8(x_even, even));
            let odds = _mm256_maddubs_epi16(_mm256_abs_epi8(odd), _mm256_sign_epi8(x_odd, odd));
            // Two pair sums may not fit 16 bits together: each is widened first.
            let ones = _mm256_set1_epi16(1);
            _mm256_add_epi32(_mm256_madd_epi16(evens, ones), _mm256_madd_epi16(odds, ones))
        }
    }
}

/// Where a register tile's operands start: the weights of output `column` and the activations
/// of `row` (see `Activations`).
#[cfg(target_arch = "x86_64")]
struct TileStart<S> {
    packed: *const u8,
    scales: *const S,
    values: *const i8,
    zero_points: *const i32,
    lane_scales: *const f32,
}

#[cfg(target_arch = "x86_64")]
impl<S: Scale> TileStart<S> {
    /// # Safety
    /// `row` and `column` are within the activations and the weights.
    #[inline(always)]
    unsafe fn new(weights: &Weights<'_, S>, activations: &Activations, row: usize, column: usize) -> TileStart<S> {
        let (blocks, group) = (weights.blocks, activations.group);
        let lanes = row * activations.steps * 4 * group;
        // SAFETY: the caller's bounds.
        unsafe {
            TileStart {
                packed: weights.packed.as_ptr().add(column * blocks * weights.bits.block_bytes()),
                scales: weights.scales.as_ptr().add(column * blocks),
                values: activations.values.as_ptr().add(row * activations.steps * group * BLOCK),
                zero_points: activations.zero_points.as_ptr().add(lanes),
                lane_scales: activations.lane_scales.as_ptr().add(lanes),
            }
        }
    }
}

/// The register tile: `R` rows × `C` outputs, one accumulator each; each pair of weight blocks
/// is unpacked once for the `R` rows. `$dot` is the integer dot product of a pair of blocks of
/// one row, the zero points folded in (exact: every path gives the same sums).
#[cfg(target_arch = "x86_64")]
macro_rules! tile {
    ($name:ident, $features:literal, $dot:expr) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<F: Format, S: Scale, const R: usize, const C: usize>(
            weights: &Weights<'_, S>,
            activations: &Activations,
            row: usize,
            column: usize,
            results: &mut [[f32; TILE_ROWS]],
        ) {
            let (blocks, pairs) = (weights.blocks, activations.steps);
            debug_assert_eq!(activations.group, 2);
            debug_assert!(column + C <= weights.outputs && (row + R) * pairs * LANES <= activations.lane_scales.len());
            let mut acc = [[_mm256_setzero_ps(); R]; C];
            // SAFETY (whole body): the caller's tile lies within the weights and activations
            // (`multiply` checked their lengths), so every offset below is in bounds.
            unsafe {
                let TileStart { packed, scales, values, zero_points, lane_scales } =
                    TileStart::new(weights, activations, row, column);
                for pair in 0..pairs {
                    let complete = 2 * pair + 1 < blocks;
                    let weights: [_; C] = std::array::from_fn(|c| {
                        let block = c * blocks + 2 * pair;
                        // The weights stream from memory: ask for those of a later tile now.
                        let ahead = packed.add(block * F::BLOCK_BYTES).wrapping_add(PREFETCH_BYTES);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                        _mm_prefetch::<_MM_HINT_T0>(scales.add(block).wrapping_add(PREFETCH_BYTES / 4).cast());
                        F::unpack_pair(packed.add(block * F::BLOCK_BYTES), scales.add(block), complete)
                    });
                    for r in 0..R {
                        let at = r * pairs + pair;
                        let x_even = _mm256_loadu_si256(values.add(at * 2 * BLOCK).cast());
                        let x_odd = _mm256_loadu_si256(values.add(at * 2 * BLOCK + BLOCK).cast());
                        let zero_point = F::zero_points_256(_mm256_loadu_si256(zero_points.add(at * LANES).cast()));
                        let row_scale = _mm256_loadu_ps(lane_scales.add(at * LANES));
                        for (c, &(even, odd, scale)) in weights.iter().enumerate() {
                            let sum = $dot(zero_point, even, x_even, odd, x_odd);
                            let factor = _mm256_mul_ps(scale, row_scale);
                            acc[c][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), factor, acc[c][r]);
                        }
                    }
                }
                for c in 0..C {
                    for r in 0..R {
                        results[c][r] = reduce_avx(acc[c][r]);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
tile!(dot_avx2, "avx2,fma,f16c", |zero_point, even, x_even, odd, x_odd| F::dot_avx2(
    zero_point, even, x_even, odd, x_odd
));

#[cfg(target_arch = "x86_64")]
tile!(dot_vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", |zero_point, even, x_even, odd, x_odd| {
    _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero_point, even, x_even), odd, x_odd)
});

/// The register tile of the 512-bit path: `tile!`'s, four blocks per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed by column and row, as in `tile!`
unsafe fn dot_vnni512<F: Format, S: Scale, const R: usize, const C: usize>(
    weights: &Weights<'_, S>,
    activations: &Activations,
    row: usize,
    column: usize,
    results: &mut [[f32; TILE_ROWS]],
) {
    let (blocks, steps) = (weights.blocks, activations.steps);
    debug_assert_eq!(activations.group, MAX_GROUP);
    debug_assert!(column + C <= weights.outputs && (row + R) * steps * 16 <= activations.lane_scales.len());
    let mut acc = [[_mm512_setzero_ps(); R]; C];
    // SAFETY (whole body): the caller's tile lies within the weights and activations
    // (`multiply` checked their lengths), the loads of a step past the last block are masked,
    // so every access below is in bounds.
    unsafe {
        let TileStart { packed, scales, values, zero_points, lane_scales } =
            TileStart::new(weights, activations, row, column);
        for step in 0..steps {
            let present = (blocks - MAX_GROUP * step).min(MAX_GROUP);
            let weights: [_; C] = std::array::from_fn(|c| {
                let block = c * blocks + MAX_GROUP * step;
                let ahead = packed.add(block * F::BLOCK_BYTES).wrapping_add(PREFETCH_BYTES);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(scales.add(block).wrapping_add(PREFETCH_BYTES / 4).cast());
                F::unpack_quad(packed.add(block * F::BLOCK_BYTES), scales.add(block), present)
            });
            for r in 0..R {
                let at = r * steps + step;
                let x_even = _mm512_loadu_si512(values.add(at * MAX_GROUP * BLOCK).cast());
                let x_odd = _mm512_loadu_si512(values.add(at * MAX_GROUP * BLOCK + 2 * BLOCK).cast());
                let zero_point = F::zero_points_512(_mm512_loadu_si512(zero_points.add(at * 16).cast()));
                let row_scale = _mm512_loadu_ps(lane_scales.add(at * 16));
                for (c, &(even, odd, scale)) in weights.iter().enumerate() {
                    let sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero_point, even, x_even), odd, x_odd);
                    let factor = _mm512_mul_ps(scale, row_scale);
                    acc[c][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), factor, acc[c][r]);
                }
            }
        }
        for c in 0..C {
            for r in 0..R {
                let lower = _mm512_castps512_ps256(acc[c][r]);
                let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[c][r])));
                results[c][r] = reduce_avx(_mm256_add_ps(lower, upper));
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

    struct Layer {
        bits: Bits,
        outputs: usize,
        blocks: usize,
        packed: Vec<u8>,
        scales: Vec<f32>,
        offsets: Vec<f32>,
    }

    impl Layer {
        /// 4-bit weights.
        fn new(outputs: usize, inputs: usize, seed: u64) -> Layer {
            Layer::with_bits(Bits::Four, outputs, inputs, seed)
        }

        fn with_bits(bits: Bits, outputs: usize, inputs: usize, seed: u64) -> Layer {
            let blocks = inputs / BLOCK;
            let mut noise = Noise(seed);
            Layer {
                bits,
                outputs,
                blocks,
                packed: noise.bytes(outputs * blocks * bits.block_bytes()),
                scales: noise.floats(outputs * blocks, 0.02),
                offsets: noise.floats(blocks * outputs, 0.05),
            }
        }

        fn weights(&self) -> Weights<'_> {
            Weights {
                bits: self.bits,
                outputs: self.outputs,
                blocks: self.blocks,
                packed: &self.packed,
                scales: &self.scales,
                offsets: Some(&self.offsets),
            }
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

    /// The SIMD paths this machine can run: AVX2, and the VNNI ones where AVX-512 has them.
    fn simd_paths() -> Vec<Path> {
        let detected = Path::detect();
        [
            (Path::Avx2, avx2_fma_f16c()),
            (Path::Vnni, matches!(detected, Path::Vnni | Path::Vnni512)),
            (Path::Vnni512, detected == Path::Vnni512),
        ]
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
            let group = Path::detect().group();
            let activations = quantize(&x, total, weights.blocks, (Path::Portable, group), &sequential);
            for row in [0, 5, 77, 149] {
                for n in [0, 1, 63, 64, 199] {
                    let mut expected = dot_portable(&weights, &activations, row, n);
                    let sums = &activations.sums[row * weights.blocks..][..weights.blocks];
                    let out = std::slice::from_mut(&mut expected);
                    add_offsets(Path::Portable, out, sums, &layer.offsets, outputs, n);
                    let path = Path::detect();
                    assert_eq!(whole[row * outputs + n], expected, "{bits:?}: row {row} output {n} on {path:?}");
                }
            }
        }
    }

    /// One or two rows' units cover every output once, in an even number of non-empty units of
    /// a multiple of four outputs, of about `STREAM_COLUMNS` where a node has enough outputs.
    #[test]
    fn stream_units_are_even_and_cover_every_output() {
        for outputs in [1, 3, 8, 200, 576, 960, 1536, 3072, 49152] {
            let width = stream_columns(outputs);
            let units = outputs.div_ceil(width);
            assert!(width.is_multiple_of(4), "{outputs}: width {width}");
            assert!((units - 1) * width < outputs, "{outputs}: an empty unit");
            assert!(units.is_multiple_of(2) || units == 1, "{outputs}: {units} units");
            if outputs >= 2 * STREAM_COLUMNS {
                assert!(width <= STREAM_COLUMNS * 2 && width * 2 >= STREAM_COLUMNS, "{outputs}: width {width}");
            }
        }
        assert_eq!([576, 960, 3072, 49152].map(stream_columns), [288, 480, 512, 512]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_and_vnni_paths_agree_bit_for_bit() {
        if !matches!(Path::detect(), Path::Vnni | Path::Vnni512) {
            eprintln!("no AVX-512 VNNI: nothing to compare");
            return;
        }
        for bits in BOTH {
            let layer = Layer::with_bits(bits, 96, 576, 12);
            let x = Noise(13).floats(7 * 576, 2.0);
            let activations = quantize(&x, 7, layer.blocks, (Path::Avx2, 2), &sequential);
            let (mut avx2, mut vnni) = ([[0.0; TILE_ROWS]; 4], [[0.0; TILE_ROWS]; 4]);
            for (rows, columns) in [((0, 4), (0, 2)), ((4, 3), (8, 4)), ((6, 1), (90, 4))] {
                dot_tile(Path::Avx2, &layer.weights(), &activations, rows, columns, &mut avx2);
                dot_tile(Path::Vnni, &layer.weights(), &activations, rows, columns, &mut vnni);
                assert_eq!(avx2, vnni, "{bits:?}");
            }
        }
    }

    /// Each SIMD path this machine has gives the bits of the plain-Rust mirror of its order
    /// (four blocks per step on the 512-bit path, two on the others), for both widths of
    /// weights, block counts that fill the last step and that do not, in every tile shape, and
    /// for the largest sums there are (every weight and value at its extreme: no integer sum
    /// may saturate).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_path_gives_the_bits_of_its_portable_mirror() {
        let paths = simd_paths();
        if paths.is_empty() {
            return;
        }
        let cases = [(1, 20), (3, 21), (18, 22), (48, 23), (6, 24), (5, 0)];
        for (bits, (blocks, seed)) in BOTH.into_iter().flat_map(|bits| cases.map(|case| (bits, case))) {
            let mut layer = Layer::with_bits(bits, 12, blocks * BLOCK, seed);
            let mut x = Noise(seed + 50).floats(5 * blocks * BLOCK, 2.0);
            if seed == 0 {
                // Extremes: the largest stored weights against ±127, and the smallest.
                let half = layer.packed.len() / 2;
                layer.packed[..half].fill(0xff);
                layer.packed[half..].fill(0);
                x.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 64 < 32 { 2.0 } else { -2.0 });
            }
            for &path in &paths {
                let simd = quantize(&x, 5, blocks, (path, path.group()), &sequential);
                let mirror = quantize(&x, 5, blocks, (Path::Portable, path.group()), &sequential);
                for (rows, columns) in
                    [((0, 4), (0, 2)), ((1, 4), (3, 1)), ((2, 3), (4, 4)), ((3, 2), (8, 4)), ((4, 1), (5, 4))]
                {
                    let mut got = [[0.0; TILE_ROWS]; 4];
                    dot_tile(path, &layer.weights(), &simd, rows, columns, &mut got);
                    for (c, got) in got.iter().enumerate().take(columns.1) {
                        for (r, &got) in got.iter().enumerate().take(rows.1) {
                            let (row, output) = (rows.0 + r, columns.0 + c);
                            let expected = dot_portable(&layer.weights(), &mirror, row, output);
                            let case = format!("{bits:?} on {path:?}, {blocks} blocks, row {row} output {output}");
                            assert_eq!(got, expected, "{case}");
                        }
                    }
                }
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
            let narrow = Weights {
                bits,
                outputs,
                blocks,
                packed: &layer.packed,
                scales: &scales[..],
                offsets: Some(&offsets[..]),
            };
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

    /// The offsets term gives the plain chain's bits however many outputs a call covers (the
    /// four-chain stretches, the single ones and the tail).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vector_offsets_term_gives_the_plain_ones_bits() {
        if !avx2_fma_f16c() {
            return;
        }
        let mut noise = Noise(91);
        let (blocks, outputs) = (48, 100);
        let (sums, offsets) = (noise.floats(blocks, 40.0), noise.floats(blocks * outputs, 0.05));
        for (first, len) in [(0, 100), (3, 97), (0, 64), (7, 33), (20, 8), (50, 5), (64, 36)] {
            let start = noise.floats(len, 1.0);
            let (mut simd, mut plain) = (start.clone(), start);
            add_offsets(Path::Avx2, &mut simd, &sums, &offsets, outputs, first);
            add_offsets_portable(&mut plain, &sums, &offsets, outputs, first);
            assert_eq!(simd, plain, "outputs {first}..{}", first + len);
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

    /// The AVX2 quantizer gives the plain one's bits: values, their order, zero points, scale
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
            for (group, part) in [(2, 0), (2, 1), (4, 3)] {
                let (mut plain, mut vector) = (vec![99i8; group * BLOCK], vec![99i8; group * BLOCK]);
                let (mut plain_points, mut vector_points) = ([5i32; 4], [5i32; 4]);
                let expected = quantize_block(block, &mut plain, part, &mut plain_points);
                // SAFETY: AVX2 and FMA are present (checked above).
                let got = unsafe { quantize_block_avx2(block, &mut vector, part, &mut vector_points) };
                assert_eq!(got.0.to_bits(), expected.0.to_bits(), "block {index}: scale");
                assert_eq!(got.1.to_bits(), expected.1.to_bits(), "block {index}: sum");
                assert_eq!(vector, plain, "block {index}: values");
                assert_eq!(vector_points, plain_points, "block {index}: zero points");
            }
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
            let (blocks, group) = (inputs / BLOCK, path.group());
            let mut activations = quantize(&x, 1, blocks, (path, group), &sequential);
            let mut times: Vec<f64> = (0..2000)
                .map(|_| {
                    let start = crate::engine::kernels::thread_cpu_seconds();
                    for _ in 0..10 {
                        quantize_into(&mut activations, &x, 1, blocks, (path, group), &sequential);
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
        let narrow: Vec<_> = wide.iter().map(|v| narrow_exactly(v).expect("exact")).map(|v| (v.clone(), v)).collect();
        let wide: Vec<_> = wide.into_iter().map(|v| (v.clone(), v)).collect();
        /// The time per projection of one pass over them (the offsets: a copy of the scales).
        fn per_layer<S: Scale>(packed: &[Vec<u8>], scales: &[(Vec<S>, Vec<S>)], x: &[f32], outputs: usize) -> f64 {
            let blocks = packed[0].len() / outputs / Bits::Four.block_bytes();
            let rows = x.len() / (blocks * BLOCK);
            let mut out = vec![0.0; rows * outputs];
            let start = crate::engine::kernels::thread_cpu_seconds();
            for (packed, (scales, offsets)) in packed.iter().zip(scales) {
                let weights = Weights { bits: Bits::Four, outputs, blocks, packed, scales, offsets: Some(offsets) };
                multiply_on(Path::detect(), &weights, x, rows, &mut out, &|count, unit| (0..count).for_each(unit));
            }
            (crate::engine::kernels::thread_cpu_seconds() - start) * 1e3 / packed.len() as f64
        }
        /// The time per projection of one load of every cache line of its bytes.
        fn plain_read(packed: &[Vec<u8>], scales: &[(Vec<half::f16>, Vec<half::f16>)]) -> f64 {
            let start = crate::engine::kernels::thread_cpu_seconds();
            let mut total = 0u64;
            for (packed, (scales, offsets)) in packed.iter().zip(scales) {
                let halves = scales.iter().chain(offsets).step_by(32).map(|half| u64::from(half.to_bits()));
                let lines = packed.chunks(64).map(|line| u64::from(line[0]));
                total = lines.chain(halves).fold(total, u64::wrapping_add);
            }
            std::hint::black_box(total);
            (crate::engine::kernels::thread_cpu_seconds() - start) * 1e3 / packed.len() as f64
        }
        for (rows, passes) in [(1, 40), (4, 20), (9, 10), (64, 4)] {
            let x: Vec<f32> = (0..rows * inputs).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
            let (mut f32_times, mut f16_times, mut read_times) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..passes {
                f32_times.push(per_layer(&packed, &wide, &x, outputs));
                f16_times.push(per_layer(&packed, &narrow, &x, outputs));
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
            let weights = Weights { bits, outputs, blocks, packed: &packed, scales: &scales, offsets };
            let paths = match Path::detect() {
                Path::Vnni512 => vec![Path::Vnni512, Path::Vnni],
                path => vec![path],
            };
            let rows = if bits == Bits::Four { &[1usize, 2, 8, 128][..] } else { &[1, 2, 8] };
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
