//! Human-readable `inspect` output.

use strata_vhd::ops::inspect::Info;

/// Prints an inspection as aligned "key: value" lines.
pub fn print_info(i: &Info) {
    let line = |k: &str, v: String| println!("{k:<20} {v}");
    line("path:", i.path.display().to_string());
    line("type:", i.disk_type.name().to_string());
    line(
        "virtual size:",
        format!("{} bytes ({})", i.virtual_size, human(i.virtual_size)),
    );
    line("original size:", i.original_size.to_string());
    line(
        "file size:",
        format!("{} bytes ({})", i.file_size, human(i.file_size)),
    );
    if let Some(bs) = i.block_size {
        line("block size:", format!("{bs} ({})", human(u64::from(bs))));
        line(
            "blocks:",
            format!(
                "{} allocated of {}",
                i.allocated_blocks,
                i.max_table_entries.unwrap_or(0)
            ),
        );
        line("BAT offset:", format!("{:#x}", i.table_offset.unwrap_or(0)));
    }
    line("unique id:", i.uuid.to_string());
    line(
        "creator:",
        format!(
            "{:?} {} on {:?}",
            i.creator_app, i.creator_version, i.creator_host_os
        ),
    );
    line("created:", format!("{} ({})", i.created, i.timestamp));
    let g = i.geometry;
    line(
        "geometry (CHS):",
        format!(
            "{}/{}/{} = {} bytes",
            g.cylinders, g.heads, g.sectors, i.geometry_size
        ),
    );
    line("saved state:", i.saved_state.to_string());
    if let Some(p) = &i.parent {
        line("parent name:", p.name.clone());
        line("parent id:", p.uuid.to_string());
        line("parent time stamp:", p.timestamp.to_string());
        for l in &p.locators {
            line(
                &format!("locator {}:", l.platform),
                l.path.clone().unwrap_or_else(|| "(unreadable)".into()),
            );
        }
    }
    for (n, l) in i.links.iter().enumerate() {
        line(
            if n == 0 { "chain:" } else { "" },
            format!("{} [{}]", l.path.display(), l.status),
        );
    }
    for p in &i.problems {
        line("problem:", p.clone());
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut scaled = n;
    while scaled >= 1024 && unit < UNITS.len() - 1 {
        scaled /= 1024;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    // One decimal, computed in integers: tenths of the unit.
    let div = 1u128 << (10 * unit);
    let tenths = (u128::from(n) * 10 + div / 2) / div;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(512), "512 B");
        assert_eq!(super::human(64 << 20), "64.0 MiB");
        assert_eq!(super::human(33_620_480), "32.1 MiB");
    }
}
