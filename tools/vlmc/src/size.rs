//! Sizes on the command line: `512`, `4K`, `10M`, `20G`, `1T`.
//!
//! A size is a positive decimal integer of bytes, optionally followed by a binary unit:
//! `K` (2^10), `M` (2^20), `G` (2^30), `T` (2^40), `P` (2^50), case-insensitive, which may
//! be followed by `B` or `iB` (`4K` = `4k` = `4KB` = `4KiB` = 4096; there are no decimal
//! units). A lone `B` means bytes (`512B`). Refused, with a message saying why: an empty
//! string, `0`, a sign (`-1`, `+1`), a fraction (`1.5G`), an unknown unit (`1Q`), and a
//! value above 2^64-1 bytes.

/// Parses a size; the error is a sentence for the user.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty size (expected e.g. 512, 4K, 10M, 20G or 1T)".into());
    }
    if s.starts_with('-') {
        return Err(format!("{text:?} is negative: a size is a positive number of bytes"));
    }
    if s.starts_with('+') {
        return Err(format!("{text:?}: write the size without a sign"));
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("{text:?} does not start with a number (expected e.g. 512, 4K, 10M, 20G or 1T)"));
    }
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!(
            "{text:?}: fractions are not supported; use a smaller unit (e.g. 1536M for 1.5G)"
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M, G, T or P, powers of 1024)")),
    };
    let value: u64 = digits.parse().map_err(|_| format!("{text:?} is too large (more than 2^64-1 bytes)"))?;
    let bytes = value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large (more than 2^64-1 bytes)"))?;
    if bytes == 0 {
        return Err("the size must be larger than 0".into());
    }
    Ok(bytes)
}

/// A size for people: `4.0 MiB`, `512 B`.
pub fn show_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        for (text, bytes) in [
            ("512", 512),
            ("512B", 512),
            ("4K", 4096),
            ("4k", 4096),
            ("4KB", 4096),
            ("4KiB", 4096),
            ("4kib", 4096),
            ("10M", 10 << 20),
            ("20G", 20 << 30),
            ("1T", 1 << 40),
            ("2P", 2 << 50),
            ("16383P", 16383 << 50),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("0", "larger than 0"),
            ("0K", "larger than 0"),
            ("-1", "negative"),
            ("+1", "sign"),
            ("1Q", "unknown unit"),
            ("1KK", "unknown unit"),
            ("K", "does not start with a number"),
            ("1.5G", "fractions"),
            ("16384P", "too large"),
            ("18446744073709551616", "too large"),
            ("99999999999999999999999", "too large"),
        ] {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn sizes_show() {
        assert_eq!(show_size(512), "512 B");
        assert_eq!(show_size(4096), "4 KiB");
        assert_eq!(show_size(1536 << 20), "1.5 GiB");
    }
}
