//! Reed-Solomon erasure coding over GF(2^8) for the object store (book
//! chapter 9): `k` data shards, `m` parity shards (default 4+2), any `k` of
//! the `k + m` shards give the data back. Pure Rust; the Python bindings
//! (`sdi._rust.ec`) and `sdi.objstore.ec` build on it.
//!
//! # The code
//!
//! The field is GF(2^8) with the polynomial 0x11D and the encoding matrix is
//! ISA-L's `gf_gen_cauchy1_matrix` (`[I; C]` with `C[i][j] = 1 / (i ^ j)`,
//! see [`gf::generator`]), so the parity is byte for byte what ISA-L's
//! `ec_encode_data` computes with that matrix (`tests/objstore/test_ec.py`
//! checks it against the ISA-L in pyeclib's wheel). Every `k x k`
//! submatrix of the generator is invertible for `k + m <= 255`, so
//! [`Codec::reconstruct`] can rebuild from any `k` shards.
//!
//! # Speed
//!
//! Parity and rebuilt shards are dot products over the source shards,
//! computed by the fastest [`Kernel`] the CPU has (GFNI + AVX-512, AVX-512
//! nibble tables, AVX2 with or without GFNI, scalar), detected once; a
//! kernel is only picked after a self-test against the scalar kernel
//! ([`Kernel::passes_self_test`]). Every output row of a pass (up to six)
//! is accumulated in registers while the sources are read once, as ISA-L
//! does.
//!
//! # Checksums
//!
//! [`checksum`] (CRC-32C) per shard lets a reader find a rotten shard,
//! treat it as missing ([`intact`]) and rebuild it instead of serving it.
//!
//! ```
//! use sdi_ec::Codec;
//!
//! let codec = Codec::new(4, 2).unwrap();
//! let data: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8 * 17; 1000]).collect();
//! let mut parity = vec![vec![0u8; 1000]; 2];
//! let sources: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
//! let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
//! codec.encode(&sources, &mut outputs).unwrap();
//!
//! // Lose two shards, get them back.
//! let mut shards: Vec<Option<Vec<u8>>> =
//!     data.iter().chain(&parity).cloned().map(Some).collect();
//! shards[1] = None;
//! shards[4] = None;
//! codec.reconstruct(&mut shards).unwrap();
//! assert_eq!(shards[1].as_deref(), Some(&data[1][..]));
//! assert_eq!(shards[4].as_deref(), Some(&parity[0][..]));
//! ```

pub mod gf;
mod kernels;

pub use kernels::{Kernel, ROWS_PER_PASS};
use kernels::{KernelFn, Tables};

/// The most shards a stripe can have (`k + m`).
pub const SHARDS_MAX: usize = 255;

