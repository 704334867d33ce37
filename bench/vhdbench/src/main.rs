//! vhdbench: drives the strata-vhd library for bench/run.sh.
//!
//! Subcommands (sizes in bytes; suffixes K, M, G accepted):
//!
//! randwrite PATH --size S [--count N] [--bs B] [--flush-interval F] [--offset O] [--step T]
//!           [--random SEED] [--pattern BYTE] [--reuse 1]
//!     Creates a new dynamic VHD of size S at PATH (must not exist; with --reuse 1, opens the
//!     existing disk at PATH instead and --size is ignored), opens it for writing and
//!     writes N requests of B bytes, calling `flush` after every F writes (and once at the end if
//!     N is not a multiple of F). Offsets follow qemu-img bench: O, O+T, O+2T, … modulo S; with
//!     --random they are uniformly random B-aligned offsets (xorshift, SEED). The buffer is filled
//!     with BYTE (default 0xAB; not zero, since zero writes to unallocated blocks are skipped).
//!     Prints `randwrite writes=N seconds=X iops=Y`. The clock runs from after the open to after
//!     the last flush, as qemu-img bench's "Run completed in" does.
//!
//! mkraw PATH --size S [--data D] [--period P] [--seed SEED]
//!     Writes a raw image of S bytes: in every P bytes (default 2M), D bytes (default 1M) of
//!     pseudo-random data, then P-D bytes of zeros. The zeros are written (not left as holes) so
//!     that converters must read them.
//!
//! fill PATH --len L --every E [--limit M] [--seed SEED]
//!     Opens an existing VHD (a differencing one with its parent) and writes L bytes of
//!     pseudo-random data at offsets 0, E, 2E, … below min(M, disk size), then closes it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use strata_vhd::{Disk, NewDisk, OpenOptions};

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n = if let Some(hex) = num.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        num.parse::<u64>()
    };
    n.map(|n| n * mul).map_err(|e| format!("bad number {s:?}: {e}"))
}

struct Args {
    positional: Vec<String>,
    opts: Vec<(String, String)>,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut positional = vec![];
        let mut opts = vec![];
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                opts.push((name.to_string(), v));
            } else {
                positional.push(a);
            }
        }
        Ok(Args { positional, opts })
    }

    fn get(&self, name: &str) -> Result<Option<u64>, String> {
        self.opts.iter().rev().find(|(n, _)| n == name).map(|(_, v)| parse_size(v)).transpose()
    }

    fn req(&self, name: &str) -> Result<u64, String> {
        self.get(name)?.ok_or_else(|| format!("--{name} is required"))
    }

    fn check(&self, allowed: &[&str]) -> Result<(), String> {
        match self.opts.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown option --{n}")),
            None => Ok(()),
        }
    }
}

/// xorshift64*: fast, deterministic, good enough for offsets and incompressible data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn randwrite(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    a.check(&["size", "count", "bs", "flush-interval", "offset", "step", "random", "pattern", "reuse"])?;
    let path = PathBuf::from(a.positional.get(1).ok_or("randwrite needs a PATH")?);
    let reuse = a.get("reuse")?.unwrap_or(0) != 0;
    let size = if reuse { Disk::open(&path, OpenOptions::read())?.size() } else { a.req("size")? };
    let count = a.get("count")?.unwrap_or(20_000);
    let bs = a.get("bs")?.unwrap_or(4096);
    let flush_every = a.get("flush-interval")?.unwrap_or(1000);
    let mut offset = a.get("offset")?.unwrap_or(0);
    let step = a.get("step")?.unwrap_or(bs);
    let pattern = u8::try_from(a.get("pattern")?.unwrap_or(0xAB))?;
    let mut rng = a.get("random")?.map(Rng::new);
    if bs == 0 || size < bs || size % bs != 0 {
        return Err("--size must be a positive multiple of --bs".into());
    }
    if !reuse {
        for w in strata_vhd::create(&path, size, NewDisk::dynamic())? {
            eprintln!("vhdbench: warning: {w}");
        }
    }
    let disk = Disk::open(&path, OpenOptions::write())?;
    let buf = vec![pattern; usize::try_from(bs)?];
    let slots = size / bs;
    let start = Instant::now();
    for i in 1..=count {
        let off = match rng.as_mut() {
            Some(r) => (r.next() % slots) * bs,
            None => {
                let o = offset;
                offset = (offset + step) % size;
                o
            }
        };
        disk.write_at(&buf, off)?;
        if flush_every > 0 && i % flush_every == 0 {
            disk.flush()?;
        }
    }
    if flush_every == 0 || count % flush_every != 0 {
        disk.flush()?;
    }
    let secs = start.elapsed().as_secs_f64();
    disk.close()?;
    #[allow(clippy::cast_precision_loss)]
    let iops = count as f64 / secs;
    println!("randwrite writes={count} seconds={secs:.3} iops={iops:.0}");
    Ok(())
}

fn fill(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    a.check(&["len", "every", "limit", "seed"])?;
    let path = PathBuf::from(a.positional.get(1).ok_or("fill needs a PATH")?);
    let len = a.req("len")?;
    let every = a.req("every")?;
    let mut rng = Rng::new(a.get("seed")?.unwrap_or(1));
    let disk = Disk::open(&path, OpenOptions::write())?;
    let limit = a.get("limit")?.unwrap_or(u64::MAX).min(disk.size());
    if len == 0 || every < len {
        return Err("need 0 < --len <= --every".into());
    }
    let mut buf = vec![0u8; usize::try_from(len)?];
    let mut off = 0;
    let mut written = 0u64;
    while off + len <= limit {
        rng.fill(&mut buf);
        disk.write_at(&buf, off)?;
        written += len;
        off += every;
    }
    disk.close()?;
    println!("fill wrote={written}");
    Ok(())
}

fn mkraw(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    a.check(&["size", "data", "period", "seed"])?;
    let path = PathBuf::from(a.positional.get(1).ok_or("mkraw needs a PATH")?);
    let size = a.req("size")?;
    let data = a.get("data")?.unwrap_or(1 << 20);
    let period = a.get("period")?.unwrap_or(2 << 20);
    let mut rng = Rng::new(a.get("seed")?.unwrap_or(7));
    if period == 0 || data > period || size % period != 0 {
        return Err("need --data <= --period and --size a multiple of --period".into());
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create_new(&path)?);
    let mut buf = vec![0u8; usize::try_from(period)?];
    for _ in 0..size / period {
        let d = usize::try_from(data)?;
        rng.fill(&mut buf[..d]);
        buf[d..].fill(0);
        f.write_all(&buf)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    println!("mkraw size={size} data_per_period={data} period={period}");
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vhdbench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.positional.first().map(String::as_str) {
        Some("randwrite") => randwrite(&args),
        Some("fill") => fill(&args),
        Some("mkraw") => mkraw(&args),
        _ => {
            eprintln!("usage: vhdbench randwrite PATH --size S [...] | fill PATH --len L --every E [...] | mkraw PATH --size S [...]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhdbench: {e}");
            ExitCode::FAILURE
        }
    }
}
