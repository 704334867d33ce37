//! Sizes on the command line: `4096`, `512K`, `512M`, `20G`, `1T`, `1.5G`, `64MiB` (binary units).

/// Parses a size with an optional binary unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size '{text}': the unit must be K, M, G or T"
            ))
        }
    };
    if num.is_empty() {
        return Err(format!(
            "invalid size '{text}': expected a number such as 512M or 20G"
        ));
    }
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("invalid size '{text}': too large"));
    }
    let (int, frac) = num
        .split_once('.')
        .ok_or_else(|| format!("invalid size '{text}'"))?;
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| format!("invalid size '{text}'"))?
    };
    if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid size '{text}'"));
    }
    let scale = 10u64.pow(u32::try_from(frac.len()).unwrap_or(6));
    let frac_val: u64 = frac.parse().map_err(|_| format!("invalid size '{text}'"))?;
    let whole = int
        .checked_mul(mult)
        .ok_or_else(|| format!("invalid size '{text}': too large"))?;
    let part = u128::from(frac_val) * u128::from(mult) / u128::from(scale);
    whole
        .checked_add(u64::try_from(part).map_err(|_| format!("invalid size '{text}'"))?)
        .ok_or_else(|| format!("invalid size '{text}': too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