/// What an erasure-coding call can fail with. No call panics on bad input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `k` or `m` out of range.
    #[error(
        "a code needs k >= 1 data shards and k + m <= {SHARDS_MAX} shards in all; got k={k}, m={m}"
    )]
    InvalidParameters { k: usize, m: usize },
    /// The wrong number of shards (or checksums) for the code.
    #[error("expected {expected} {what}, got {got}")]
    ShardCount {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Shards of one stripe differ in length.
    #[error("{what} {index} is {got} bytes but the stripe's shards are {expected} bytes; every shard of a stripe has the same length")]
    ShardLength {
        what: &'static str,
        index: usize,
        expected: usize,
        got: usize,
    },
    /// A contiguous buffer has the wrong size.
    #[error("{what} is {got} bytes; {expected}")]
    BufferLength {
        what: &'static str,
        expected: String,
        got: usize,
    },
    /// A shard index past `k + m`.
    #[error("shard index {index} is out of range for a stripe of {total} shards")]
    ShardIndex { index: usize, total: usize },
    /// Fewer than `k` shards are present: the stripe cannot be rebuilt.
    #[error("only {present} of the {total} shards are present (or intact); {needed} are needed to rebuild the stripe")]
    TooFewShards {
        present: usize,
        needed: usize,
        total: usize,
    },
    /// The asked-for kernel needs CPU features this machine lacks (or
    /// failed its self-test, see [`Kernel::passes_self_test`]).
    #[error("the {0} kernel needs CPU features this machine does not have (or failed its self-test); usable here: {1}")]
    KernelUnsupported(&'static str, String),
    /// The decoding matrix was singular: cannot happen for this code, so a bug.
    #[error("the decoding matrix for shards {0:?} is singular (a bug in sdi-ec)")]
    Singular(Vec<usize>),
}

/// CRC-32C (Castagnoli) of one shard, hardware-accelerated where the CPU has it.
pub fn checksum(shard: &[u8]) -> u32 {
    crc32c::crc32c(shard)
}

/// [`checksum`] of each shard.
pub fn checksums(shards: &[&[u8]]) -> Vec<u32> {
    shards.iter().map(|shard| checksum(shard)).collect()
}

/// Which shards still match their recorded checksums: `true` for intact.
/// Feed the result to [`Codec::reconstruct_in_place`] as the present mask to
/// rebuild the rotten ones.
pub fn intact(shards: &[&[u8]], sums: &[u32]) -> Result<Vec<bool>, Error> {
    if shards.len() != sums.len() {
        return Err(Error::ShardCount {
            what: "checksums (one per shard)",
            expected: shards.len(),
            got: sums.len(),
        });
    }
    Ok(shards
        .iter()
        .zip(sums)
        .map(|(shard, &sum)| checksum(shard) == sum)
        .collect())
}

/// A Reed-Solomon code with `k` data and `m` parity shards.
#[derive(Clone)]
pub struct Codec {
    k: usize,
    m: usize,
    /// `(k + m) x k`, row-major.
    generator: Vec<u8>,
    /// The parity rows of `generator`, prepared for the kernels.
    parity: Tables,
    kernel: Kernel,
    entry: KernelFn,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("k", &self.k)
            .field("m", &self.m)
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl Codec {
    /// A `k + m` code using the fastest kernel this CPU supports.
    pub fn new(k: usize, m: usize) -> Result<Codec, Error> {
        Codec::with_kernel(k, m, Kernel::best())
    }

    /// A `k + m` code using `kernel` (for tests and benchmarks); fails if
    /// the CPU cannot run it.
    pub fn with_kernel(k: usize, m: usize, kernel: Kernel) -> Result<Codec, Error> {
        if k == 0 || k.saturating_add(m) > SHARDS_MAX {
            return Err(Error::InvalidParameters { k, m });
        }
        if !kernel.passes_self_test() {
            let names: Vec<&str> = Kernel::supported()
                .into_iter()
                .filter(|kernel| kernel.passes_self_test())
                .map(Kernel::name)
                .collect();
            return Err(Error::KernelUnsupported(kernel.name(), names.join(", ")));
        }
        let generator = gf::generator(k, m);
        let parity = Tables::new(m, k, generator[k * k..].to_vec());
        Ok(Codec {
            k,
            m,
            generator,
            parity,
            kernel,
            entry: kernel.entry(),
        })
    }

    /// The number of data shards.
    pub fn data_shards(&self) -> usize {
        self.k
    }

    /// The number of parity shards.
    pub fn parity_shards(&self) -> usize {
        self.m
    }

    /// `k + m`.
    pub fn total_shards(&self) -> usize {
        self.k + self.m
    }

    /// The kernel this codec runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The `(k + m) x k` generator matrix, row-major (identity rows first).
    pub fn generator(&self) -> &[u8] {
        &self.generator
    }

    /// Computes the `m` parity shards of the `k` data shards. All shards have
    /// the same length (any length, zero included).
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), Error> {
        check_count("data shards", self.k, data.len())?;
        check_count("parity shards", self.m, parity.len())?;
        let len = data[0].len();
        check_lengths("data shard", data.iter().map(|s| s.len()), len)?;
        check_lengths("parity shard", parity.iter().map(|s| s.len()), len)?;
        let srcs: Vec<*const u8> = data.iter().map(|s| s.as_ptr()).collect();
        let dsts: Vec<*mut u8> = parity.iter_mut().map(|s| s.as_mut_ptr()).collect();
        // SAFETY: `srcs` point into `k` shared slices of `len` bytes and
        // `dsts` into `m` exclusive ones of the same length, so they are valid
        // and no destination aliases a source or another destination (the
        // borrow rules); `self.entry` was checked supported in `with_kernel`;
        // `self.parity` is `m x k`.
        unsafe { kernels::run(self.entry, &self.parity, &srcs, &dsts, len) };
        Ok(())
    }

    /// [`Codec::encode`] over contiguous buffers: `data` holds the `k` data
    /// shards back to back (`k * shard_len` bytes) and `parity` receives the
    /// `m` parity shards back to back (`m * shard_len` bytes). Returns `shard_len`.
    pub fn encode_stripe(&self, data: &[u8], parity: &mut [u8]) -> Result<usize, Error> {
        if !data.len().is_multiple_of(self.k) {
            return Err(Error::BufferLength {
                what: "the data buffer",
                expected: format!("it must hold k={} shards of equal length", self.k),
                got: data.len(),
            });
        }
        let shard_len = data.len() / self.k;
        if parity.len() != self.m * shard_len {
            return Err(Error::BufferLength {
                what: "the parity buffer",
                expected: format!(
                    "it must hold m={} shards of {shard_len} bytes ({} bytes)",
                    self.m,
                    self.m * shard_len
                ),
                got: parity.len(),
            });
        }
        if shard_len == 0 {
            return Ok(0);
        }
        let data: Vec<&[u8]> = data.chunks_exact(shard_len).collect();
        let mut parity: Vec<&mut [u8]> = parity.chunks_exact_mut(shard_len).collect();
        self.encode(&data, &mut parity)?;
        Ok(shard_len)
    }

    /// Whether the parity shards match the data shards: `shards` are all
    /// `k + m` shards, data first.
    pub fn verify(&self, shards: &[&[u8]]) -> Result<bool, Error> {
        check_count("shards (data then parity)", self.k + self.m, shards.len())?;
        let len = shards[0].len();
        check_lengths("shard", shards.iter().map(|s| s.len()), len)?;
        const BLOCK: usize = 64 << 10;
        let mut scratch = vec![0u8; self.m * BLOCK.min(len)];
        let mut start = 0;
        while start < len {
            let end = len.min(start + BLOCK);
            let data: Vec<&[u8]> = shards[..self.k].iter().map(|s| &s[start..end]).collect();
            let mut outputs: Vec<&mut [u8]> = scratch.chunks_mut(BLOCK.min(len)).collect();
            let mut outputs: Vec<&mut [u8]> =
                outputs.iter_mut().map(|o| &mut o[..end - start]).collect();
            self.encode(&data, &mut outputs)?;
            for (computed, stored) in outputs.iter().zip(&shards[self.k..]) {
                if **computed != stored[start..end] {
                    return Ok(false);
                }
            }
            start = end;
        }
        Ok(true)
    }

    /// Rebuilds every missing shard (data and parity) from the present ones.
    /// `shards` are all `k + m` shards, data first, `None` where missing;
    /// the present ones must have one length. At least `k` must be present.
    pub fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), Error> {
        self.reconstruct_options(shards, false)
    }

    /// Like [`Codec::reconstruct`] but rebuilds only the missing data
    /// shards (what a read needs); missing parity shards stay `None`.
    pub fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), Error> {
        self.reconstruct_options(shards, true)
    }

    fn reconstruct_options(
        &self,
        shards: &mut [Option<Vec<u8>>],
        data_only: bool,
    ) -> Result<(), Error> {
        check_count("shards (data then parity)", self.k + self.m, shards.len())?;
        let len = shards.iter().flatten().map(Vec::len).next().unwrap_or(0);
        let wanted: Vec<usize> = (0..shards.len())
            .filter(|&i| shards[i].is_none() && (!data_only || i < self.k))
            .collect();
        let mut rebuilt: Vec<Vec<u8>> = Vec::new();
        {
            let sources: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
            self.check_sources(&sources)?;
            rebuilt.resize(wanted.len(), vec![0u8; len]);
            let mut targets: Vec<(usize, &mut [u8])> = wanted
                .iter()
                .copied()
                .zip(rebuilt.iter_mut().map(Vec::as_mut_slice))
                .collect();
            self.reconstruct_into(&sources, &mut targets)?;
        }
        for (index, shard) in wanted.into_iter().zip(rebuilt) {
            shards[index] = Some(shard);
        }
        Ok(())
    }

    /// Rebuilds the shards named in `targets` (shard index, destination)
    /// from `shards`, all `k + m` of them, data first, `None` where missing.
    /// The general form under the other reconstruct calls: sources and
    /// destinations are separate buffers, so the present shards are only
    /// read. Destinations have the shards' length; any index may be asked
    /// for, present or not, data or parity.
    pub fn reconstruct_into(
        &self,
        shards: &[Option<&[u8]>],
        targets: &mut [(usize, &mut [u8])],
    ) -> Result<(), Error> {
        let (k, n) = (self.k, self.k + self.m);
        let len = self.check_sources(shards)?;
        for (index, output) in targets.iter() {
            if *index >= n {
                return Err(Error::ShardIndex {
                    index: *index,
                    total: n,
                });
            }
            if output.len() != len {
                return Err(Error::ShardLength {
                    what: "the output for shard",
                    index: *index,
                    expected: len,
                    got: output.len(),
                });
            }
        }
        if targets.is_empty() || len == 0 {
            return Ok(());
        }
        let chosen: Vec<usize> = (0..n).filter(|&i| shards[i].is_some()).take(k).collect();
        // Rows of the generator for the chosen shards: their k x k matrix
        // maps the data to them, so its inverse maps them back to the data,
        // and a parity row times the inverse maps them to that parity.
        let mut sub = Vec::with_capacity(k * k);
        for &i in &chosen {
            sub.extend_from_slice(&self.generator[i * k..(i + 1) * k]);
        }
        let decode = gf::invert(&sub, k).ok_or_else(|| Error::Singular(chosen.clone()))?;
        let mut coef = Vec::with_capacity(targets.len() * k);
        for &(t, _) in targets.iter() {
            if t < k {
                coef.extend_from_slice(&decode[t * k..(t + 1) * k]);
            } else {
                coef.extend(gf::row_times(
                    &self.generator[t * k..(t + 1) * k],
                    &decode,
                    k,
                ));
            }
        }
        let tables = Tables::new(targets.len(), k, coef);
        let srcs: Vec<*const u8> = chosen
            .iter()
            .filter_map(|&i| shards[i].map(<[u8]>::as_ptr))
            .collect();
        let dsts: Vec<*mut u8> = targets
            .iter_mut()
            .map(|(_, out)| out.as_mut_ptr())
            .collect();
        // SAFETY: the sources are `k` shared slices and the destinations
        // exclusive ones, all of `len` bytes (checked above), so every pointer
        // is valid and no destination aliases a source or another destination
        // (the borrow rules); `tables` is `targets.len() x k`; the kernel was
        // checked supported in `with_kernel`.
        unsafe { kernels::run(self.entry, &tables, &srcs, &dsts, len) };
        Ok(())
    }

    /// Checks `shards` (all `k + m`, data first, `None` where missing) for
    /// [`Codec::reconstruct_into`]: one length, at least `k` present.
    /// Returns the shards' length.
    pub fn check_sources(&self, shards: &[Option<&[u8]>]) -> Result<usize, Error> {
        check_count("shards (data then parity)", self.k + self.m, shards.len())?;
        let len = shards.iter().flatten().map(|s| s.len()).next().unwrap_or(0);
        let mut present = 0;
        for (index, shard) in shards.iter().enumerate() {
            if let Some(shard) = shard {
                present += 1;
                if shard.len() != len {
                    return Err(Error::ShardLength {
                        what: "shard",
                        index,
                        expected: len,
                        got: shard.len(),
                    });
                }
            }
        }
        if present < self.k {
            return Err(self.too_few(present));
        }
        Ok(len)
    }

    /// Rebuilds in place: `shards` are all `k + m` shards of one length,
    /// data first, and `present[i]` says whether shard `i` holds good bytes.
    /// Every shard not present is overwritten with its rebuilt content.
    pub fn reconstruct_in_place(
        &self,
        shards: &mut [&mut [u8]],
        present: &[bool],
    ) -> Result<(), Error> {
        self.rebuild(shards, present, false)
    }

    /// Like [`Codec::reconstruct_in_place`] but rebuilds only the missing
    /// data shards; the missing parity shards are left as they are.
    pub fn reconstruct_data_in_place(
        &self,
        shards: &mut [&mut [u8]],
        present: &[bool],
    ) -> Result<(), Error> {
        self.rebuild(shards, present, true)
    }

    /// [`Codec::reconstruct_in_place`] over one contiguous buffer holding
    /// the `k + m` shards back to back. With `data_only`, only the missing
    /// data shards are rebuilt. Returns the shard length.
    pub fn reconstruct_stripe(
        &self,
        stripe: &mut [u8],
        present: &[bool],
        data_only: bool,
    ) -> Result<usize, Error> {
        let n = self.k + self.m;
        if !stripe.len().is_multiple_of(n) {
            return Err(Error::BufferLength {
                what: "the stripe buffer",
                expected: format!("it must hold k + m = {n} shards of equal length"),
                got: stripe.len(),
            });
        }
        let shard_len = stripe.len() / n;
        if shard_len == 0 {
            check_count("present flags (one per shard)", n, present.len())?;
            let count = present.iter().filter(|&&p| p).count();
            return if count < self.k {
                Err(self.too_few(count))
            } else {
                Ok(0)
            };
        }
        let mut shards: Vec<&mut [u8]> = stripe.chunks_exact_mut(shard_len).collect();
        self.rebuild(&mut shards, present, data_only)?;
        Ok(shard_len)
    }

    fn too_few(&self, present: usize) -> Error {
        Error::TooFewShards {
            present,
            needed: self.k,
            total: self.k + self.m,
        }
    }

    fn rebuild(
        &self,
        shards: &mut [&mut [u8]],
        present: &[bool],
        data_only: bool,
    ) -> Result<(), Error> {
        let n = self.k + self.m;
        check_count("shards (data then parity)", n, shards.len())?;
        check_count("present flags (one per shard)", n, present.len())?;
        check_lengths("shard", shards.iter().map(|s| s.len()), shards[0].len())?;
        let mut sources: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut targets: Vec<(usize, &mut [u8])> = Vec::new();
        for (index, shard) in shards.iter_mut().enumerate() {
            if present[index] {
                sources.push(Some(&**shard));
            } else {
                sources.push(None);
                if !data_only || index < self.k {
                    targets.push((index, &mut **shard));
                }
            }
        }
        self.reconstruct_into(&sources, &mut targets)
    }
}

fn check_count(what: &'static str, expected: usize, got: usize) -> Result<(), Error> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::ShardCount {
            what,
            expected,
            got,
        })
    }
}

fn check_lengths(
    what: &'static str,
    lengths: impl Iterator<Item = usize>,
    expected: usize,
) -> Result<(), Error> {
    for (index, got) in lengths.enumerate() {
        if got != expected {
            return Err(Error::ShardLength {
                what,
                index,
                expected,
                got,
            });
        }
    }
    Ok(())
}

#[doc(hidden)]
pub mod testing {
    //! Entry points for the crate's tests and benches: run one kernel on
    //! an arbitrary coefficient matrix, next to a plain reference.

    use super::{gf, kernels, Error, Kernel};

    /// `dsts[r] = xor over j of coef[r * srcs.len() + j] * srcs[j]` with `kernel`.
    pub fn dot_prod(
        kernel: Kernel,
        coef: &[u8],
        srcs: &[&[u8]],
        dsts: &mut [&mut [u8]],
    ) -> Result<(), Error> {
        if !kernel.is_supported() {
            return Err(Error::KernelUnsupported(kernel.name(), String::new()));
        }
        let (rows, cols) = (dsts.len(), srcs.len());
        if coef.len() != rows * cols || cols == 0 {
            return Err(Error::ShardCount {
                what: "coefficients",
                expected: rows * cols,
                got: coef.len(),
            });
        }
        let len = srcs[0].len();
        super::check_lengths("source", srcs.iter().map(|s| s.len()), len)?;
        super::check_lengths("destination", dsts.iter().map(|s| s.len()), len)?;
        let tables = kernels::Tables::new(rows, cols, coef.to_vec());
        let sp: Vec<*const u8> = srcs.iter().map(|s| s.as_ptr()).collect();
        let dp: Vec<*mut u8> = dsts.iter_mut().map(|s| s.as_mut_ptr()).collect();
        // SAFETY: shared sources and exclusive destinations of `len` bytes
        // (so no aliasing), a `rows x cols` table, a supported kernel.
        unsafe { kernels::run(kernel.entry(), &tables, &sp, &dp, len) };
        Ok(())
    }

    /// The same product, byte by byte through the log and exp tables.
    pub fn dot_prod_reference(coef: &[u8], srcs: &[&[u8]], len: usize) -> Vec<Vec<u8>> {
        let rows = coef.len() / srcs.len().max(1);
        (0..rows)
            .map(|r| {
                (0..len)
                    .map(|i| {
                        srcs.iter().enumerate().fold(0u8, |acc, (j, s)| {
                            acc ^ gf::mul(coef[r * srcs.len() + j], s[i])
                        })
                    })
                    .collect()
            })
            .collect()
    }
}
